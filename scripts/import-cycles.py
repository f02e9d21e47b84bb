#!/usr/bin/env python3
"""Finds import circles between the modules of each crate, and fails if there is one.

Usage: scripts/import-cycles.py [--graph] [CRATE_SRC_DIR ...]
       (default: every crates/*/src; --graph also prints each module's imports)

A module depends on another when it names it: in a `use crate::...` or `use super::...`
statement, or in a path such as `crate::store::meta::W` anywhere in its code, tests included.
A path that reaches a facade (`lib.rs` or a `mod.rs` that declares and re-exports) and names
one of its re-exports counts as naming the module it re-exports from; the facade's own
`mod` and `pub use` lines are not dependencies. Method calls and trait impls are not
imports, so splitting one type's `impl` blocks across modules does not count.
"""

import os
import re
import sys

USE_RE = re.compile(r"\buse\s+((?:crate|super|self)\b[^;]*);", re.S)
PATH_RE = re.compile(r"\b(crate|super)((?:::\w+)+)")
INLINE_MOD_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", re.M)


def module_files(src):
    """module path (tuple) -> file, for every .rs file under src."""
    mods = {}
    for root, _dirs, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel in (["lib"], ["main"]):
                key = ()
            elif rel[-1] == "mod":
                key = tuple(rel[:-1])
            else:
                key = tuple(rel)
            mods[key] = os.path.join(root, f)
    return mods


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def expand_use(tree):
    """`a::{b, c::{d, e as f}}` -> [['a','b'], ['a','c','d'], ['a','c','e']]"""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, s):
        depth, start, parts = 0, 0, []
        for i, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:i])
                start = i + 1
        parts.append(s[start:])
        for p in parts:
            if not p:
                continue
            if "{" in p:
                head, rest = p.split("{", 1)
                walk(prefix + [x for x in head.split("::") if x], rest[:-1])
            else:
                p = p.split("as")[0] if "as" in p.split("::")[-1] else p
                out.append(prefix + [x for x in p.split("::") if x])

    walk([], tree)
    return out


def is_facade(key, mods):
    f = mods[key]
    return key == () or f.endswith("mod.rs")


def reexports(key, mods):
    """name -> module path it is re-exported from, for a facade."""
    text = strip_comments(open(mods[key]).read())
    out = {}
    for m in re.finditer(r"\bpub\s+use\s+([^;]*);", text, re.S):
        for path in expand_use(m.group(1)):
            segs = [s for s in path if s != "self"]
            if segs and segs[0] == "crate":
                base = ()
                segs = segs[1:]
            else:
                base = key
            out[segs[-1]] = resolve(base, segs[:-1] or segs, mods, follow=False)
    return out


def resolve(base, segs, mods, follow=True):
    cur = base
    i = 0
    while i < len(segs) and cur + (segs[i],) in mods:
        cur = cur + (segs[i],)
        i += 1
    if follow and i < len(segs) and is_facade(cur, mods):
        target = reexports(cur, mods).get(segs[i])
        if target is not None:
            return target
    return cur


def deps_of(key, mods):
    text = strip_comments(open(mods[key]).read())
    facade = is_facade(key, mods)
    inline_from = [m.start() for m in INLINE_MOD_RE.finditer(text)]
    out = set()
    refs = []
    for m in USE_RE.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if facade and text[line_start : m.start()].strip().startswith("pub"):
            continue
        for path in expand_use(m.group(1)):
            refs.append((m.start(), path))
    for m in PATH_RE.finditer(text):
        refs.append((m.start(), [m.group(1)] + [s for s in m.group(2).split("::") if s]))
    for pos, path in refs:
        if not path or (path[-1] == "*" and path[0] == "super"):
            continue  # `use super::*` in a test module: the file itself
        inline = any(pos > s for s in inline_from)
        if path[0] == "crate":
            base, segs = (), path[1:]
        elif path[0] == "super":
            base = key if inline else key[:-1]
            segs = path[1:]
            while segs and segs[0] == "super":
                base, segs = base[:-1], segs[1:]
        else:
            continue  # `self::`: within the module
        segs = [s for s in segs if s not in ("self", "*")]
        target = resolve(base, segs, mods)
        if target != key and not (facade and target[: len(key)] == key):
            out.add(target)
    return out


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def name(key):
    return "crate" if key == () else "::".join(key)


def main():
    args = [a for a in sys.argv[1:] if a != "--graph"]
    show = "--graph" in sys.argv[1:]
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    srcs = args or sorted(
        os.path.join(root, "crates", c, "src") for c in os.listdir(os.path.join(root, "crates"))
    )
    failed = False
    for src in srcs:
        mods = module_files(src)
        graph = {k: deps_of(k, mods) for k in mods}
        crate = os.path.basename(os.path.dirname(os.path.normpath(src)))
        if show:
            for k in sorted(graph):
                print(f"{crate}: {name(k)} -> {', '.join(sorted(map(name, graph[k]))) or '-'}")
        for comp in cycles(graph):
            failed = True
            print(f"{crate}: import circle among {', '.join(map(name, comp))}")
            for a in comp:
                for b in sorted(graph[a]):
                    if b in comp:
                        print(f"    {name(a)} -> {name(b)}")
    if failed:
        sys.exit(1)
    print(f"no import circles in {len(srcs)} crate(s)")


if __name__ == "__main__":
    main()

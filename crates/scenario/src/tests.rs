//! The runner's API without mounts: assertions and their messages, steps, timeouts, workers,
//! the file API on a plain directory, and cleanup when a daemon fails to start.

use std::time::{Duration, Instant};

use super::*;

fn opts() -> Options {
    // No scenario here mounts; a binary that exits at once shows the failure path.
    Options::new("/bin/false")
}

fn fails(src: &str) -> Failure {
    match run_source("t.lua", src, &opts()) {
        Ok(r) => panic!("expected a failure, the scenario passed: {r:?}"),
        Err(f) => *f,
    }
}

fn passes(src: &str) -> Report {
    run_source("t.lua", src, &opts()).unwrap_or_else(|f| panic!("{f}"))
}

#[test]
fn assert_eq_names_the_line_and_both_values() {
    let f = fails("local x = 1 + 1\nassert_eq(x, 3, \"sum\")\n");
    assert_eq!(f.step, None);
    assert_eq!(f.reason, "t.lua:2: sum: expected 3, got 2");
    assert_eq!(f.headline(), "scenario t.lua failed: t.lua:2: sum: expected 3, got 2");
}

#[test]
fn assertion_messages_are_clear() {
    let cases = [
        (
            r#"assert_eq({a = 1, b = {2, 3}}, {a = 1, b = {2, 4}}, "tables")"#,
            "t.lua:1: tables (at .b[2]): expected 4, got 3",
        ),
        (
            r#"assert_eq("hello", "help", "greeting")"#,
            r#"t.lua:1: greeting: expected "help", got "hello""#,
        ),
        (
            r#"assert_eq(string.rep("a", 100) .. "b", string.rep("a", 100) .. "c", "long")"#,
            r#"t.lua:1: long: expected a 101-byte string, got a 101-byte string; they differ from byte 101: expected "c", got "b""#,
        ),
        ("assert_true(nil, \"exists\")", "t.lua:1: exists: expected a true value, got nil"),
        ("assert_false(1)", "t.lua:1: assert_false: expected false or nil, got 1"),
        ("assert_le(12, 10, \"size\")", "t.lua:1: size: expected a value <= 10, got 12"),
        ("assert_ne(3, 3, \"ids\")", "t.lua:1: ids: expected anything but 3"),
        ("assert_near(0.5, 0.9, 0.1, \"heat\")", "t.lua:1: heat: expected 0.9 within 0.1, got 0.5"),
        (
            "assert_match(\"abc\", \"^x\", \"name\")",
            r#"t.lua:1: name: expected a string matching "^x", got "abc""#,
        ),
        (
            "assert_error(function() end, \"EROFS\", \"write\")",
            r#"t.lua:1: write: expected an error containing "EROFS", got none"#,
        ),
        ("fail(\"stop here\")", "t.lua:1: stop here"),
        ("error(\"plain lua error\")", "t.lua:1: plain lua error"),
    ];
    for (src, want) in cases {
        assert_eq!(fails(src).reason, want, "for {src}");
    }
}

#[test]
fn passing_assertions_return_their_value() {
    let r = passes(
        r#"
        assert_eq(assert_eq({1, {x = "y"}}, {1, {x = "y"}}), {1, {x = "y"}})
        assert_true(assert_near(0.5, 0.52, 0.05) == 0.5)
        local m = assert_error(function() error("boom EIO here") end, "EIO")
        assert_match(m, "boom EIO here$")
        assert_eq(inspect({1, "a", k = true}), '{1, "a", k = true}')
        assert_eq(inspect("a\0b\n"), '"a\\x00b\\n"')
        "#,
    );
    assert_eq!(r.steps, 0);
}

#[test]
fn a_failing_step_reports_its_name_and_nesting() {
    let f = fails(
        "step(\"first\", function() end)\n\
         step(\"outer\", function()\n\
           step(\"inner\", function()\n\
             fail(\"boom\")\n\
           end)\n\
         end)\n",
    );
    assert_eq!(f.step.as_deref(), Some("outer > inner"));
    assert_eq!(f.reason, "t.lua:4: boom");
    assert_eq!(f.headline(), "scenario t.lua failed at step \"outer > inner\": t.lua:4: boom");
    assert!(!f.timed_out);
}

#[test]
fn steps_count_and_return_values() {
    let r = passes(
        r#"
        local v = step("a", function() return 42 end)
        assert_eq(v, 42)
        step("b", function() step("c", function() end) end)
        "#,
    );
    assert_eq!(r.steps, 3);
}

#[test]
fn a_caught_step_failure_does_not_stick() {
    passes(
        r#"
        local ok, err = pcall(step, "doomed", function() fail("inside") end)
        assert_false(ok)
        assert_match(errmsg(err), "inside")
        step("after", function() end)
        "#,
    );
}

#[test]
fn timeout_stops_a_busy_loop() {
    let started = Instant::now();
    let f = fails("-- timeout: 1\nstep(\"spin\", function() while true do end end)\n");
    assert!(f.timed_out, "{f}");
    assert_eq!(f.step.as_deref(), Some("spin"));
    assert!(f.reason.starts_with("timed out after 1s"), "{}", f.reason);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn pcall_cannot_swallow_the_timeout() {
    let mut o = opts();
    o.timeout = Some(Duration::from_millis(500));
    let started = Instant::now();
    let f = run_source("t.lua", "while true do pcall(function() while true do end end) end", &o)
        .unwrap_err();
    assert!(f.timed_out, "{f}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn timeout_stops_sleep_and_the_flag_beats_the_header() {
    let mut o = opts();
    o.timeout = Some(Duration::from_secs(1));
    let started = Instant::now();
    let f = run_source("t.lua", "-- timeout: 100\nsleep(60)", &o).unwrap_err();
    assert!(f.timed_out, "{f}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn timeout_header_parses() {
    assert_eq!(
        header_timeout("-- checks things\n-- timeout: 90\nlocal x"),
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        header_timeout("#!/usr/bin/env x\n--timeout: 2.5s\n"),
        Some(Duration::from_millis(2500))
    );
    assert_eq!(header_timeout("local x = 1\n-- timeout: 5\n"), None);
    assert_eq!(header_timeout("-- timeout: soon\n"), None);
}

#[test]
fn workers_run_in_their_own_states_and_return_results() {
    let r = passes(
        r#"
        counter = 0
        function work(i, args)
          counter = counter + 1            -- each worker has its own state
          local t = {}
          for k = 1, args.n do t[k] = i * k end
          return { index = i, counter = counter, squares = t, bin = "\0\1", name = worker_name(),
                   worker = is_worker() }
        end
        step("spawn", function()
          local results = spawn("work", 4, { n = 3 }):join(30)
          assert_eq(#results, 4)
          for i, r in ipairs(results) do
            assert_eq(r.index, i)
            assert_eq(r.counter, 1, "own state")
            assert_eq(r.squares, { i, 2 * i, 3 * i })
            assert_eq(r.bin, "\0\1")
            assert_eq(r.name, "work#" .. i)
            assert_true(r.worker)
          end
          assert_false(is_worker())
          assert_eq(counter, 0)
        end)
        "#,
    );
    assert_eq!(r.steps, 1);
}

#[test]
fn a_failing_worker_is_named() {
    let f = fails(
        r#"
        function work(i)
          step("check", function()
            if i == 3 then assert_eq(i, 0, "worker index") end
          end)
          return i
        end
        step("run", function() run_workers("work", 4, nil, 30) end)
        "#,
    );
    assert_eq!(f.step.as_deref(), Some("run"));
    assert!(
        f.reason.contains("1 of 4 \"work\" workers failed; work#3: in step \"check\": t.lua:4: worker index: expected 0, got 3"),
        "{}",
        f.reason
    );
}

#[test]
fn workers_cannot_mount_or_spawn() {
    let f = fails(
        r#"
        function work() vault.mount{} end
        step("run", function() spawn("work", 1):join() end)
        "#,
    );
    assert!(f.reason.contains("vault.mount runs only in the scenario"), "{}", f.reason);
    let f = fails(r#"step("x", function() spawn("nothing_here", 2) end)"#);
    assert!(f.reason.contains("no global function \"nothing_here\""), "{}", f.reason);
}

#[test]
fn a_worker_stops_loading_at_a_top_level_spawn() {
    // A worker loading this file stops at the top-level `spawn` (and so would it at a
    // `vault.mount`), keeping the definitions before it; it must not spawn again.
    let r = passes(
        r#"
        function work(i) return i * 10 end
        local results = spawn("work", 2):join(30)
        assert_eq(results, { 10, 20 })
        "#,
    );
    assert_eq!(r.steps, 0);
}

#[test]
fn a_stuck_worker_times_out_the_join_and_the_scenario() {
    let f = fails(
        r#"
        function spin() while true do end end
        step("join", function() spawn("spin", 2):join(0.5) end)
        "#,
    );
    assert!(
        f.reason.contains("workers still running after 0.5s (a deadlock?): spin#1, spin#2"),
        "{}",
        f.reason
    );
    let started = Instant::now();
    let f = fails(
        "-- timeout: 1\nfunction spin() while true do end end\nstep(\"join\", function() spawn(\"spin\", 2):join() end)",
    );
    assert!(f.timed_out, "{f}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn file_api_on_a_plain_directory() {
    passes(
        r#"
        local d = tmpdir() .. "/plain"
        fs.mkdir(d)
        fs.mkdir_all(d .. "/a/b")
        fs.write(d .. "/a/b/f.txt", "hello")
        fs.append(d .. "/a/b/f.txt", " world", { sync = true })
        assert_eq(fs.read(d .. "/a/b/f.txt"), "hello world")
        assert_eq(fs.stat(d .. "/a/b/f.txt").size, 11)
        assert_eq(fs.stat(d .. "/a").kind, "dir")
        fs.rename(d .. "/a/b/f.txt", d .. "/a/g.txt")
        local names = fs.list(d .. "/a"); table.sort(names)
        assert_eq(names, { "b", "g.txt" })
        local f = fs.open(d .. "/a/g.txt", "r+")
        assert_eq(f:read(5), "hello")
        f:seek(0, "end"); f:write("!"); f:fsync(); f:seek(0)
        assert_eq(f:read(), "hello world!")
        assert_eq(f:read(1), nil)
        f:close()
        assert_error(function() f:read() end, "is closed")
        assert_error(function() fs.read(d .. "/missing") end, "No such file or directory (ENOENT)")
        assert_error(function() fs.mkdir(d .. "/a") end, "EEXIST")
        assert_error(function() fs.remove(d .. "/a") end, "ENOTEMPTY")
        fs.symlink("g.txt", d .. "/a/link")
        assert_eq(fs.readlink(d .. "/a/link"), "g.txt")
        assert_eq(fs.lstat(d .. "/a/link").kind, "symlink")
        fs.truncate(d .. "/a/g.txt", 2)
        assert_eq(fs.read(d .. "/a/g.txt"), "he")
        assert_eq(du(d), 2 + #"g.txt")
        fs.remove_all(d)
        assert_false(fs.exists(d))
        assert_eq(blake3(""), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
        assert_eq(#bytes(7, 1000), 1000)
        assert_eq(bytes(7, 10), bytes(7, 10))
        assert_ne(bytes(7, 10), bytes(8, 10))
        local v = json.decode('{"a": [1, 2.5, null, true], "b": "x"}')
        assert_eq(v.a[2], 2.5); assert_eq(v.a[3], json.null); assert_eq(v.b, "x")
        assert_eq(json.decode(json.encode({ k = { 1, 2 } })), { k = { 1, 2 } })
        assert_error(function() json.decode("{oops") end, "json.decode")
        assert_true(clock() >= 0 and now() > 1.7e9 and time_left() > 0)
        "#,
    );
}

#[test]
fn a_daemon_that_fails_to_mount_is_reported_and_cleaned_up() {
    let f = fails(r#"step("mount", function() vault.mount{ player = "alice" } end)"#);
    assert_eq!(f.step.as_deref(), Some("mount"));
    assert!(
        f.reason.contains("vault.mount: the daemon exited (exit status: 1) before mounting"),
        "{}",
        f.reason
    );
    assert!(f.kept.is_none());
}

#[test]
fn wait_until_returns_the_value_it_waited_for() {
    passes(
        r#"
        local n = 0
        assert_eq(wait_until(function() n = n + 1; return n >= 3 and n end, 5), 3)
        local k = 0
        local v = wait_until(function()
          k = k + 1
          if k < 3 then error("not yet") end
          return "ok"
        end, 5, "errors count as not yet")
        assert_eq(v, "ok")
        "#,
    );
}

#[test]
fn wait_until_fails_with_why_the_condition_did_not_hold() {
    let f = fails(
        "step(\"wait\", function()\n  \
           wait_until(function() return false, \"got 1\" end, 0.1, \"bob sees it\")\n\
         end)\n",
    );
    assert_eq!(f.step.as_deref(), Some("wait"));
    assert_eq!(f.reason, "t.lua:2: bob sees it: did not hold within 0.1s (last: got 1)");
    let f = fails("wait_until(function() return nil end, 0.05)");
    assert_eq!(f.reason, "t.lua:1: wait_until: did not hold within 0.05s (it last returned nil)");
    let f =
        fails(r#"wait_until(function() return fs.read(tmpdir() .. "/missing") end, 0.1, "read")"#);
    assert!(
        f.reason.starts_with(
            "t.lua:1: read: did not hold within 0.1s (its last call raised: t.lua:1: read /"
        ),
        "{}",
        f.reason
    );
    assert!(f.reason.ends_with(": No such file or directory (ENOENT))"), "{}", f.reason);
    let f = fails("wait_until(42, 1, \"cond\")");
    assert_eq!(f.reason, "t.lua:1: cond: expected a function to poll, got 42");
}

#[test]
fn the_deadline_beats_a_long_wait_until() {
    let started = Instant::now();
    let f =
        fails("-- timeout: 1\nstep(\"wait\", function() wait_until(function() end, 100) end)\n");
    assert!(f.timed_out, "{f}");
    assert_eq!(f.step.as_deref(), Some("wait"));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn players_checks_its_arguments_and_cleans_up_a_failed_mount() {
    let f = fails("vault.players{}");
    assert!(f.reason.starts_with("t.lua:1: vault.players: expected a list of player names"), "{f}");
    let f = fails(r#"vault.players{ "alice", "bob", arg = {} }"#);
    assert_eq!(f.reason, "t.lua:1: vault.players: unknown option \"arg\" (known: args)");
    let f = fails("step(\"players\", function()\n  vault.players{ \"alice\", \"bob\" }\nend)\n");
    assert_eq!(f.step.as_deref(), Some("players"));
    assert!(
        f.reason.starts_with("t.lua:2: vault.mount: the daemon exited (exit status: 1)"),
        "{}",
        f.reason
    );
    assert!(f.kept.is_none());
}

#[test]
fn a_missing_script_is_a_failure() {
    let f = run(Path::new("/nonexistent/x.lua"), &opts()).unwrap_err();
    assert!(f.headline().starts_with("scenario /nonexistent/x.lua failed: reading it: "), "{f}");
}

#[test]
fn syntax_errors_are_reported() {
    let f = fails("step(\"x\", function()\n");
    assert!(f.reason.contains("t.lua:"), "{}", f.reason);
}

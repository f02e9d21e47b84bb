-- 08: a realm of three, and attention shared through it under load. alice, bob and carol,
-- peered; alice makes realm aurora of the three and each shares a file with realm:aurora
-- (alice and carol both a spec.md): every member's realms/aurora/ shows all three, the two
-- specs told apart, with their owners' content, read-only. For a few seconds bob and carol
-- keep opening, reading and holding alice's spec through realms/ while alice edits her other
-- files in vault/: alice's heat.json counts three players on her spec, with their opens and
-- dwell, and theirs list it under realms/. bob's recall takes his file out of every view;
-- carol's leave takes the realm from her and her spec from the others. fsck clean.
-- timeout: 120

-- The bound for anything that travels between mounts (it takes well under a second).
local LONG = 30
local REALM = "aurora"
-- How long bob and carol read alice's spec while she edits, and how long each open is held.
local LOAD_SECS = 4
local DWELL = 0.1
local DRAFTS = 5

local SPEC_A = "# spec, alice's\n" .. string.rep("what aurora is, line by line\n", 300)
local PLAN_B = "# plan, bob's\nfirst this, then that\n"
local SPEC_C = "# spec, carol's\nshorter\n"

-- Who shares what with the realm: where it is in the owner's vault, its label in realms/.
local ALICE_SPEC = "work/spec.md"
local BOB_PLAN = "plan.md"
local CAROL_SPEC = "spec.md"
local LABELS = { "plan.md", "spec (alice).md", "spec (carol).md" }

-- A draft's content: which one, and which edit.
local function draft(k, n)
  return string.format("draft %d, edit %d\n", k, n) .. string.rep("more words ", 10 * (n % 7))
end

-- Reader `i` (bob's, then carol's): until `stop_at`, opens alice's spec through its realm
-- view, reads it whole, keeps it open `dwell` seconds, closes it. How often, and how many
-- milliseconds it held it open at least.
function realm_reader(i, args)
  local path = args.paths[i]
  local opens = 0
  while clock() < args.stop_at do
    local f = fs.open(path, "r")
    local got = f:read()
    sleep(args.dwell)
    f:close()
    opens = opens + 1
    assert_eq(got, args.want, "alice's spec through " .. path)
  end
  return { opens = opens, held_ms = math.floor(opens * args.dwell * 1000) }
end

-- alice's editor: until `stop_at`, rewrites her drafts one after another (in place and whole)
-- and appends to her journal. How many edits of each draft.
function draft_editor(_, args)
  local edits = {}
  for k = 1, args.drafts do edits[k] = 0 end
  local n = 0
  while clock() < args.stop_at do
    n = n + 1
    local k = n % args.drafts + 1
    edits[k] = edits[k] + 1
    fs.write(args.dir .. "/draft" .. k .. ".md", draft(k, edits[k]))
    fs.append(args.dir .. "/journal.md", "edit " .. n .. "\n")
    sleep(0.01)
  end
  return { edits = edits, total = n }
end

-- `path`'s entry in `v`'s heat.json, or nil.
local function heat_of(v, path)
  for _, e in ipairs(v:heat()) do
    if e.path == path then return e end
  end
end

-- The member names of `v`'s realm and their states, sorted by name.
local function members(v)
  local r = v:realm(REALM)
  if not r then return nil end
  local out = {}
  for _, m in ipairs(r.members) do out[#out + 1] = m.name .. "=" .. m.state end
  table.sort(out)
  return out
end

local alice, bob, carol = step("alice, bob and carol, each peered with the others", function()
  return vault.players{ "alice", "bob", "carol" }
end)
local ALL = { alice, bob, carol }

step("alice makes realm aurora with bob and carol", function()
  local said = alice:realm_create(REALM, { members = { bob, carol } })
  assert_match(said, "^created realm aurora %(id %x+%) with bob, carol$", "what create says")
  for _, v in ipairs(ALL) do
    wait_until(function() return v:realm(REALM) ~= nil end, LONG, v.player .. " is in aurora")
    assert_eq(fs.names(v:root("realms")), { REALM }, v.player .. "'s realms/")
  end
  local r = bob:realm(REALM)
  assert_eq(r.creator, "alice", "aurora's creator, on bob's side")
  assert_eq(#bob:realms(), 1, "bob's realms")
  assert_eq(members(bob), { "alice=connected", "bob=you", "carol=connected" }, "bob's members")
  assert_error(function() bob:realm_add(REALM, "alice") end, "creator", "bob adds a member")
end)

step("each shares a file with the realm", function()
  fs.mkdir_all(alice:path("work/drafts"))
  fs.write(alice:path(ALICE_SPEC), SPEC_A)
  fs.write(bob:path(BOB_PLAN), PLAN_B)
  fs.write(carol:path(CAROL_SPEC), SPEC_C)
  for k = 1, DRAFTS do fs.write(alice:path("work/drafts/draft" .. k .. ".md"), draft(k, 0)) end
  fs.write(alice:path("work/drafts/journal.md"), "")
  -- alice reads her spec once herself: one player so far.
  assert_eq(fs.read(alice:path(ALICE_SPEC)), SPEC_A, "alice's spec")

  assert_eq(alice:share(ALICE_SPEC, { with = "realm:" .. REALM, mode = "revocable" }),
    "shared work/spec.md with bob, carol (revocable)", "what alice's share says")
  bob:share(BOB_PLAN, { with = "realm:" .. REALM, mode = "revocable" })
  carol:share(CAROL_SPEC, { with = "realm:" .. REALM, mode = "revocable" })
  local g = carol:grants()
  assert_eq(#g, 2, "carol's grants: one per other member")
end)

step("every member's realm view shows all three, the specs told apart", function()
  local want = { ["plan.md"] = PLAN_B, ["spec (alice).md"] = SPEC_A, ["spec (carol).md"] = SPEC_C }
  for _, v in ipairs(ALL) do
    wait_until(function()
      local got = fs.names(v:realm_path(REALM))
      return #got == 3 and got[1] == LABELS[1] and got[2] == LABELS[2] and got[3] == LABELS[3],
        inspect(got)
    end, LONG, v.player .. "'s realms/aurora/ shows all three")
    for label, data in pairs(want) do
      local p = v:realm_path(REALM, label)
      if label == "spec (alice).md" and v ~= alice then
        -- Not read yet: bob's and carol's first reads of it are for the next step.
        wait_until(function() return fs.getxattr(p, "user.indra.id") == blake3(data) end, LONG,
          v.player .. " has " .. label)
        assert_eq(fs.stat(p).size, #data, v.player .. ": size of " .. label)
      else
        wait_until(function() return fs.read(p) == data end, LONG, v.player .. " reads " .. label)
      end
    end
    assert_error(function() fs.write(v:realm_path(REALM, "plan.md"), "mine") end, "EROFS",
      v.player .. " writes into the realm")
    assert_error(function() fs.write(v:realm_path(REALM, "new.md"), "x") end, "EROFS",
      v.player .. " creates in the realm")
    wait_until(function() return v:realm(REALM).shared_artifacts == 3 end, LONG,
      v.player .. "'s realms.json counts three")
  end
  local p = bob:realm_path(REALM, "spec (alice).md")
  assert_eq(fs.getxattr(p, "user.indra.steward"), alice:player_id(), "steward of alice's spec")
  assert_eq(fs.getxattr(p, "user.indra.access_mode"), "revocable", "its access mode")
  assert_eq(fs.read(bob:realm_path(REALM, "plan.md")), fs.read(bob:path(BOB_PLAN)),
    "bob's own plan through the realm")
end)

step("bob and carol read alice's spec while she edits her drafts", function()
  -- So far only alice has read her spec (here and through her own realm view).
  local before = wait_until(function() return heat_of(alice, "vault/" .. ALICE_SPEC) end, LONG,
    "alice's heat.json lists her spec")
  assert_eq(before.unique_peers, 1, "players on alice's spec before the load")

  local stop_at = clock() + LOAD_SECS
  local editor = spawn("draft_editor", 1,
    { dir = alice:path("work/drafts"), drafts = DRAFTS, stop_at = stop_at })
  local readers = spawn("realm_reader", 2, {
    paths = { bob:realm_path(REALM, "spec (alice).md"), carol:realm_path(REALM, "spec (alice).md") },
    want = SPEC_A,
    dwell = DWELL,
    stop_at = stop_at,
  })
  -- Meanwhile: alice's heat.json parses, and the count of opens it shows never goes back;
  -- every view and realms.json stay as they were.
  local polls, seen = 0, before.opens
  while clock() < stop_at do
    local h = heat_of(alice, "vault/" .. ALICE_SPEC)
    assert_ge(h.opens, seen, "opens of alice's spec, as alice's heat.json shows them")
    seen = h.opens
    for _, v in ipairs(ALL) do
      assert_eq(fs.names(v:realm_path(REALM)), LABELS, v.player .. "'s view during the load")
      assert_eq(v:indra_json("realms.json")[1].shared_artifacts, 3,
        v.player .. "'s realms.json during the load")
    end
    polls = polls + 1
    sleep(0.05)
  end
  log(string.format("%d looks at heat.json and the views meanwhile", polls))
  local read = readers:join(LOAD_SECS + LONG)
  local edited = editor:join(LOAD_SECS + LONG)[1]
  log(string.format("bob opened alice's spec %d times, carol %d; alice made %d edits",
    read[1].opens, read[2].opens, edited.total))
  assert_gt(read[1].opens, 0, "bob's opens")
  assert_gt(read[2].opens, 0, "carol's opens")

  local opens = before.opens + read[1].opens + read[2].opens
  local dwell = before.dwell_ms + read[1].held_ms + read[2].held_ms
  local e = wait_until(function()
    local h = heat_of(alice, "vault/" .. ALICE_SPEC)
    return h and h.unique_peers == 3 and h.opens >= opens and h.dwell_ms >= dwell and h,
      inspect(h)
  end, LONG, "alice's heat counts bob's and carol's reads with their dwell")
  log(string.format("alice's spec: %d players, %d opens, %d ms dwell, heat %s",
    e.unique_peers, e.opens, e.dwell_ms, tostring(e.heat)))
  assert_gt(e.heat, before.heat, "the heat of alice's spec rose")
  -- The same artifact, seen through alice's own realm view, has the same figures.
  local mine = heat_of(alice, "realms/" .. REALM .. "/spec (alice).md")
  assert_true(mine, "alice's heat.json lists her spec under realms/")
  assert_eq(mine.unique_peers, e.unique_peers, "players on it under realms/")

  -- bob and carol each name it where they read it.
  for i, v in ipairs{ bob, carol } do
    local h = heat_of(v, "realms/" .. REALM .. "/spec (alice).md")
    assert_true(h, v.player .. "'s heat.json lists alice's spec under realms/")
    assert_ge(h.opens, read[i].opens, v.player .. "'s opens of it")
    assert_eq(h.unique_peers, 1, v.player .. "'s count of players on it")
  end

  -- alice's drafts hold their last edits; her journal every one.
  for k = 1, DRAFTS do
    assert_eq(fs.read(alice:path("work/drafts/draft" .. k .. ".md")), draft(k, edited.edits[k]),
      "draft" .. k)
  end
  local journal = fs.read(alice:path("work/drafts/journal.md"))
  assert_eq(select(2, journal:gsub("\n", "")), edited.total, "lines in alice's journal")
  -- Her drafts were never shared: nobody sees them.
  for _, v in ipairs{ bob, carol } do
    assert_eq(fs.names(v:peer_path(alice)), { "spec.md" }, v.player .. "'s peers/alice/")
  end
end)

step("bob recalls his plan: it leaves every view", function()
  -- (It names them in the order of bob's grants.)
  local said = bob:recall(BOB_PLAN)
  assert_true(said == "recalled plan.md from alice, carol"
    or said == "recalled plan.md from carol, alice", "what recall says: " .. said)
  for _, v in ipairs(ALL) do
    wait_until(function()
      local got = fs.names(v:realm_path(REALM))
      return #got == 2 and got[1] == LABELS[2] and got[2] == LABELS[3], inspect(got)
    end, LONG, "bob's plan leaves " .. v.player .. "'s view")
    assert_error(function() fs.read(v:realm_path(REALM, "plan.md")) end, "ENOENT",
      v.player .. " reads the recalled plan")
    wait_until(function() return v:realm(REALM).shared_artifacts == 2 end, LONG,
      v.player .. "'s realms.json counts two")
  end
  assert_eq(fs.read(bob:path(BOB_PLAN)), PLAN_B, "bob's own plan")
end)

step("carol leaves: the realm goes from her, her spec from the others", function()
  assert_eq(carol:realm_leave(REALM), "left realm aurora", "what leave says")
  assert_eq(fs.names(carol:root("realms")), {}, "carol's realms/")
  assert_eq(carol:realm(REALM), nil, "carol's realm list")
  assert_false(fs.exists(carol:realm_path(REALM, "spec (alice).md")), "alice's spec on carol")
  for _, v in ipairs{ alice, bob } do
    wait_until(function() return #v:realm(REALM).members == 2 end, LONG,
      "carol is out of " .. v.player .. "'s aurora")
    -- Two members left: alice's spec is alone, and loses its owner's name.
    wait_until(function()
      local got = fs.names(v:realm_path(REALM))
      return #got == 1 and got[1] == "spec.md", inspect(got)
    end, LONG, "carol's spec leaves " .. v.player .. "'s view")
    assert_eq(fs.read(v:realm_path(REALM, "spec.md")), SPEC_A, v.player .. " reads alice's spec")
  end
  assert_eq(members(bob), { "alice=connected", "bob=you" }, "bob's members")
  -- heat.json follows: carol's lists nothing under realms/ any more, alice's lists her spec
  -- by its new label, with the same figures as under vault/.
  for _, e in ipairs(carol:heat()) do
    assert_false(e.path:find("^realms/"), "carol's heat.json lists " .. e.path)
  end
  local mine = heat_of(alice, "realms/" .. REALM .. "/spec.md")
  assert_true(mine, "alice's heat.json lists her spec as realms/aurora/spec.md")
  assert_eq(mine.unique_peers, 3, "players on it")
  assert_eq(heat_of(alice, "realms/" .. REALM .. "/spec (alice).md"), nil, "its old label")
  -- Her grants outlive the realm: alice still reads carol's spec under peers/carol/.
  assert_eq(fs.read(alice:peer_path(carol, "spec.md")), SPEC_C, "carol's spec, shared as a peer")
end)

step("fsck clean", function()
  for _, v in ipairs(ALL) do v:unmount() end
  for _, v in ipairs(ALL) do
    local r = v:fsck()
    assert_true(r.ok, v.player .. "'s fsck: " .. r.output)
  end
  -- What the realm is, as the data dir keeps it.
  assert_eq(#alice:realms(), 1, "alice's realms, unmounted")
  assert_eq(#carol:realms(), 0, "carol's realms, unmounted")
end)

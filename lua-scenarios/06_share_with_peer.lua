-- 06: create files, share them with a peer, and check the peer sees them. alice shares a
-- folder of a few files (nested, empty, a multi-chunk binary) with bob: bob sees every file
-- under peers/alice/ with alice's content and content id, read-only and revocable, with the
-- same listing; an edit (also through a file bob keeps open), a one-byte edit of the large
-- file, a new file and a removal on alice's side all show on bob's; carol, peered with alice
-- but granted nothing, sees nothing; what arrived stays readable with alice unmounted.
-- timeout: 150

-- The bound for anything that travels between two mounts (it takes well under a second).
local LONG = 30

local FILES = {
  ["README.md"] = "# aurora\n",
  ["spec/spec.md"] = "spec v1\n",
  ["spec/notes.txt"] = string.rep("a note, one line of many\n", 400),
  ["data/blob.bin"] = bytes(6, 1 << 20),
  ["empty"] = "",
}

local function sorted(t)
  table.sort(t)
  return t
end

-- Every file of `files` reads back on bob's side with that content (waited for, bounded).
local function bob_has(bob, alice, files, what)
  for rel, want in pairs(files) do
    local p = bob:peer_path(alice, "aurora/" .. rel)
    wait_until(function()
      local got = fs.read(p)
      return got == want, string.format("%d bytes, blake3 %s; want %d bytes, blake3 %s",
        #got, blake3(got), #want, blake3(want))
    end, LONG, what .. ": bob reads aurora/" .. rel)
  end
end

local alice, bob, carol = step("alice, bob and carol, each peered with the others", function()
  local a, b, c = vault.players{ "alice", "bob", "carol" }
  for _, pair in ipairs{ { a, b }, { a, c }, { b, c } } do
    local x, y = pair[1], pair[2]
    assert_eq(x:peer_state(y), "connected", x.player .. " sees " .. y.player)
    assert_eq(y:peer_state(x), "connected", y.player .. " sees " .. x.player)
    assert_eq(x:peer_name(y), y.player, x.player .. "'s name for " .. y.player)
  end
  return a, b, c
end)

step("alice writes a folder of files", function()
  for rel, data in pairs(FILES) do
    local p = alice:path("projects/aurora/" .. rel)
    fs.mkdir_all(p:match("^(.*)/[^/]*$"))
    fs.write(p, data)
  end
end)

step("alice shares the folder with bob", function()
  local said = alice:share("projects/aurora", { with = bob, mode = "revocable" })
  assert_eq(said, "shared projects/aurora with bob (revocable)", "what share says")
  local grants = alice:grants()
  assert_eq(#grants, 1, "alice's grants")
  assert_eq({ grants[1].path, grants[1].peer, grants[1].mode },
    { "projects/aurora", "bob", "revocable" }, "the grant")
end)

step("bob sees every file with alice's content", function()
  bob_has(bob, alice, FILES, "shared")
  for rel, data in pairs(FILES) do
    local p = bob:peer_path(alice, "aurora/" .. rel)
    local st = fs.stat(p)
    assert_eq(st.kind, "file", rel .. " kind")
    assert_eq(st.size, #data, rel .. " size")
    assert_eq(st.mode & 511, 292, rel .. " mode (0444)")
    assert_eq(fs.getxattr(p, "user.indra.id"), blake3(data), rel .. " content id")
    assert_eq(fs.getxattr(p, "user.indra.id"),
      fs.getxattr(alice:path("projects/aurora/" .. rel), "user.indra.id"),
      rel .. " content id on both sides")
    assert_eq(fs.getxattr(p, "user.indra.access_mode"), "revocable", rel .. " access mode")
    assert_eq(fs.getxattr(p, "user.indra.steward"), alice:player_id(), rel .. " steward")
  end
  for _, dir in ipairs{ "", "spec", "data" } do
    assert_eq(sorted(fs.list(bob:peer_path(alice, "aurora/" .. dir))),
      sorted(fs.list(alice:path("projects/aurora/" .. dir))), "listing of aurora/" .. dir)
  end
  assert_true(fs.exists(bob:root("peers/alice")), "bob's peers/alice")
end)

step("bob cannot change what alice shares", function()
  local p = bob:peer_path(alice, "aurora/spec/spec.md")
  assert_error(function() fs.write(p, "mine now") end, "EROFS", "write")
  assert_error(function() fs.remove(p) end, "EROFS", "remove")
  assert_error(function() fs.write(bob:peer_path(alice, "aurora/new.md"), "x") end, "EROFS",
    "create")
  assert_eq(fs.read(p), FILES["spec/spec.md"], "content after the refused writes")
end)

step("edits on alice's side show on bob's", function()
  local p = bob:peer_path(alice, "aurora/spec/spec.md")
  local f <close> = fs.open(p, "r")
  assert_eq(f:read(), "spec v1\n", "bob's open file")
  fs.write(alice:path("projects/aurora/spec/spec.md"), "spec v2, longer than before\n")
  FILES["spec/spec.md"] = "spec v2, longer than before\n"
  bob_has(bob, alice, { ["spec/spec.md"] = FILES["spec/spec.md"] }, "edited")
  f:seek(0)
  assert_eq(f:read(), FILES["spec/spec.md"], "a read of bob's open file after the edit")

  -- One byte in the middle of the large file.
  local g = fs.open(alice:path("projects/aurora/data/blob.bin"), "r+")
  g:seek(500000)
  g:write("X")
  g:close()
  local blob = FILES["data/blob.bin"]
  FILES["data/blob.bin"] = blob:sub(1, 500000) .. "X" .. blob:sub(500002)
  bob_has(bob, alice, { ["data/blob.bin"] = FILES["data/blob.bin"] }, "one byte edited")
end)

step("a new file and a removal on alice's side show on bob's", function()
  fs.write(alice:path("projects/aurora/spec/new.md"), "added later\n")
  fs.remove(alice:path("projects/aurora/empty"))
  FILES["spec/new.md"] = "added later\n"
  FILES["empty"] = nil
  bob_has(bob, alice, { ["spec/new.md"] = FILES["spec/new.md"] }, "added")
  local gone = bob:peer_path(alice, "aurora/empty")
  wait_until(function() return not fs.exists(gone) end, LONG, "the removed file leaves bob")
  assert_error(function() fs.read(gone) end, "ENOENT", "read of the removed file")
  assert_eq(sorted(fs.list(bob:peer_path(alice, "aurora"))),
    sorted(fs.list(alice:path("projects/aurora"))), "listing of aurora")
end)

-- What a folder lists, or nothing if it is not there.
local function listing(dir)
  return fs.exists(dir) and sorted(fs.list(dir)) or {}
end

step("carol, granted nothing, sees nothing", function()
  assert_false(fs.exists(carol:peer_path(alice, "aurora")), "aurora on carol's side")
  assert_eq(listing(carol:peer_path(alice)), {}, "what carol sees of alice's")
  assert_eq(listing(carol:peer_path(bob)), {}, "what carol sees of bob's")
  assert_eq(listing(alice:peer_path(bob)), {}, "what alice sees of bob's")
end)

step("what arrived stays readable with alice unmounted", function()
  alice:unmount()
  for rel, data in pairs(FILES) do
    assert_eq(fs.read(bob:peer_path(alice, "aurora/" .. rel)), data, "aurora/" .. rel)
  end
end)

step("fsck clean", function()
  bob:unmount()
  carol:unmount()
  for _, v in ipairs{ alice, bob, carol } do
    local r = v:fsck()
    assert_true(r.ok, v.player .. "'s fsck: " .. r.output)
  end
end)

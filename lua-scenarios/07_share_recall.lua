-- 07: share, then recall, and check the peer can no longer access it. alice shares a file
-- (revocable), a folder (timed, 7 days) and a photo (permanent) with bob; after she recalls
-- the file from bob and the folder from everyone, bob's paths are gone (exists, stat, read,
-- listing and xattrs all fail with ENOENT) and stay gone across bob's remount, while alice's
-- own files are untouched; the permanent grant cannot be recalled and stays readable; the
-- recalled file shared again shows again.
-- timeout: 150

-- The bound for anything that travels between two mounts (it takes well under a second).
local LONG = 30

local IDEAS = "# ideas\nshare less, recall more\n"
local PLAN_A = "plan a\n"
local PLAN_B = string.rep("plan b, step by step\n", 100)
local PHOTO = bytes(7, 300000)

-- `path` (on bob's side) reads `want`, waited for.
local function arrives(path, want, what)
  wait_until(function()
    local got = fs.read(path)
    return got == want, string.format("%d bytes, want %d", #got, #want)
  end, LONG, what)
end

-- `path` (on bob's side) is gone in every way a program could look at it.
local function gone(path, what)
  assert_false(fs.exists(path), what .. " exists")
  assert_error(function() fs.stat(path) end, "ENOENT", what .. ": stat")
  assert_error(function() fs.read(path) end, "ENOENT", what .. ": read")
  assert_error(function() fs.open(path, "r") end, "ENOENT", what .. ": open")
  assert_error(function() fs.getxattr(path, "user.indra.access_mode") end, "ENOENT",
    what .. ": getxattr")
end

local alice, bob = step("alice and bob, peered", function()
  return vault.players{ "alice", "bob" }
end)

step("alice shares a file, a folder and a photo with bob", function()
  fs.mkdir_all(alice:path("notes"))
  fs.write(alice:path("notes/ideas.md"), IDEAS)
  fs.mkdir_all(alice:path("plans/later"))
  fs.write(alice:path("plans/a.md"), PLAN_A)
  fs.write(alice:path("plans/later/b.md"), PLAN_B)
  fs.mkdir_all(alice:path("gallery"))
  fs.write(alice:path("gallery/photo.bin"), PHOTO)

  assert_eq(alice:share("notes/ideas.md", { with = "bob", mode = "revocable" }),
    "shared notes/ideas.md with bob (revocable)", "what share says")
  assert_match(alice:share("plans", { with = "bob", mode = "timed", ["for"] = "7d" }),
    "^shared plans with bob %(timed", "what a timed share says")
  alice:share("gallery/photo.bin", { with = bob, mode = "permanent" })
end)

step("bob reads all three", function()
  arrives(bob:peer_path(alice, "ideas.md"), IDEAS, "ideas.md on bob")
  arrives(bob:peer_path(alice, "plans/a.md"), PLAN_A, "plans/a.md on bob")
  arrives(bob:peer_path(alice, "plans/later/b.md"), PLAN_B, "plans/later/b.md on bob")
  arrives(bob:peer_path(alice, "photo.bin"), PHOTO, "photo.bin on bob")
  assert_eq(fs.getxattr(bob:peer_path(alice, "ideas.md"), "user.indra.access_mode"), "revocable")
  assert_eq(fs.getxattr(bob:peer_path(alice, "plans/a.md"), "user.indra.access_mode"), "timed")
  assert_match(fs.getxattr(bob:peer_path(alice, "plans"), "user.indra.expires_at"),
    "^%d%d%d%d%-%d%d%-%d%dT", "when the timed grant ends")
  assert_eq(fs.getxattr(bob:peer_path(alice, "photo.bin"), "user.indra.access_mode"), "permanent")
  assert_eq(fs.names(bob:peer_path(alice)), { "ideas.md", "photo.bin", "plans" }, "bob's view")
end)

step("alice recalls the file from bob", function()
  local p = bob:peer_path(alice, "ideas.md")
  local said = alice:recall("notes/ideas.md", { from = bob })
  assert_eq(said, "recalled notes/ideas.md from bob", "what recall says")
  wait_until(function() return not fs.exists(p) end, LONG, "ideas.md leaves bob's view")
  gone(p, "ideas.md on bob")
  assert_eq(fs.names(bob:peer_path(alice)), { "photo.bin", "plans" }, "bob's view")
  assert_eq(fs.read(alice:path("notes/ideas.md")), IDEAS, "alice's own ideas.md")
end)

step("alice recalls the timed folder from everyone", function()
  alice:recall("plans")
  wait_until(function() return not fs.exists(bob:peer_path(alice, "plans")) end, LONG,
    "plans leaves bob's view")
  gone(bob:peer_path(alice, "plans"), "plans on bob")
  gone(bob:peer_path(alice, "plans/a.md"), "plans/a.md on bob")
  gone(bob:peer_path(alice, "plans/later/b.md"), "plans/later/b.md on bob")
  assert_eq(fs.names(bob:peer_path(alice)), { "photo.bin" }, "bob's view")
  assert_eq(fs.read(alice:path("plans/later/b.md")), PLAN_B, "alice's own plans/later/b.md")
end)

step("a permanent grant cannot be recalled", function()
  assert_error(function() alice:recall("gallery/photo.bin", { from = "bob" }) end, "permanent",
    "recall of the permanent grant")
  assert_eq(fs.read(bob:peer_path(alice, "photo.bin")), PHOTO, "the photo on bob")
  local grants = alice:grants()
  assert_eq(#grants, 1, "alice's grants after the recalls")
  assert_eq({ grants[1].path, grants[1].peer, grants[1].mode },
    { "gallery/photo.bin", "bob", "permanent" }, "the grant left")
end)

step("what was recalled stays gone when bob mounts again", function()
  bob:remount()
  gone(bob:peer_path(alice, "ideas.md"), "ideas.md on bob after his remount")
  gone(bob:peer_path(alice, "plans"), "plans on bob after his remount")
  wait_until(function() return bob:peer_state(alice) == "connected" end, LONG,
    "bob connected to alice again")
  wait_until(function() return alice:peer_state(bob) == "connected" end, LONG,
    "alice connected to bob again")
  gone(bob:peer_path(alice, "ideas.md"), "ideas.md on bob once connected again")
  gone(bob:peer_path(alice, "plans/a.md"), "plans/a.md on bob once connected again")
  assert_eq(fs.read(bob:peer_path(alice, "photo.bin")), PHOTO, "the photo on bob")
end)

step("shared again, it shows again", function()
  alice:share("notes/ideas.md", { with = bob, mode = "revocable" })
  arrives(bob:peer_path(alice, "ideas.md"), IDEAS, "ideas.md on bob, shared again")
  alice:recall("notes/ideas.md")
  wait_until(function() return not fs.exists(bob:peer_path(alice, "ideas.md")) end, LONG,
    "ideas.md leaves bob's view again")
  gone(bob:peer_path(alice, "ideas.md"), "ideas.md on bob, recalled again")
end)

step("fsck clean", function()
  alice:unmount()
  bob:unmount()
  for _, v in ipairs{ alice, bob } do
    local r = v:fsck()
    assert_true(r.ok, v.player .. "'s fsck: " .. r.output)
  end
end)

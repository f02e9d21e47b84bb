-- 01: a thousand files across nested directories, before and after a remount.
--
-- Creates 1,000 files in 10 top-level folders x 5 subfolders x 20 files, with sizes from
-- empty to 64 KiB (inline leaves and chunked ones), and checks that every file is there
-- with the right content and size, that each folder lists exactly its files in creation
-- order, that `user.indra.id` is the BLAKE3 of the content, and that status.json counts
-- them. Then unmounts cleanly, remounts, and checks all of it again, plus that inode
-- numbers and user xattrs survived. Ends with a clean fsck.
-- timeout: 120

local TOP, SUB, FILES = 10, 5, 20
local SIZES = { 0, 1, 100, 4096, 16 * 1024, 16 * 1024 + 1, 64 * 1024 }

local function rel(t, s, f) return string.format("t%02d/s%d/f%02d.txt", t, s, f) end

-- File n's content: a line naming it, then pseudo-random bytes of one of SIZES.
local function content(n, name)
  return name .. "\n" .. bytes(n, SIZES[n % #SIZES + 1])
end

-- Every file: { n =, rel =, dir =, name = }, in creation order.
local files = {}
for t = 1, TOP do
  for s = 1, SUB do
    for f = 1, FILES do
      local r = rel(t, s, f)
      files[#files + 1] = { n = #files + 1, rel = r, dir = r:match("^(.*)/"), name = r:match("[^/]+$") }
    end
  end
end

local v = step("mount a fresh vault", function() return vault.mount{ player = "alice" } end)
local inodes = {}

step("create 1,000 files in 50 nested folders", function()
  for t = 1, TOP do
    for s = 1, SUB do fs.mkdir_all(v:path(string.format("t%02d/s%d", t, s))) end
  end
  local started = clock()
  for _, f in ipairs(files) do
    fs.write(v:path(f.rel), content(f.n, f.rel))
    if f.n % 100 == 0 then fs.setxattr(v:path(f.rel), "user.scenario", "file " .. f.n) end
  end
  log(string.format("%d files written in %.2fs", #files, clock() - started))
  for _, f in ipairs(files) do inodes[f.rel] = fs.stat(v:path(f.rel)).ino end
end)

local function check_all(when)
  step("every file reads back " .. when, function()
    for _, f in ipairs(files) do
      local want = content(f.n, f.rel)
      assert_eq(fs.read(v:path(f.rel)), want, "content of " .. f.rel)
      local st = fs.stat(v:path(f.rel))
      assert_eq(st.kind, "file", f.rel)
      assert_eq(st.size, #want, "size of " .. f.rel)
      assert_eq(st.ino, inodes[f.rel], "inode of " .. f.rel)
    end
  end)
  step("every folder lists its files in creation order " .. when, function()
    local want = {}
    for _, f in ipairs(files) do
      want[f.dir] = want[f.dir] or {}
      table.insert(want[f.dir], f.name)
    end
    for dir, names in pairs(want) do assert_eq(fs.list(v:path(dir)), names, "listing of " .. dir) end
    local top = fs.list(v.vault)
    assert_eq(#top, TOP, "top-level folders")
  end)
  step("content ids and xattrs " .. when, function()
    for _, f in ipairs(files) do
      if f.n % 10 == 0 then
        assert_eq(fs.getxattr(v:path(f.rel), "user.indra.id"), blake3(content(f.n, f.rel)),
          "user.indra.id of " .. f.rel)
      end
      if f.n % 100 == 0 then
        assert_eq(fs.getxattr(v:path(f.rel), "user.scenario"), "file " .. f.n, "user.scenario of " .. f.rel)
      end
    end
  end)
  step("status.json counts them " .. when, function()
    local s = v:status()
    assert_true(s.mounted, "status.mounted")
    assert_eq(s.player, "alice", "status.player")
    assert_ge(s.artifacts.leaves, #files, "leaves (every file's content differs)")
    assert_ge(s.artifacts.nodes, #files + TOP * SUB + TOP, "nodes (files and folders)")
    -- close() returns before the kernel's release reaches the daemon.
    assert_true(wait_for(function() return v:status().open_files == 0 end, 5),
      "no open files (status.json open_files)")
  end)
end

check_all("after writing")

step("unmount cleanly and remount", function()
  v:remount()
  assert_true(v:is_mounted(), "mounted again")
end)

check_all("after the remount")

step("fsck is clean", function()
  v:unmount()
  local r = v:fsck()
  assert_true(r.ok, "fsck: " .. r.output)
  log((r.output:gsub("\n$", "")))
end)

-- 02: concurrent readers and writers, on overlapping and on separate files.
--
-- 4 writers and 4 readers (8 workers, each its own Lua state and thread) run for 4 seconds.
-- Each writer, round after round:
--   * overwrites its own files own/wN/f1..f3 in place (separate files, one writer each);
--   * replaces shared/r1..r4 by writing a temp file and renaming it over (overlapping:
--     every writer, atomic replace);
--   * overwrites shared/o1..o4 in place with one same-size write (overlapping: every
--     writer, in place).
-- Every version is self-describing (a header naming file, writer and round, then bytes
-- derived from them), so any read can be checked to be one complete version. Readers read
-- shared/r* continuously: every read must be a complete version (rename is atomic), never
-- missing, empty or mixed. Afterwards: the workers all finish (no deadlock), each own file
-- holds its writer's last version (no lost write), each shared file holds the last version
-- of one of the writers (complete, not torn, not stale), and no file is left open.
-- Remount, check again, fsck.
--
-- timeout: 120

local WRITERS, READERS, SECONDS = 4, 4, 4
local OVERLAP_SIZE = 24 * 1024

-- The content of one version: a fixed-width header, then bytes derived from it.
local function version(name, writer, round)
  local header = string.format("%-10s w=%02d r=%06d\n", name, writer, round)
  local size
  if name:match("^shared/o") then
    size = OVERLAP_SIZE - #header
  else
    size = 100 + (writer * 7919 + round * 104729) % 40000
  end
  return header .. bytes(writer * 1000003 + round * 31 + #name, size)
end

-- Checks that data is one complete version of name; returns its writer and round.
local function check_version(name, data, context)
  local n, w, r = data:match("^(%S+)%s* w=(%d+) r=(%d+)\n")
  if not n then
    fail(string.format("%s: %s does not start with a version header (%d bytes: %s)",
      context, name, #data, inspect(data:sub(1, 40))))
  end
  assert_eq(n, name, context .. ": the header's file name")
  assert_eq(data, version(name, tonumber(w), tonumber(r)), context .. ": " .. name .. " is one whole version")
  return tonumber(w), tonumber(r)
end

-- Worker: a writer. Returns the last round it completed for every file it wrote.
function writer(i, a)
  local vdir = a.vault
  local last, round = {}, 0
  while clock() < a.stop_at do
    round = round + 1
    local own = string.format("own/w%d/f%d", i, round % 3 + 1)
    fs.write(vdir .. "/" .. own, version(own, i, round))
    last[own] = round

    local r = "shared/r" .. ((round + i) % 4 + 1)
    local tmp = string.format("%s/shared/.tmp-w%d", vdir, i)
    fs.write(tmp, version(r, i, round))
    fs.rename(tmp, vdir .. "/" .. r)
    last[r] = round

    local o = "shared/o" .. ((round * 3 + i) % 4 + 1)
    fs.write(vdir .. "/" .. o, version(o, i, round))
    last[o] = round
  end
  return { rounds = round, last = last }
end

-- Worker: a reader of the atomically replaced files.
function reader(i, a)
  local reads, seen = 0, {}
  while clock() < a.stop_at do
    for k = 1, 4 do
      local name = "shared/r" .. ((k + i) % 4 + 1)
      local data = fs.read(a.vault .. "/" .. name)
      local w, r = check_version(name, data, "reader " .. i)
      seen[w .. ":" .. r] = true
      reads = reads + 1
    end
    if reads % 40 == 0 then fs.list(a.vault .. "/shared") end
  end
  local versions = 0
  for _ in pairs(seen) do versions = versions + 1 end
  return { reads = reads, versions = versions }
end

local v = step("mount", function() return vault.mount{} end)

step("seed every file with a first version", function()
  fs.mkdir(v:path("shared"))
  for w = 1, WRITERS do fs.mkdir_all(v:path("own/w" .. w)) end
  for k = 1, 4 do
    fs.write(v:path("shared/r" .. k), version("shared/r" .. k, 0, 0))
    fs.write(v:path("shared/o" .. k), version("shared/o" .. k, 0, 0))
  end
end)

local writes, reads
step(string.format("%d writers and %d readers for %ds", WRITERS, READERS, SECONDS), function()
  local args = { vault = v.vault, stop_at = clock() + SECONDS }
  local ws = spawn("writer", WRITERS, args)
  local rs = spawn("reader", READERS, args)
  -- A worker still running well after the deadline is a deadlock.
  writes = ws:join(SECONDS + 30)
  reads = rs:join(SECONDS + 30)
  local rounds, total_reads = 0, 0
  for _, w in ipairs(writes) do rounds = rounds + w.rounds end
  for _, r in ipairs(reads) do
    total_reads = total_reads + r.reads
    assert_gt(r.versions, 1, "versions a reader saw (it must see the files change)")
  end
  log(string.format("%d writer rounds (%d writes, %d renames), %d verified reads",
    rounds, rounds * 3, rounds, total_reads))
  for i, w in ipairs(writes) do assert_gt(w.rounds, 5, "rounds of writer " .. i) end
end)

local function check_final(when)
  step("no lost or torn write " .. when, function()
    -- Own files: exactly the writer's last version.
    for i, w in ipairs(writes) do
      for name, round in pairs(w.last) do
        if name:match("^own/") then
          assert_eq(fs.read(v:path(name)), version(name, i, round), name .. " holds writer " .. i .. "'s last version")
        end
      end
    end
    -- Shared files: one writer's last version, complete.
    for _, prefix in ipairs({ "shared/r", "shared/o" }) do
      for k = 1, 4 do
        local name = prefix .. k
        local w, r = check_version(name, fs.read(v:path(name)), when)
        if w == 0 then fail(name .. " still holds its seed version: the writers' versions were lost") end
        assert_eq(r, writes[w].last[name], name .. " holds writer " .. w .. "'s last version, not an older one")
      end
    end
    local names = fs.list(v:path("shared"))
    table.sort(names)
    assert_eq(names, { "o1", "o2", "o3", "o4", "r1", "r2", "r3", "r4" },
      "shared/ holds its files (every temp file was renamed away)")
    -- close() returns before the kernel's release reaches the daemon.
    if not wait_for(function() return v:status().open_files == 0 end, 3) then
      fail("no open files after the workers closed everything: status.json open_files is "
        .. v:status().open_files)
    end
  end)
end

check_final("after the run")
step("remount", function() v:remount() end)
check_final("after the remount")

step("fsck is clean", function()
  v:unmount()
  local r = v:fsck()
  assert_true(r.ok, "fsck: " .. r.output)
end)

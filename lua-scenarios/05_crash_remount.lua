-- 05: kill -9 of the daemon, then remount: fsync'd files survive.
--
-- Three rounds. In each, 4 workers write their own files in a loop, alternately with
-- fsync and with a plain close, recording each fsync that returned; the scenario
-- meanwhile writes files with fsync, and files closed more than the sync interval (1 s)
-- before the crash. Then it SIGKILLs the daemon mid-write (vault:kill(), which also
-- detaches the dead mount). Afterwards the store must be consistent (fsck clean, before
-- anything opens it), and after a remount: every fsync'd file holds exactly its last
-- fsync'd version (or the version being written when the daemon died, which may have
-- committed), files closed over a second before the crash hold their content, and every
-- other file holds one whole version, never a mix.
--
-- timeout: 120

local ROUNDS, WORKERS, FILES = 3, 4, 4
local SIZES = { 10, 5000, 20000, 300000 }

-- A self-describing version: header, then bytes derived from it.
local function version(name, round, n)
  local header = string.format("%s round=%d n=%d\n", name, round, n)
  return header .. bytes(round * 1000003 + n * 7 + #name, SIZES[n % #SIZES + 1])
end

-- Whether data is one whole version of name (an empty or missing file is not).
local function whole(name, data)
  local n, round, k = data:match("^(%S+) round=(%d+) n=(%d+)\n")
  return n == name and data == version(name, tonumber(round), tonumber(k))
end

-- Worker: writes w<i>-s<k> with fsync and w<i>-p<k> with a plain close, until the mount
-- goes away under it. Returns, per file, the last fsync'd version and the version in
-- flight when it failed.
function writer(i, a)
  local synced, attempt, n = {}, {}, 0
  while true do
    n = n + 1
    local k = n % FILES + 1
    local sync = n % 2 == 0
    local name = string.format("w%d-%s%d", i, sync and "s" or "p", k)
    attempt[name] = n
    local ok, err = pcall(fs.write, a.dir .. "/" .. name, version(name, a.round, n), { sync = sync })
    if not ok then
      return { synced = synced, attempt = attempt, writes = n - 1, error = errmsg(err) }
    end
    if sync then synced[name] = n end
    if n > 100000 then fail("the mount did not go away") end
  end
end

local v = step("mount", function() return vault.mount{} end)
local durable = {}   -- name -> the content it must have after every crash from now on

for round = 1, ROUNDS do
  local dir = "round" .. round
  step(string.format("round %d: write, then kill -9 the daemon mid-write", round), function()
    fs.mkdir(v:path(dir))
    -- Closed well over the sync interval before the crash: durable by then.
    for k = 1, 5 do
      local name = dir .. "/old-" .. k
      fs.write(v:path(name), version(name, round, k))
    end
    local old_written = clock()
    local ws = spawn("writer", WORKERS, { dir = v:path(dir), round = round })
    for k = 1, 10 do
      local name = dir .. "/main-" .. k
      local data = version(name, round, k)
      fs.write(v:path(name), data, { sync = true })
      durable[name] = data
    end
    sleep(math.max(0, 2.5 - (clock() - old_written)))
    for k = 1, 5 do
      local name = dir .. "/old-" .. k
      durable[name] = version(name, round, k)
    end
    v:kill()
    local results = ws:join(30)
    local writes = 0
    for i, r in ipairs(results) do
      writes = writes + r.writes
      assert_gt(r.writes, 2, "writer " .. i .. " wrote before the crash")
      for name, n in pairs(r.synced) do
        durable[dir .. "/" .. name] = { synced = version(name, round, n), inflight = r.attempt[name] > n and version(name, round, r.attempt[name]) or nil }
      end
    end
    log(string.format("%d worker writes before the kill; first error: %s", writes, results[1].error))
  end)

  step(string.format("round %d: fsck is clean after the crash", round), function()
    local r = v:fsck()
    assert_true(r.ok, "fsck after kill -9: " .. r.output)
  end)

  step(string.format("round %d: remount; fsync'd files survive", round), function()
    v:remount()
    for name, want in pairs(durable) do
      local p = v:path(name)
      assert_true(fs.exists(p), name .. " survived the crash")
      local got = fs.read(p)
      if type(want) == "string" then
        assert_eq(got, want, name)
      elseif got ~= want.synced and got ~= want.inflight then
        assert_eq(got, want.synced, name .. " holds its last fsync'd version")
      end
    end
    -- The workers' other files from this round: empty (created, never committed) or one
    -- whole version.
    for _, entry in ipairs(fs.list(v:path(dir))) do
      if entry:match("^w%d+%-[ps]%d+$") and not durable[dir .. "/" .. entry] then
        local data = fs.read(v:path(dir .. "/" .. entry))
        assert_true(data == "" or whole(entry, data), dir .. "/" .. entry .. " holds one whole version")
      end
    end
  end)
end

step("clean unmount and fsck", function()
  v:unmount()
  local r = v:fsck()
  assert_true(r.ok, "fsck: " .. r.output)
end)

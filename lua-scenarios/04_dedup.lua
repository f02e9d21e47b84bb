-- 04: identical content under many names is stored once.
--
-- Writes one 1 MiB file (chunked) and one 3 KiB file (inline), then 63 more copies of the
-- big one and 199 more of the small one under other names in 8 folders, 4 workers writing
-- at once. The store's figures in .indra/status.json (leaves, chunks) and the size of the
-- data dir's packs/ must not grow with the copies: 64 MiB of files take one copy's room.
-- Every copy reads back intact and has the same user.indra.id, the BLAKE3 of the content.
-- A copy with one byte changed in the middle adds at most two chunks (at most 512 KiB).
-- After unmounting, `indras-fuse status --json` gives the stored bytes: chunk bytes near
-- 1 MiB for 64 MiB of identical files.
-- timeout: 120

local BIG_SIZE, SMALL_SIZE = 1024 * 1024, 3 * 1024
local BIG_COPIES, SMALL_COPIES, DIRS, WORKERS = 64, 200, 8, 4
local BIG, SMALL = bytes(42, BIG_SIZE), bytes(43, SMALL_SIZE)

local function big_name(k) return string.format("d%d/big-%03d.bin", k % DIRS, k) end
local function small_name(k) return string.format("d%d/small-%03d.txt", k % DIRS, k) end

-- Worker i writes copies k = i, i + n, i + 2n, ... (copy 0 is already there).
function copier(i, a)
  local big, small = bytes(42, a.big_size), bytes(43, a.small_size)
  local written = 0
  for k = i, a.big_copies - 1, a.workers do
    fs.write(a.vault .. "/" .. big_name(k), big); written = written + 1
  end
  for k = i, a.small_copies - 1, a.workers do
    fs.write(a.vault .. "/" .. small_name(k), small); written = written + 1
  end
  return written
end

local v = step("mount", function() return vault.mount{} end)

local function figures()
  local s = v:status()
  return { leaves = s.artifacts.leaves, chunks = s.artifacts.chunks, chunk_bytes = v:du("packs") }
end

local one
step("write one copy of each", function()
  for d = 0, DIRS - 1 do fs.mkdir(v:path("d" .. d)) end
  fs.write(v:path(big_name(0)), BIG)
  fs.write(v:path(small_name(0)), SMALL)
  one = figures()
  log("after one copy:", one)
  assert_ge(one.chunk_bytes, BIG_SIZE, "packs/ hold the big file")
  -- Chunks start on 4 KiB boundaries: up to 4 KiB of padding for each of about 16 chunks.
  assert_le(one.chunk_bytes, BIG_SIZE + 128 * 1024, "packs/ hold about one copy")
end)

step(string.format("write %d + %d more copies from %d workers", BIG_COPIES - 1, SMALL_COPIES - 1, WORKERS), function()
  local results = run_workers("copier", WORKERS, {
    vault = v.vault, big_size = BIG_SIZE, small_size = SMALL_SIZE,
    big_copies = BIG_COPIES, small_copies = SMALL_COPIES, workers = WORKERS,
  }, 60)
  local total = 0
  for _, n in ipairs(results) do total = total + n end
  assert_eq(total, BIG_COPIES + SMALL_COPIES - 2, "copies written")
end)

step("the store holds one copy", function()
  local all = figures()
  log("after every copy:", all)
  assert_eq(all.leaves, one.leaves, "leaves in status.json (one per distinct content)")
  assert_eq(all.chunks, one.chunks, "chunks in status.json")
  assert_le(all.chunk_bytes, one.chunk_bytes, "bytes in packs/")
  local logical = BIG_COPIES * BIG_SIZE + SMALL_COPIES * SMALL_SIZE
  log(string.format("%.1f MiB of files stored in %.2f MiB of chunks", logical / 2 ^ 20, all.chunk_bytes / 2 ^ 20))
end)

step("every copy reads back with the same content id", function()
  local big_id, small_id = blake3(BIG), blake3(SMALL)
  for k = 0, BIG_COPIES - 1 do
    local p = v:path(big_name(k))
    assert_eq(fs.stat(p).size, BIG_SIZE, big_name(k) .. " size")
    assert_eq(fs.getxattr(p, "user.indra.id"), big_id, big_name(k) .. " user.indra.id")
  end
  for k = 0, SMALL_COPIES - 1 do
    local p = v:path(small_name(k))
    assert_eq(fs.read(p), SMALL, small_name(k))
    assert_eq(fs.getxattr(p, "user.indra.id"), small_id, small_name(k) .. " user.indra.id")
  end
  for k = 0, BIG_COPIES - 1, 7 do assert_eq(fs.read(v:path(big_name(k))), BIG, big_name(k)) end
end)

step("a one-byte edit adds at most two chunks", function()
  local before = figures()
  local mid = BIG_SIZE // 2
  local edited = BIG:sub(1, mid) .. string.char((BIG:byte(mid + 1) + 1) % 256) .. BIG:sub(mid + 2)
  fs.write(v:path("edited.bin"), edited)
  local after = figures()
  log("after the edit:", after)
  assert_eq(after.leaves, before.leaves + 1, "leaves: the edited copy is new content")
  assert_le(after.chunks - before.chunks, 2, "new chunks")
  assert_le(after.chunk_bytes - before.chunk_bytes, 512 * 1024, "new chunk bytes")
  assert_eq(fs.read(v:path("edited.bin")), edited, "edited.bin")
end)

step("offline status: the stored bytes", function()
  v:unmount()
  local s = v:offline_status()
  log("store:", s.store)
  assert_le(s.store.chunk_bytes, 2 * BIG_SIZE, "chunk bytes for 64 identical 1 MiB files and one edited copy")
  assert_le(s.store.logical_bytes, 2 * BIG_SIZE + SMALL_SIZE, "distinct content")
  local r = v:fsck()
  assert_true(r.ok, "fsck: " .. r.output)
end)

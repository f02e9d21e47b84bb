-- The part of the scenario API written in Lua: inspect, log and the assertions. Every
-- assertion raises at its caller's line (error level 2), so a failure reads
-- "name.lua:LINE: MESSAGE: expected ..., got ...".

local __log = __log
local __errmsg = errmsg
local __interrupted = __interrupted
_G.__log, _G.__interrupted = nil, nil

-- A timeout (or cancellation) raised inside pcall is raised again, so a script cannot catch
-- it and go on.
local raw_pcall, raw_xpcall, raw_resume = pcall, xpcall, coroutine.resume
local function recheck(ok, ...)
  if not ok then
    local stop = __interrupted()
    if stop then error(stop, 0) end
  end
  return ok, ...
end
function pcall(f, ...) return recheck(raw_pcall(f, ...)) end
function xpcall(f, handler, ...) return recheck(raw_xpcall(f, handler, ...)) end
coroutine.resume = function(co, ...) return recheck(raw_resume(co, ...)) end

local function quote(s)
  local q = s:gsub('[%z\1-\31"\\\127-\255]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    return string.format("\\x%02x", c:byte())
  end)
  return '"' .. q .. '"'
end

local function keystr(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return "." .. k end
  if type(k) == "string" then return "[" .. quote(k) .. "]" end
  return "[" .. tostring(k) .. "]"
end

--- A short, readable rendering of any value (strings quoted and cut, tables two levels deep).
function inspect(v, depth)
  depth = depth or 0
  local ty = type(v)
  if ty == "string" then
    if #v > 80 then return quote(v:sub(1, 60)) .. string.format("... (%d bytes)", #v) end
    return quote(v)
  elseif ty == "table" then
    if depth >= 2 then return "{...}" end
    local parts, len = {}, #v
    for i = 1, math.min(len, 10) do parts[#parts + 1] = inspect(v[i], depth + 1) end
    if len > 10 then parts[#parts + 1] = string.format("... (%d items)", len) end
    local keys = {}
    for k in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= len) then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for i, k in ipairs(keys) do
      if i > 10 then
        parts[#parts + 1] = string.format("... (%d keys)", #keys)
        break
      end
      local ks = keystr(k)
      if ks:sub(1, 1) == "." then ks = ks:sub(2) end
      parts[#parts + 1] = ks .. " = " .. inspect(v[k], depth + 1)
    end
    return "{" .. table.concat(parts, ", ") .. "}"
  elseif json and v == json.null then
    return "null"
  end
  return tostring(v)
end

--- Prints its arguments (strings as they are, other values through inspect) as one line.
function log(...)
  local t = table.pack(...)
  for i = 1, t.n do
    if type(t[i]) ~= "string" then t[i] = inspect(t[i]) end
  end
  __log(table.concat(t, " ", 1, t.n))
end

-- The first difference between two values: path, actual, expected; nil if equal.
local function diff(a, b, path, seen)
  if a == b then return nil end
  if type(a) ~= "table" or type(b) ~= "table" then return path, a, b end
  seen = seen or {}
  if seen[a] == b then return nil end
  seen[a] = b
  for k, bv in pairs(b) do
    local p, x, y = diff(a[k], bv, path .. keystr(k), seen)
    if p then return p, x, y end
  end
  for k, av in pairs(a) do
    if b[k] == nil then return path .. keystr(k), av, nil end
  end
  return nil
end

local function string_diff(got, want)
  if #got <= 60 and #want <= 60 then
    return "expected " .. quote(want) .. ", got " .. quote(got)
  end
  local i = 1
  while i <= #got and i <= #want and got:byte(i) == want:byte(i) do i = i + 1 end
  return string.format(
    "expected a %d-byte string, got a %d-byte string; they differ from byte %d: expected %s, got %s",
    #want, #got, i, quote(want:sub(i, i + 23)), quote(got:sub(i, i + 23)))
end

local function label(msg, default)
  if msg == nil then return default end
  return tostring(msg)
end

--- assert_eq(actual, expected, msg): deep equality for tables; returns actual.
function assert_eq(actual, expected, msg)
  local p, x, y = diff(actual, expected, "")
  if p == nil then return actual end
  local what = label(msg, "assert_eq")
  if p ~= "" then what = what .. " (at " .. p .. ")" end
  local detail
  if type(x) == "string" and type(y) == "string" then
    detail = string_diff(x, y)
  else
    detail = "expected " .. inspect(y) .. ", got " .. inspect(x)
  end
  error(what .. ": " .. detail, 2)
end

function assert_ne(actual, unexpected, msg)
  if diff(actual, unexpected, "") == nil then
    error(label(msg, "assert_ne") .. ": expected anything but " .. inspect(unexpected), 2)
  end
  return actual
end

function assert_true(v, msg)
  if not v then error(label(msg, "assert_true") .. ": expected a true value, got " .. inspect(v), 2) end
  return v
end

function assert_false(v, msg)
  if v then error(label(msg, "assert_false") .. ": expected false or nil, got " .. inspect(v), 2) end
  return v
end

local function compare(op, test)
  return function(a, b, msg)
    if type(a) ~= "number" or type(b) ~= "number" then
      error(string.format("%s: assert_%s needs two numbers, got %s and %s",
        label(msg, "assert_" .. op), op, inspect(a), inspect(b)), 2)
    end
    if not test(a, b) then
      local sym = ({ lt = "<", le = "<=", gt = ">", ge = ">=" })[op]
      error(string.format("%s: expected a value %s %s, got %s",
        label(msg, "assert_" .. op), sym, inspect(b), inspect(a)), 2)
    end
    return a
  end
end

assert_lt = compare("lt", function(a, b) return a < b end)
assert_le = compare("le", function(a, b) return a <= b end)
assert_gt = compare("gt", function(a, b) return a > b end)
assert_ge = compare("ge", function(a, b) return a >= b end)

--- assert_near(actual, expected, tolerance, msg)
function assert_near(actual, expected, tolerance, msg)
  if type(actual) ~= "number" or math.abs(actual - expected) > tolerance then
    error(string.format("%s: expected %s within %s, got %s",
      label(msg, "assert_near"), inspect(expected), inspect(tolerance), inspect(actual)), 2)
  end
  return actual
end

--- assert_match(s, pattern, msg): a Lua pattern.
function assert_match(s, pattern, msg)
  if type(s) ~= "string" or not s:find(pattern) then
    error(string.format("%s: expected a string matching %s, got %s",
      label(msg, "assert_match"), quote(pattern), inspect(s)), 2)
  end
  return s
end

--- assert_error(fn, pattern, msg): fn must raise an error whose message contains pattern
--- (plain text, e.g. "EROFS"); returns the message.
function assert_error(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then
    error(string.format("%s: expected an error%s, got none", label(msg, "assert_error"),
      pattern and (" containing " .. quote(pattern)) or ""), 2)
  end
  local m = __errmsg(err)
  if pattern and not m:find(pattern, 1, true) then
    error(string.format("%s: expected an error containing %s, got %s",
      label(msg, "assert_error"), quote(pattern), quote(m)), 2)
  end
  return m
end

--- fail(msg): stops the scenario here.
function fail(msg)
  error(label(msg, "fail"), 2)
end

--- wait_for(cond, timeout): calls cond until it returns a true value (returned), every
--- 10 ms, for up to timeout seconds (default 5); nil if it never does. For what becomes
--- true asynchronously, e.g. a FUSE release arriving after close() has returned.
function wait_for(cond, timeout)
  local deadline = clock() + (timeout or 5)
  while true do
    local v = cond()
    if v then return v end
    if clock() >= deadline then return nil end
    sleep(0.01)
  end
end

--- wait_until(cond, timeout, msg): calls cond every 20 ms until it returns a true value
--- (returned), for up to timeout seconds (default 10). A call that raises an error counts as
--- "not yet", so cond can simply read a file that may not be there yet. If it never holds,
--- the scenario fails at the caller's line: "msg: did not hold within 10s", followed by why
--- the last call did not hold: its error, or the second value it returned with a false one
--- (`return got == want, "got " .. inspect(got)`).
function wait_until(cond, timeout, msg)
  if type(cond) ~= "function" then
    error(label(msg, "wait_until") .. ": expected a function to poll, got " .. inspect(cond), 2)
  end
  timeout = timeout or 10
  if type(timeout) ~= "number" or timeout ~= timeout or timeout < 0 then
    error(label(msg, "wait_until") .. ": bad timeout " .. inspect(timeout), 2)
  end
  local deadline = clock() + timeout
  while true do
    local ok, v, why = pcall(cond)
    if ok and v then return v end
    if clock() >= deadline then
      local last
      if not ok then
        last = "its last call raised: " .. __errmsg(v)
      elseif why ~= nil then
        last = "last: " .. (type(why) == "string" and why or inspect(why))
      else
        last = "it last returned " .. inspect(v)
      end
      error(string.format("%s: did not hold within %gs (%s)", label(msg, "wait_until"),
        timeout, last), 2)
    end
    sleep(0.02)
  end
end

--- fs.names(dir): the names in `dir`, sorted; empty when `dir` does not exist (a view that
--- is gone, or not there yet).
function fs.names(dir)
  local t = fs.exists(dir) and fs.list(dir) or {}
  table.sort(t)
  return t
end

--- vault.players{ "alice", "bob", ..., args = { ... } }: mounts a vault for each player (as
--- vault.mount{ player = NAME, args = args }), peers every pair (a:peer(b)), and returns the
--- vaults in the order named.
function vault.players(t)
  if type(t) ~= "table" or #t < 1 then
    error("vault.players: expected a list of player names, e.g. vault.players{ \"alice\", \"bob\" }", 2)
  end
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= #t) and k ~= "args" then
      error("vault.players: unknown option " .. inspect(k) .. " (known: args)", 2)
    end
  end
  local vs = {}
  for i, name in ipairs(t) do vs[i] = vault.mount{ player = name, args = t.args } end
  for i = 1, #vs do
    for j = i + 1, #vs do vs[i]:peer(vs[j]) end
  end
  return table.unpack(vs)
end

--- run_workers(name, n, args, timeout): spawn(name, n, args):join(timeout).
function run_workers(name, n, args, timeout)
  return spawn(name, n, args):join(timeout)
end

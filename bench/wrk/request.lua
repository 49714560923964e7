-- One configurable wrk request script for every workload. Environment:
--   BENCH_METHOD, BENCH_PATH, BENCH_BODY (optional), BENCH_AUTH (bearer, optional),
--   BENCH_IDS (ids m0..m<IDS-1> for {n}), BENCH_ROOMS (rooms r0..r<ROOMS-1> for {room}).
-- Templates: {n} a random id number, {room} a random room, {seq} a per-thread counter.
local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY")
local auth = os.getenv("BENCH_AUTH")
local ids = tonumber(os.getenv("BENCH_IDS") or "10000")
local rooms = tonumber(os.getenv("BENCH_ROOMS") or "10")
local sent = 0

init = function(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000) + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
end

local function fill(template)
  local text = template:gsub("{n}", tostring(math.random(0, ids - 1)))
  text = text:gsub("{room}", "r" .. tostring(math.random(0, rooms - 1)))
  text = text:gsub("{seq}", tostring(sent))
  return text
end

request = function()
  sent = sent + 1
  local headers = { ["Content-Type"] = "application/json" }
  if auth and auth ~= "" then headers["Authorization"] = "Bearer " .. auth end
  local b = nil
  if body and body ~= "" then b = fill(body) end
  return wrk.format(method, fill(path), headers, b)
end

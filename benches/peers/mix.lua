-- wrk script for benches/peers.sh: loadgen's default read mix, or one page.
--
-- PEERS_PATH set: every request is that path (the hot page). Otherwise loadgen's default mix:
-- the user drawn from Zipf(s = ZIPF_EXPONENT, 1.0) over users 1..ZIPF_USERS (100), rank r is
-- user id r with weight 1/r^s, as loadgen/src/mix.rs draws it; the offset from 0=80,50=10,500=5,
-- 10000=5 (loadgen's DEFAULT_OFFSETS); limit 50; the same query string loadgen sends
-- (?limit=50&offset=N). The paths are drawn before the run (DRAWS per thread, each thread with
-- a seed of its own) so a request costs wrk a table look-up, not a draw.
--
-- done() prints one line for the script to parse:
--   WRK requests=N seconds=S rps=R p50_ms=.. p99_ms=.. non2xx=N errors=N bytes=B (per response)

local path = os.getenv("PEERS_PATH")
if path == "" then path = nil end
local users = tonumber(os.getenv("ZIPF_USERS") or "100")
local exponent = tonumber(os.getenv("ZIPF_EXPONENT") or "1.0")
local draws = tonumber(os.getenv("DRAWS") or "50000")
local offsets = { { 0, 80 }, { 50, 10 }, { 500, 5 }, { 10000, 5 } }

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

-- The index of the first cumulative weight >= u (binary search).
local function pick(cumulative, u)
  local lo, hi = 1, #cumulative
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cumulative[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

local function cumulate(weights)
  local total, out = 0, {}
  for i, w in ipairs(weights) do
    total = total + w
    out[i] = total
  end
  for i = 1, #out do out[i] = out[i] / total end
  return out
end

local requests, count, next_index = {}, 0, 0

function init(args)
  if path then
    requests[1] = wrk.format("GET", path)
    count = 1
    return
  end
  math.randomseed(1000 + (id or 0))
  local user_weights = {}
  for r = 1, users do user_weights[r] = r ^ -exponent end
  local user_cdf = cumulate(user_weights)
  local offset_weights = {}
  for i, pair in ipairs(offsets) do offset_weights[i] = pair[2] end
  local offset_cdf = cumulate(offset_weights)
  for i = 1, draws do
    local user = pick(user_cdf, math.random())
    local offset = offsets[pick(offset_cdf, math.random())][1]
    requests[i] = wrk.format("GET", "/api/v1/users/" .. user .. "/posts?limit=50&offset=" .. offset)
  end
  count = draws
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

function done(summary, latency, _)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "WRK requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f non2xx=%d errors=%d bytes=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout,
    summary.requests > 0 and math.floor(summary.bytes / summary.requests) or 0))
end

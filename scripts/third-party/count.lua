-- wrk script for scripts/third-party-demo.sh: counts responses by the X-Generation header
-- the WSGI app sets, and prints one machine-readable summary line at the end (wrk's own
-- text summary omits the error line when there were no errors).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  generations = {}
end

function response(status, headers, body)
  local gen = headers["X-Generation"] or "none"
  generations[gen] = (generations[gen] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for gen, n in pairs(thread:get("generations")) do
      totals[gen] = (totals[gen] or 0) + n
    end
  end
  local parts = {}
  for gen, n in pairs(totals) do
    table.insert(parts, gen .. ":" .. n)
  end
  table.sort(parts)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d connect=%d read=%d write=%d timeout=%d status=%d " ..
    "p50_us=%d p99_us=%d max_us=%d by_generation=%s\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(parts, ",")))
end

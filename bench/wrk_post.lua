-- wrk script of bench/run_bench.py: POST the JSON body in env WRK_BODY, and count responses
-- that are not 200 or whose body lacks the string in env WRK_EXPECT. Prints one line
-- "BENCH_RESULT {json}" for run_bench.py to parse.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.headers["x-api-key"] = "sk-bench"
wrk.headers["anthropic-version"] = "2023-06-01"

local expect = os.getenv("WRK_EXPECT") or ""
bad = 0
sample = ""

function response(status, headers, body)
  if status ~= 200 or (expect ~= "" and not string.find(body or "", expect, 1, true)) then
    bad = bad + 1
    if sample == "" then
      sample = "HTTP " .. status .. ": " .. string.sub(body or "", 1, 200)
    end
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local nbad, first = 0, ""
  for _, t in ipairs(threads) do
    nbad = nbad + t:get("bad")
    if first == "" then first = t:get("sample") end
  end
  local e = summary.errors
  first = string.gsub(first, '[%c"\\]', " ")
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bad":%d,"p50_us":%d,"p99_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d,"sample":"%s"}\n',
    summary.requests, summary.duration, nbad, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, e.status, first))
end

-- wrk -s bench/paced.lua: each connection waits 10 ms after every answer before its next
-- request. With -c2 that is ~180 scrapes/s, none queued behind another: what a scrape costs
-- when it comes alone, as Prometheus's do (wrk's latency counts from the request's send).
function delay()
  return 10
end

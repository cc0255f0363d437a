-- wrk -s bench/paced.lua: each connection waits 10 ms after every answer before its next
-- request: scrapes that come one at a time per connection, as Prometheus's do (with -c2, ~180 a
-- second, for a p99 from a few seconds). wrk's latency counts from the request's send.
function delay()
  return 10
end

-- wrk script: HTTP/1.1 pipelining, as in TechEmpower's pipeline.lua.
-- Each write sends DEPTH requests back to back (default 16, or the first
-- script argument: `wrk ... -s pipeline.lua URL -- 16`); wrk counts every
-- response, so Requests/sec is responses per second.
init = function(args)
   local depth = tonumber(args[1]) or 16
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format(nil, wrk.path)
   end
   req = table.concat(r)
end

request = function()
   return req
end

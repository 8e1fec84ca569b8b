-- wrk script: GET /v1/users/{id} for an id drawn at random from LO..HI on
-- each request, so that concurrent reads rarely share a cache key (cache.sh
-- uses it to make every read a Redis round trip). The bearer token comes
-- from wrk's -H, which wrk.format keeps.
--
--   wrk -c 64 -d 10s -H 'Authorization: Bearer TOKEN' -s bench/spread.lua http://ADDR -- LO HI
local lo, hi
init = function(args)
   lo = tonumber(args[1]) or 1
   hi = tonumber(args[2]) or lo
   math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0))
end
request = function()
   return wrk.format("GET", "/v1/users/" .. math.random(lo, hi))
end

-- wrk script: a login storm. Every request is POST /v1/auth/login with the
-- correct credentials of the bench user, so each one costs the server an
-- argon2id verification on its bounded blocking pool.
--
--   wrk -c 8 -d 10s -s bench/login.lua http://ADDR/v1/auth/login -- EMAIL PASSWORD
--
-- The email and password must not need JSON escaping (users.sh makes sure).
init = function(args)
   local email = args[1] or "bench@example.com"
   local password = args[2] or "correct horse battery staple"
   wrk.method = "POST"
   wrk.body = '{"email":"' .. email .. '","password":"' .. password .. '"}'
   wrk.headers["Content-Type"] = "application/json"
end

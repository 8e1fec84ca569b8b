-- wrk script for bench/orders.sh: POST /v1/orders for one unit of a random
-- product among [first, last], each request with its own Idempotency-Key.
-- Arguments (after --): token first-product-id last-product-id.
local counter = 0
local token, first, last
local prefix = tostring(os.time()) .. "-" .. tostring(math.random(1, 1e9))

function init(args)
    token = args[1]
    first = tonumber(args[2])
    last = tonumber(args[3])
    math.randomseed(os.time() + math.random(1, 1e6))
    prefix = prefix .. "-" .. tostring(math.random(1, 1e9))
end

function request()
    counter = counter + 1
    local product = math.random(first, last)
    local body = '{"items":[{"product_id":' .. product .. ',"quantity":1}]}'
    local headers = {
        ["Authorization"] = "Bearer " .. token,
        ["Content-Type"] = "application/json",
        ["Idempotency-Key"] = prefix .. "-" .. counter,
    }
    return wrk.format("POST", "/v1/orders", headers, body)
end

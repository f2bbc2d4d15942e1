-- busted spec of the plugin's pure logic: `busted` in kong/ (see .busted).
local cjson = require "cjson.safe"
local logic = require "kong.plugins.sluis.logic"
local client = require "kong.plugins.sluis.client"

local function b64(s)
  -- Enough base64 for the tests; the plugin uses ngx.encode_base64.
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((s:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end

local deps = { json = cjson, b64 = b64 }

local function conf(overrides)
  local c = {
    url = "http://sluis:9192", include_body = false, max_body_bytes = 16,
    max_headers = 100, status_on_error = 503, context = {},
  }
  for k, v in pairs(overrides or {}) do c[k] = v end
  return c
end

local function req(overrides)
  local r = {
    method = "GET", scheme = "https", host = "api.test", raw_path = "/fhir/Patient/%31",
    raw_query = "name=a%20b", http_version = 1.1, client_ip = "10.0.0.1",
    headers = { authorization = "Bearer t", ["x-multi"] = { "a", "b" } },
  }
  for k, v in pairs(overrides or {}) do r[k] = v end
  return r
end

local function build(r, c)
  local json, refusal = logic.build(r, c or conf(), deps)
  if json then return cjson.decode(json) end
  return nil, refusal
end

describe("build", function()
  it("describes the whole request", function()
    local q = build(req())
    assert.same({
      method = "GET", scheme = "https", host = "api.test",
      target = "/fhir/Patient/1?name=a%20b", protocol = "HTTP/1.1",
      headers = { authorization = "Bearer t", ["x-multi"] = "a,b" },
      client_address = "10.0.0.1", context = {},
    }, q)
  end)

  it("leaves out the ? without a query and lower-cases names", function()
    local q = build(req({ raw_query = "", headers = { ["X-Sluis-Client-Id"] = "spoofed" } }))
    assert.equal("/fhir/Patient/1", q.target)
    assert.same({ ["x-sluis-client-id"] = "spoofed" }, q.headers)
  end)

  it("drops hop-by-hop headers and the original framing", function()
    local q = build(req({ headers = {
      connection = "keep-alive", ["keep-alive"] = "5", te = "trailers", upgrade = "h2c",
      ["transfer-encoding"] = "chunked", ["content-length"] = "3", accept = "*/*",
    } }))
    assert.same({ accept = "*/*" }, q.headers)
  end)

  it("refuses headers cut off at max_headers with 431", function()
    local q, refusal = build(req({ headers_truncated = true }))
    assert.is_nil(q)
    assert.equal(431, refusal.status)
    assert.equal("invalid_request", cjson.decode(refusal.body).error)
  end)

  it("refuses a header value with a control byte with 400", function()
    local _, refusal = build(req({ headers = { x = "a\1b" } }))
    assert.equal(400, refusal.status)
    _, refusal = build(req({ headers = { x = { "ok", "caf\195\169" } } }))
    assert.equal(400, refusal.status)
  end)

  it("sends the policy and the route's context", function()
    local q = build(req(), conf({ policy = "eoverdracht", context = { zone = "a" } }))
    assert.same({ sluis_policy = "eoverdracht", zone = "a" }, q.context)
  end)

  it("reads unset fields Kong hands over as null as unset", function()
    local q = build(req(), conf({ policy = cjson.null, context = cjson.null }))
    assert.same({}, q.context)
  end)

  it("sends no body unless include_body", function()
    local q = build(req({ body = "secret", content_length = 6 }))
    assert.is_nil(q.body_base64)
  end)

  it("sends a whole body up to the limit", function()
    local q = build(req({ body = '{"a":1}', content_length = 7 }), conf({ include_body = true }))
    assert.equal("eyJhIjoxfQ==", q.body_base64)
    q = build(req({ body = "0123456789abcdef", content_length = 16 }), conf({ include_body = true }))
    assert.equal(b64("0123456789abcdef"), q.body_base64)
  end)

  it("refuses with 413 any body it cannot send whole", function()
    local with_body = conf({ include_body = true })
    for _, r in ipairs({
      { body = "0123456789abcdefg", content_length = 17 },  -- over the limit
      { content_length = 17 },                              -- not read: over the limit
      { body_err = "request body in file" },                -- buffered to a file
      { content_length = 5 },                               -- not read
      { body = "abc", content_length = 5 },                 -- cut short
      { body = "0123456789abcdefgh" },                      -- chunked, over the limit
    }) do
      local q, refusal = build(req(r), with_body)
      assert.is_nil(q)
      assert.equal(413, refusal.status)
    end
  end)
end)

describe("normalize_path", function()
  local cases = {
    { "/", "/" },
    { "/a/b", "/a/b" },
    { "/a/b/", "/a/b/" },
    { "/api/x/../admin", "/api/admin" },
    { "/api/x/%2e%2E/admin", "/api/admin" },
    { "/api/./admin/.", "/api/admin/" },
    { "/api/..", "/" },
    { "/../../etc", "/etc" },
    { "/api//admin", "/api/admin" },
    { "/%61dmin/%7e%3a%c3%a9", "/admin/~%3A%C3%A9" },
    { "/q%20r", "/q%20r" },
  }
  for _, case in ipairs(cases) do
    it(case[1] .. " is " .. case[2], function()
      assert.equal(case[2], (logic.normalize_path(case[1])))
    end)
  end

  it("refuses encoded slashes unless allowed, and malformed paths", function()
    assert.is_nil(logic.normalize_path("/a%2Fb"))
    assert.is_nil(logic.normalize_path("/a%2fb"))
    assert.equal("/a%2Fb", logic.normalize_path("/a%2fb", true))
    assert.is_nil(logic.normalize_path("/a%zz"))
    assert.is_nil(logic.normalize_path("/a%4"))
    assert.is_nil(logic.normalize_path("*"))
    assert.is_nil(logic.normalize_path("http://a/"))
    assert.is_nil(logic.normalize_path(nil))
  end)

  it("gives a canonical path for any path it accepts (2000 random paths)", function()
    local pieces = { "a", "B", "/", "//", ".", "..", "/./", "/../", "%2e", "%2E", "%2e%2E",
      "%41", "%7e", "%7E", "%3a", "%3A", "%2f", "%25", "%zz", "%", "~", "-", "%c3%a9", ";x" }
    math.randomseed(23)
    for _ = 1, 2000 do
      local parts = { "/" }
      for _ = 1, math.random(0, 12) do
        parts[#parts + 1] = pieces[math.random(#pieces)]
      end
      local raw = table.concat(parts)
      local path, why = logic.normalize_path(raw, true)
      if path then
        assert.equal("/", path:sub(1, 1), raw)
        assert.is_nil(path:find("//", 1, true), raw)
        for segment in (path .. "/"):gmatch("([^/]*)/") do
          assert.is_true(segment ~= "." and segment ~= "..", raw)
        end
        for hex in path:gmatch("%%(..)") do
          assert.equal(hex:upper(), hex, raw)
          assert.is_nil(string.char(tonumber(hex, 16)):find("^[%w%-%._~]$"), raw)
        end
        assert.equal(path, logic.normalize_path(path, true), raw)
      else
        assert.matches("percent", why, 1, true)
      end
    end
  end)

  it("refuses such a request with 400 before asking", function()
    local q, refusal = build(req({ raw_path = "/fhir/Patient%2F1" }))
    assert.is_nil(q)
    assert.equal(400, refusal.status)
  end)
end)

describe("decide", function()
  local c = conf()

  it("turns an allow into headers to set and remove and a query", function()
    local action = logic.decide(200, cjson.encode({
      decision = "allow", set_headers = { { "x-sluis-client-id", "c-1" } },
      remove_headers = { "authorization", "x-sluis-other" }, query = "a=1&tenant=x",
    }), nil, c, deps)
    assert.same({ kind = "allow", set = { { "x-sluis-client-id", "c-1" } },
      remove = { "authorization", "x-sluis-other" }, query = "a=1&tenant=x" }, action)
  end)

  it("reads a JSON null query as no rewrite", function()
    local action = logic.decide(200,
      '{"decision":"allow","set_headers":[],"remove_headers":[],"query":null,"rule":"r"}',
      nil, c, deps)
    assert.equal("allow", action.kind)
    assert.is_nil(action.query)
  end)

  it("passes a deny's status, headers and body through", function()
    local action = logic.decide(200, cjson.encode({
      decision = "deny", status = 401, body = '{"error":"unauthorized"}',
      headers = { { "www-authenticate", "Bearer realm=\"sluis\"" },
                  { "www-authenticate", "DPoP" }, { "content-type", "application/json" } },
    }), nil, c, deps)
    assert.same({ kind = "deny", status = 401, body = '{"error":"unauthorized"}',
      headers = { ["www-authenticate"] = { "Bearer realm=\"sluis\"", "DPoP" },
                  ["content-type"] = "application/json" } }, action)
  end)

  it("fails closed with status_on_error on anything else", function()
    local cases = {
      { nil, nil, "connection refused" },
      { 503, '{"error":"temporarily_unavailable"}' },
      { 400, '{"error":"invalid_request"}' },
      { 200, "not json" },
      { 200, "[]" },
      { 200, '{"decision":"maybe"}' },
      { 200, '{"decision":"allow","set_headers":[["a"]],"remove_headers":[]}' },
      { 200, '{"decision":"allow","set_headers":[],"remove_headers":[1]}' },
      { 200, '{"decision":"allow","set_headers":[],"remove_headers":[],"query":1}' },
      { 200, '{"decision":"deny","status":99,"headers":[],"body":""}' },
      { 200, '{"decision":"deny","status":403,"headers":[]}' },
    }
    for _, case in ipairs(cases) do
      local action = logic.decide(case[1], case[2], case[3], conf({ status_on_error = 500 }), deps)
      assert.equal("error", action.kind)
      assert.equal(500, action.status)
      assert.equal("temporarily_unavailable", cjson.decode(action.body).error)
      assert.is_string(action.log)
    end
  end)

  it("never logs what the answer said", function()
    local action = logic.decide(200, '{"decision":"allow","token":"secret"', nil, c, deps)
    assert.is_nil(action.log:find("secret", 1, true))
  end)
end)

describe("parse_url", function()
  it("reads scheme, host and port", function()
    assert.same({ scheme = "http", host = "sluis", header_host = "sluis:9192", port = 9192 },
      client.parse_url("http://sluis:9192"))
    assert.same({ scheme = "https", host = "sluis.internal", header_host = "sluis.internal", port = 443 },
      client.parse_url("https://sluis.internal/"))
    assert.same({ scheme = "http", host = "::1", header_host = "[::1]:9192", port = 9192 },
      client.parse_url("http://[::1]:9192"))
  end)

  it("refuses what is not an http(s) URL", function()
    assert.is_nil(client.parse_url("ftp://sluis"))
    assert.is_nil(client.parse_url("sluis:9192"))
  end)
end)

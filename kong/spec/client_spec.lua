-- busted spec of the HTTP exchange with Sluis, over a scripted cosocket.
local client = require "kong.plugins.sluis.client"
-- ngx.null, as Kong may hand over an unset field: the same NULL lightuserdata as cjson's.
local ngx_null = require("cjson").null

-- A socket that answers `answer` (a string) and records what was done with it.
local function scripted(answers, log)
  local n = 0
  return function()
    n = n + 1
    local script = answers[n] or answers[#answers]
    local sock = { sent = {}, pos = 1, data = script.answer or "" }
    log[#log + 1] = sock
    function sock:settimeouts(c, s, r) self.timeouts = { c, s, r } end
    function sock:connect(host, port, opts)
      self.host, self.port, self.opts = host, port, opts
      if script.connect_error then return nil, script.connect_error end
      return 1
    end
    function sock:getreusedtimes() return script.reused or 0 end
    function sock:sslhandshake(_, name, verify)
      self.tls = { name = name, verify = verify }
      if script.tls_error then return nil, script.tls_error end
      return true
    end
    function sock:send(data) self.sent[#self.sent + 1] = data; return #data end
    function sock:receive(what)
      if self.pos > #self.data then return nil, "closed" end
      if what == "*l" then
        local s, e = self.data:find("\r\n", self.pos, true)
        if not s then return nil, "closed" end
        local line = self.data:sub(self.pos, s - 1)
        self.pos = e + 1
        return line
      end
      local chunk = self.data:sub(self.pos, self.pos + what - 1)
      self.pos = self.pos + what
      if #chunk < what then return nil, "closed" end
      return chunk
    end
    function sock:setkeepalive(t, size) self.kept = { t, size }; return 1 end
    function sock:close() self.closed = true; return 1 end
    return sock
  end
end

local conf = {
  url = "http://sluis:9192", connect_timeout = 1, send_timeout = 2, read_timeout = 3,
  keepalive_timeout = 5000, keepalive_pool = 32, ssl_verify = true,
}

local OK = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

describe("post", function()
  it("sends one POST to /v1/check and pools the connection", function()
    local log = {}
    local status, body = client.post(conf, '{"a":1}', scripted({ { answer = OK } }, log))
    assert.equal(200, status)
    assert.equal("{}", body)
    local sock = log[1]
    assert.equal("sluis", sock.host)
    assert.equal(9192, sock.port)
    assert.same({ pool = "sluis:sluis:9192", pool_size = 32 }, sock.opts)
    assert.same({ 1, 2, 3 }, sock.timeouts)
    assert.equal("POST /v1/check HTTP/1.1\r\nHost: sluis:9192\r\nContent-Type: application/json\r\n"
      .. "Content-Length: 7\r\n\r\n{\"a\":1}", sock.sent[1])
    assert.same({ 5000, 32 }, sock.kept)
    assert.is_nil(sock.closed)
  end)

  it("reads a chunked answer", function()
    local log = {}
    local answer = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n"
      .. "4\r\n\":1}\r\n0\r\n\r\n"
    local status, body = client.post(conf, "{}", scripted({ { answer = answer } }, log))
    assert.equal(200, status)
    assert.equal('{"a":1}', body)
  end)

  it("closes a connection the answer closes", function()
    local log = {}
    local answer = "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    local status = client.post(conf, "{}", scripted({ { answer = answer } }, log))
    assert.equal(503, status)
    assert.is_true(log[1].closed)
    assert.is_nil(log[1].kept)
  end)

  it("asks again once when a pooled connection was closed while idle", function()
    local log = {}
    local status = client.post(conf, "{}", scripted({ { reused = 1, answer = "" }, { answer = OK } }, log))
    assert.equal(200, status)
    assert.equal(2, #log)
    assert.is_true(log[1].closed)
  end)

  it("does not ask again over a new connection", function()
    local log = {}
    local status, _, err = client.post(conf, "{}", scripted({ { answer = "" }, { answer = OK } }, log))
    assert.is_nil(status)
    assert.matches("receive", err)
    assert.equal(1, #log)
  end)

  it("errs on what is not a bounded HTTP answer", function()
    for _, answer in ipairs({
      "SSH-2.0-OpenSSH\r\n",
      "HTTP/1.1 200 OK\r\n\r\n{}",                                -- no length
      "HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n",      -- too large
      "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}",           -- cut short
      "HTTP/1.1 200 OK\r\n" .. string.rep("x: y\r\n", 101) .. "\r\n",
    }) do
      local log = {}
      local status, _, err = client.post(conf, "{}", scripted({ { answer = answer } }, log))
      assert.is_nil(status)
      assert.is_string(err)
      assert.is_true(log[1].closed)
    end
  end)

  it("refuses half a client identity without connecting", function()
    local half = {}
    for k, v in pairs(conf) do half[k] = v end
    half.url = "https://sluis:9443"
    half.client_cert = "-----BEGIN CERTIFICATE-----"
    local log = {}
    local status, _, err = client.post(half, "{}", scripted({ { answer = OK } }, log))
    assert.is_nil(status)
    assert.matches("together", err)
    assert.equal(0, #log)
  end)

  it("reports a refused connection", function()
    local status, _, err = client.post(conf, "{}", scripted({ { connect_error = "connection refused" } }, {}))
    assert.is_nil(status)
    assert.equal("connect: connection refused", err)
  end)

  it("shakes hands with TLS on new connections only, in a pool of its own", function()
    local tls = {}
    for k, v in pairs(conf) do tls[k] = v end
    tls.url = "https://sluis.internal:9443"
    tls.tls_server_name = "sluis"
    local log = {}
    assert.equal(200, (client.post(tls, "{}", scripted({ { answer = OK } }, log))))
    assert.same({ name = "sluis", verify = true }, log[1].tls)
    assert.equal("sluis:sluis.internal:9443:tls:sluis:true", log[1].opts.pool)
    local unnamed = {}
    for k, v in pairs(tls) do unnamed[k] = v end
    unnamed.tls_server_name = ngx_null
    log = {}
    assert.equal(200, (client.post(unnamed, "{}", scripted({ { answer = OK } }, log))))
    assert.same({ name = "sluis.internal", verify = true }, log[1].tls)
    log = {}
    assert.equal(200, (client.post(tls, "{}", scripted({ { answer = OK, reused = 3 } }, log))))
    assert.is_nil(log[1].tls)
    log = {}
    local status, _, err = client.post(tls, "{}", scripted({ { tls_error = "certificate verify failed" } }, log))
    assert.is_nil(status)
    assert.equal("TLS: certificate verify failed", err)
    assert.is_true(log[1].closed)
  end)
end)

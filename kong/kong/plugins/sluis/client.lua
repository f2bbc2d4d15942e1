-- One HTTP/1.1 exchange with Sluis's check door over an OpenResty cosocket, with a
-- keep-alive pool, timeouts and TLS. Kong bundles lua-resty-http, but Debian does not
-- package it, and the NGINX end-to-end test must run the very code Kong runs: the little
-- HTTP this needs (one POST with a Content-Length, an answer of bounded size) is here.

local M = {}

-- The door's answers are small; anything bigger is not a Sluis answer.
local MAX_ANSWER = 1024 * 1024
local MAX_HEADER_LINES = 100

local parsed_urls = setmetatable({}, { __mode = "k" })
local identities = setmetatable({}, { __mode = "k" })

-- The client certificate and key for mutual TLS, parsed once per config: nil without one.
local function identity(conf)
  local cert, key = conf.client_cert, conf.client_key
  local has_cert, has_key = type(cert) == "string", type(key) == "string"
  if not has_cert and not has_key then
    return nil
  end
  if not (has_cert and has_key) then
    return nil, "client_cert and client_key must be set together"
  end
  local cached = identities[conf]
  if cached then
    return cached
  end
  local ssl = require "ngx.ssl"
  local parsed_cert, err = ssl.parse_pem_cert(cert)
  if not parsed_cert then
    return nil, "client_cert: " .. tostring(err)
  end
  local parsed_key
  parsed_key, err = ssl.parse_pem_priv_key(key)
  if not parsed_key then
    return nil, "client_key: " .. tostring(err)
  end
  -- Connections made with one certificate are never handed to a config with another.
  cached = { cert = parsed_cert, key = parsed_key, pool = ":cert:" .. ngx.md5(cert) }
  identities[conf] = cached
  return cached
end

--- scheme, host, port of `http(s)://host[:port][/...]` (IPv6 in brackets), or nil, err.
function M.parse_url(url)
  local scheme, rest = url:match("^(https?)://(.+)$")
  if not scheme then
    return nil, "`url` must start with http:// or https://"
  end
  local host, port = rest:match("^(%[[^%]]+%]):?(%d*)")
  if not host then
    host, port = rest:match("^([^/:?#]+):?(%d*)")
  end
  if not host then
    return nil, "`url` has no host"
  end
  local explicit = tonumber(port)
  return {
    scheme = scheme,
    host = (host:gsub("^%[(.*)%]$", "%1")),
    header_host = explicit and (host .. ":" .. explicit) or host,
    port = explicit or (scheme == "https" and 443 or 80),
  }
end

local function target(conf)
  local cached = parsed_urls[conf]
  if cached then
    return cached
  end
  local parsed, err = M.parse_url(conf.url)
  if not parsed then
    return nil, err
  end
  parsed_urls[conf] = parsed
  return parsed
end

local function read_body(sock, headers)
  local length = headers["content-length"]
  if length then
    length = tonumber(length)
    if not length or length > MAX_ANSWER then
      return nil, "answer too large or unreadable"
    end
    if length == 0 then
      return ""
    end
    return sock:receive(length)
  end
  if headers["transfer-encoding"] and headers["transfer-encoding"]:lower():find("chunked") then
    local parts, total = {}, 0
    while true do
      local line, err = sock:receive("*l")
      if not line then
        return nil, err
      end
      local size = tonumber(line:match("^%x+"), 16)
      if not size then
        return nil, "bad chunk size"
      end
      if size == 0 then
        -- Trailers, up to the empty line.
        repeat
          line, err = sock:receive("*l")
          if not line then
            return nil, err
          end
        until line == ""
        return table.concat(parts)
      end
      total = total + size
      if total > MAX_ANSWER then
        return nil, "answer too large"
      end
      local chunk
      chunk, err = sock:receive(size)
      if not chunk then
        return nil, err
      end
      parts[#parts + 1] = chunk
      sock:receive("*l")
    end
  end
  return nil, "answer without a length"
end

-- status, headers (lower-case names), body; or nil, err. `keep` says whether the
-- connection may be reused.
local function exchange(sock, request)
  local _, err = sock:send(request)
  if err then
    return nil, "send: " .. err
  end
  local line
  line, err = sock:receive("*l")
  if not line then
    return nil, "receive: " .. tostring(err)
  end
  local version, status = line:match("^HTTP/(%d%.%d) (%d%d%d)")
  if not status then
    return nil, "not an HTTP answer"
  end
  local headers, count = {}, 0
  while true do
    line, err = sock:receive("*l")
    if not line then
      return nil, "receive: " .. tostring(err)
    end
    if line == "" then
      break
    end
    count = count + 1
    if count > MAX_HEADER_LINES then
      return nil, "too many answer headers"
    end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then
      headers[name:lower()] = value
    end
  end
  local body
  body, err = read_body(sock, headers)
  if not body then
    return nil, "receive body: " .. tostring(err)
  end
  local close = (headers["connection"] or ""):lower():find("close")
  return tonumber(status), body, version == "1.1" and not close
end

-- One attempt; `reused` says whether it went over a pooled connection.
local function attempt(conf, url, json, new_socket)
  local tls = url.scheme == "https"
  -- Kong may hand an unset field over as ngx.null rather than nil.
  local server_name = type(conf.tls_server_name) == "string" and conf.tls_server_name or url.host
  -- TLS and plaintext connections, and connections verified differently, never share a pool.
  local me, err
  if tls then
    me, err = identity(conf)
    if err then
      return nil, err, false
    end
  end
  local pool = "sluis:" .. url.host .. ":" .. url.port
    .. (tls and (":tls:" .. server_name .. ":" .. tostring(conf.ssl_verify)) or "")
    .. (me and me.pool or "")
  local sock = new_socket()
  sock:settimeouts(conf.connect_timeout, conf.send_timeout, conf.read_timeout)
  local ok
  ok, err = sock:connect(url.host, url.port, { pool = pool, pool_size = conf.keepalive_pool })
  if not ok then
    return nil, "connect: " .. tostring(err), false
  end
  local reused = (sock:getreusedtimes() or 0) > 0
  if tls and not reused then
    if me then
      ok, err = sock:setclientcert(me.cert, me.key)
      if not ok then
        sock:close()
        return nil, "TLS client certificate: " .. tostring(err), false
      end
    end
    ok, err = sock:sslhandshake(nil, server_name, conf.ssl_verify)
    if not ok then
      sock:close()
      return nil, "TLS: " .. tostring(err), false
    end
  end
  local request = "POST /v1/check HTTP/1.1\r\nHost: " .. url.header_host
    .. "\r\nContent-Type: application/json\r\nContent-Length: " .. #json
    .. "\r\n\r\n" .. json
  local status, body, keep = exchange(sock, request)
  if not status then
    sock:close()
    return nil, body, reused
  end
  if keep then
    sock:setkeepalive(conf.keepalive_timeout, conf.keepalive_pool)
  else
    sock:close()
  end
  return status, body, reused
end

--- POSTs `json` to `conf.url`'s `/v1/check`: status, body; or nil, nil, err.
-- `new_socket` is ngx.socket.tcp (a parameter so the caller decides where it comes from).
function M.post(conf, json, new_socket)
  local url, err = target(conf)
  if not url then
    return nil, nil, err
  end
  local status, body, reused = attempt(conf, url, json, new_socket)
  if not status and reused then
    -- A pooled connection Sluis closed while idle: asking again is safe (a check changes
    -- nothing) and the next connection is new.
    status, body = attempt(conf, url, json, new_socket)
  end
  if not status then
    return nil, nil, body
  end
  return status, body
end

return M

-- The Kong side of the plugin: read the request through Kong's PDK, ask Sluis, apply the
-- answer. What to send and what an answer means is in `logic.lua`.
local logic = require "kong.plugins.sluis.logic"
local client = require "kong.plugins.sluis.client"
local cjson = require "cjson.safe"

local deps = { json = cjson, b64 = ngx.encode_base64 }

local Sluis = {
  -- Kong 3.x bundled priorities: authentication 1000 and up, ip-restriction 990,
  -- request-size-limiting 951, acl 950, rate-limiting 910, request-transformer 801. So
  -- after authentication and acl, before rate limiting and transformations, tied with none.
  PRIORITY = 940,
  VERSION = "0.1.0",
}

-- The request body, whole, when it is at most max_body_bytes: NGINX keeps a body over
-- client_body_buffer_size (Kong: 8 KiB by default) in a temporary file, which
-- get_raw_body does not read. Anything else is left to logic.build to refuse.
local function read_body(conf, length)
  local body, err = kong.request.get_raw_body()
  if body or not length or length > conf.max_body_bytes then
    return body, err
  end
  local path = ngx.req.get_body_file()
  local file = path and io.open(path, "rb")
  if not file then
    return nil, err
  end
  body = file:read(conf.max_body_bytes + 1)
  file:close()
  return body or "", nil
end

function Sluis:access(conf)
  local request = kong.request
  local headers, truncated = request.get_headers(conf.max_headers)
  local length = tonumber(request.get_header("content-length"))
  local body, body_err
  if conf.include_body and not (length and length > conf.max_body_bytes) then
    body, body_err = read_body(conf, length)
  end
  local question, refusal = logic.build({
    method = request.get_method(),
    scheme = request.get_scheme(),
    host = request.get_host(),
    -- get_raw_path is recent in 3.x; the request line's path is the same bytes.
    raw_path = request.get_raw_path and request.get_raw_path()
      or ngx.var.request_uri:match("^[^?]*"),
    raw_query = request.get_raw_query(),
    http_version = request.get_http_version(),
    headers = headers,
    headers_truncated = truncated == "truncated",
    client_ip = kong.client.get_forwarded_ip(),
    body = body,
    body_err = body_err,
    content_length = length,
  }, conf, deps)
  if not question then
    return kong.response.exit(refusal.status, refusal.body, refusal.headers)
  end

  local status, answer, err = client.post(conf, question, ngx.socket.tcp)
  local action = logic.decide(status, answer, err, conf, deps)
  if action.kind == "allow" then
    for _, name in ipairs(action.remove) do
      kong.service.request.clear_header(name)
    end
    for _, header in ipairs(action.set) do
      kong.service.request.set_header(header[1], header[2])
    end
    if action.query then
      kong.service.request.set_raw_query(action.query)
    end
    return
  end
  if action.kind == "error" then
    kong.log.err("failing closed: ", action.log)
  end
  return kong.response.exit(action.status, action.body, action.headers)
end

return Sluis

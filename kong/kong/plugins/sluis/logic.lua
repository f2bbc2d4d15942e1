-- The Sluis plugin's logic, apart from Kong: the request as the plugin saw it → the JSON
-- question for Sluis's check door (`POST /v1/check`), and Sluis's answer → what the plugin
-- must do. No `ngx`, no `kong`: JSON and base64 come in `deps`, so busted tests this file
-- under any Lua, and the handler is only the calls into Kong's PDK.
--
-- Fails closed everywhere: a request it cannot describe whole (headers cut off at
-- `max_headers`, a body it could not read) is refused here, never sent in part; an
-- answer it does not understand is an error (`status_on_error`), never an allow.

local M = {}

-- Hop-by-hop headers (RFC 9110 7.6.1) and the framing of the original request: they say
-- nothing about who may do what, and `content-length` would describe a body not sent.
local NOT_SENT = {
  ["connection"] = true, ["keep-alive"] = true, ["te"] = true,
  ["transfer-encoding"] = true, ["upgrade"] = true, ["proxy-connection"] = true,
  ["content-length"] = true,
}

local JSON_TYPE = { ["Content-Type"] = "application/json" }

M.UNAVAILABLE_BODY =
  '{"error":"temporarily_unavailable","message":"the authorization service cannot decide now"}'

local function refusal(deps, status, message)
  return nil, {
    status = status,
    headers = JSON_TYPE,
    body = deps.json.encode({ error = "invalid_request", message = message }),
  }
end

-- Only what Sluis's door accepts: visible ASCII, space and tab.
local function visible(value)
  return not value:find("[^\t\32-\126]")
end

--- The path as the upstream will read it (RFC 3986 6.2.2 and 5.2.4, as Kong's router
-- normalizes before matching): percent-encoded unreserved characters decoded, other
-- triplets upper-cased, duplicate slashes merged, dot segments removed. Sluis decides on
-- the path it is given, so `/api/x/../admin` must reach it as the `/api/admin` it is.
-- nil and a reason for a path that cannot be normalized, or that holds an encoded slash
-- (one segment to a policy, two to an upstream that decodes it) unless allowed.
function M.normalize_path(raw, allow_encoded_slashes)
  if type(raw) ~= "string" or raw:sub(1, 1) ~= "/" then
    return nil, "the request path is not an absolute path"
  end
  local malformed = false
  local path = raw:gsub("%%(.?.?)", function(hex)
    if not hex:find("^%x%x$") then
      malformed = true
      return ""
    end
    local char = string.char(tonumber(hex, 16))
    if char:find("^[%w%-%._~]$") then
      return char
    end
    return "%" .. hex:upper()
  end)
  if malformed then
    return nil, "the request path has a malformed percent-encoding"
  end
  if not allow_encoded_slashes and path:find("%2F", 1, true) then
    return nil, "the request path has an encoded slash"
  end
  path = path:gsub("//+", "/")
  local segments = {}
  for segment in (path .. "/"):gmatch("([^/]*)/") do
    segments[#segments + 1] = segment
  end
  local out = {}
  for i = 2, #segments do
    local segment = segments[i]
    if segment == ".." then
      out[#out] = nil
    end
    if segment == "." or segment == ".." then
      if i == #segments then
        out[#out + 1] = ""
      end
    else
      out[#out + 1] = segment
    end
  end
  return "/" .. table.concat(out, "/")
end

--- The JSON question for Sluis, or nil and a local refusal { status, headers, body }.
-- req: method, scheme, host, raw_path, raw_query, http_version (number), headers
-- (name → string | array of strings), headers_truncated (boolean), client_ip, body
-- (string | nil), body_err (string | nil), content_length (number | nil).
function M.build(req, conf, deps)
  if req.headers_truncated then
    -- Cut-off headers could hide a spoofed `x-sluis-*` copy from the engine's removals.
    return refusal(deps, 431, "more than " .. conf.max_headers .. " request headers")
  end
  local headers = {}
  for name, value in pairs(req.headers or {}) do
    name = string.lower(name)
    if not NOT_SENT[name] then
      if type(value) == "table" then
        value = table.concat(value, ",")
      end
      value = tostring(value)
      if not visible(value) then
        return refusal(deps, 400, "header `" .. name .. "` is not visible ASCII")
      end
      if headers[name] then
        headers[name] = headers[name] .. "," .. value
      else
        headers[name] = value
      end
    end
  end

  local path, bad_path = M.normalize_path(req.raw_path, conf.allow_encoded_slashes)
  if not path then
    return refusal(deps, 400, bad_path)
  end

  local question = {
    method = req.method,
    scheme = req.scheme or "http",
    host = req.host or "",
    target = path .. ((req.raw_query ~= nil and req.raw_query ~= "") and ("?" .. req.raw_query) or ""),
    protocol = req.http_version and ("HTTP/" .. tostring(req.http_version)) or "",
    headers = headers,
    client_address = req.client_ip or "",
    context = {},
  }

  if conf.include_body then
    local limit = conf.max_body_bytes
    local too_large = "the request body is larger than " .. limit .. " bytes"
    local length = req.content_length
    if length and length > limit then
      return refusal(deps, 413, too_large)
    end
    local body = req.body
    if req.body_err or (body == nil and length and length > 0) then
      -- Buffered to a file, or not read: deciding without it could allow what it forbids.
      return refusal(deps, 413, "the request body could not be read whole")
    end
    if body then
      if #body > limit then
        return refusal(deps, 413, too_large)
      end
      if length and #body ~= length then
        return refusal(deps, 413, "the request body could not be read whole")
      end
      question.body_base64 = deps.b64(body)
    end
  end

  -- Kong may hand unset fields over as ngx.null rather than nil: only strings count.
  if type(conf.context) == "table" then
    for key, value in pairs(conf.context) do
      if type(key) == "string" and type(value) == "string" then
        question.context[key] = value
      end
    end
  end
  if type(conf.policy) == "string" then
    question.context.sluis_policy = conf.policy
  end
  return deps.json.encode(question)
end

local function error_action(conf, reason)
  return {
    kind = "error",
    status = conf.status_on_error,
    headers = JSON_TYPE,
    body = M.UNAVAILABLE_BODY,
    log = reason,
  }
end

-- An array of [name, value] string pairs, or nil.
local function pairs_of(list)
  if type(list) ~= "table" then
    return nil
  end
  local out = {}
  for i, pair in ipairs(list) do
    if type(pair) ~= "table" or type(pair[1]) ~= "string" or type(pair[2]) ~= "string" then
      return nil
    end
    out[i] = { pair[1], pair[2] }
  end
  return out
end

--- What to do with Sluis's answer: { kind = "allow", set = {{name, value}}, remove =
-- {names}, query = string | nil } | { kind = "deny" | "error", status, headers, body }
-- (an error also has `log`, the reason, without the request's content).
-- status, body, err: the door's HTTP status and body, or the transport error.
function M.decide(status, body, err, conf, deps)
  if err then
    return error_action(conf, "Sluis cannot be asked: " .. tostring(err))
  end
  if status ~= 200 then
    return error_action(conf, "Sluis answered HTTP " .. tostring(status))
  end
  local ok, answer = pcall(deps.json.decode, body or "")
  if not ok or type(answer) ~= "table" then
    return error_action(conf, "Sluis's answer is not JSON")
  end
  if answer.decision == "allow" then
    local set = pairs_of(answer.set_headers)
    local remove = answer.remove_headers
    local query = answer.query
    if query == deps.json.null then
      query = nil
    end
    if not set or type(remove) ~= "table" or (query ~= nil and type(query) ~= "string") then
      return error_action(conf, "Sluis's allow is not understood")
    end
    for _, name in ipairs(remove) do
      if type(name) ~= "string" then
        return error_action(conf, "Sluis's allow is not understood")
      end
    end
    return { kind = "allow", set = set, remove = remove, query = query }
  elseif answer.decision == "deny" then
    local list = pairs_of(answer.headers)
    local code = answer.status
    if not list or type(code) ~= "number" or code < 200 or code > 599
      or type(answer.body) ~= "string" then
      return error_action(conf, "Sluis's deny is not understood")
    end
    -- Repeated names (two challenges) stay repeated.
    local headers = {}
    for _, pair in ipairs(list) do
      local name, value = pair[1], pair[2]
      local earlier = headers[name]
      if earlier == nil then
        headers[name] = value
      elseif type(earlier) == "table" then
        earlier[#earlier + 1] = value
      else
        headers[name] = { earlier, value }
      end
    end
    return { kind = "deny", status = code, headers = headers, body = answer.body }
  end
  return error_action(conf, "Sluis's answer has no known decision")
end

return M

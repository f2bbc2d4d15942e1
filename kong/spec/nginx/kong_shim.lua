-- The handful of Kong PDK functions the Sluis plugin calls, on top of plain ngx_lua, so
-- the plugin's real handler runs inside a real NGINX in the end-to-end test
-- (tests/it/kong_check_door.rs). Each follows the Kong 3.x PDK reference; what Kong itself
-- does differently is listed in kong/README.md. Test code only: never loaded by Kong.
--
-- Use: `access_by_lua_block { require("kong_shim").run("route", { url = ... }) }` with
-- `set $upstream_uri ""` and `proxy_pass http://upstream$upstream_uri`, as Kong's own
-- NGINX template proxies.

-- schema.lua requires Kong's typedefs; only these two are used, as opaque field specs.
package.loaded["kong.db.schema.typedefs"] = package.loaded["kong.db.schema.typedefs"] or {
  no_consumer = { type = "foreign", reference = "consumers", eq = ngx.null },
  protocols_http = { type = "set", elements = { type = "string" } },
}

local request = {}

function request.get_method() return ngx.req.get_method() end
function request.get_scheme() return ngx.var.scheme end
function request.get_host() return ngx.var.host end
function request.get_raw_path() return (ngx.var.request_uri:match("^[^?]*")) end
function request.get_raw_query() return ngx.var.args or "" end
function request.get_http_version() return ngx.req.http_version() end
-- Both values, as Kong's returns ngx.req.get_headers's: the table and "truncated".
function request.get_headers(max) return ngx.req.get_headers(max or 100) end
function request.get_header(name) return ngx.var["http_" .. name:gsub("-", "_")] end

function request.get_raw_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then
    return body
  end
  if ngx.req.get_body_file() then
    return nil, "request body did not fit into client body buffer, consider raising 'client_body_buffer_size'"
  end
  return ""
end

local service_request = {
  set_header = function(name, value) ngx.req.set_header(name, value) end,
  clear_header = function(name) ngx.req.clear_header(name) end,
  -- Kong: "sets the querystring ... not processed in any way".
  set_raw_query = function(query) ngx.req.set_uri_args(query) end,
}

local response = {}

function response.exit(status, body, headers)
  ngx.status = status
  for name, value in pairs(headers or {}) do
    ngx.header[name] = value
  end
  if body then
    ngx.print(body)
  end
  return ngx.exit(ngx.HTTP_OK)
end

local function logger(level)
  return function(...) ngx.log(level, ...) end
end

kong = {
  request = request,
  service = { request = service_request },
  response = response,
  client = { get_forwarded_ip = function() return ngx.var.remote_addr end },
  log = { err = logger(ngx.ERR), warn = logger(ngx.WARN), debug = logger(ngx.DEBUG) },
}

local M = {}

-- The plugin's config record as Kong would store it: the real schema's defaults applied
-- and its checks run, so a route config the schema refuses fails the test.
local function configure(raw)
  local schema = require "kong.plugins.sluis.schema"
  local fields
  for _, field in ipairs(schema.fields) do
    if field.config then
      fields = field.config.fields
    end
  end
  local conf, known = {}, {}
  for _, entry in ipairs(fields) do
    local name, spec = next(entry)
    known[name] = true
    local value = raw[name]
    if value == nil then
      value = spec.default
    end
    if value == nil and spec.required then
      error("config." .. name .. " is required")
    end
    if value ~= nil then
      local kind = ({ integer = "number", map = "table" })[spec.type] or spec.type
      if type(value) ~= kind or (spec.type == "integer" and value % 1 ~= 0) then
        error("config." .. name .. " must be a " .. spec.type)
      end
      if spec.between and (value < spec.between[1] or value > spec.between[2]) then
        error("config." .. name .. " is out of range")
      end
      if spec.gt and value <= spec.gt then
        error("config." .. name .. " must be greater than " .. spec.gt)
      end
      if spec.match and not value:find(spec.match) then
        error("config." .. name .. " does not match " .. spec.match)
      end
    end
    conf[name] = value
  end
  for name in pairs(raw) do
    if not known[name] then
      error("config." .. name .. " is unknown")
    end
  end
  return conf
end

local configs = {}
local handler

--- The plugin's access phase for route `name` with config `raw`, then what Kong's
-- runloop does after the access phase: the upstream URI from the raw path and the
-- (possibly rewritten) query.
function M.run(name, raw)
  handler = handler or require "kong.plugins.sluis.handler"
  local conf = configs[name]
  if not conf then
    conf = configure(raw)
    configs[name] = conf
  end
  handler:access(conf)
  local args = ngx.var.args
  ngx.var.upstream_uri = request.get_raw_path()
    .. ((args and args ~= "") and ("?" .. args) or "")
end

return M

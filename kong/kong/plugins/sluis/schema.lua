-- The plugin's configuration, in Kong's schema language (Kong 3.x).
local typedefs = require "kong.db.schema.typedefs"

return {
  name = "sluis",
  fields = {
    { consumer = typedefs.no_consumer },
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {
          -- Sluis's HTTP listener, e.g. http://sluis:9192 (the path is always /v1/check).
          { url = { type = "string", required = true,
                    match = "^https?://[^/]+/?$" } },
          -- The policy that must decide this route's requests (context `sluis_policy`).
          { policy = { type = "string" } },
          -- More context entries for the policies (`request.context`).
          { context = { type = "map", keys = { type = "string" }, values = { type = "string" } } },
          -- Decide on paths with `%2F` instead of refusing them with 400: only when the
          -- upstream never decodes it into a segment separator.
          { allow_encoded_slashes = { type = "boolean", default = false } },
          -- Milliseconds.
          { connect_timeout = { type = "integer", default = 1000, gt = 0 } },
          { send_timeout = { type = "integer", default = 2000, gt = 0 } },
          { read_timeout = { type = "integer", default = 2000, gt = 0 } },
          -- Below Sluis's `header_read_timeout` (10 s), which closes idle connections.
          { keepalive_timeout = { type = "integer", default = 5000, gt = 0 } },
          { keepalive_pool = { type = "integer", default = 32, gt = 0 } },
          { ssl_verify = { type = "boolean", default = true } },
          { tls_server_name = { type = "string" } },
          -- Mutual TLS: a PEM certificate and its key, both or neither.
          { client_cert = { type = "string" } },
          { client_key = { type = "string", referenceable = true } },
          -- Send the request body (for policies reading `request.body`, e.g. GraphQL);
          -- a larger one is refused with 413, never decided on in part.
          { include_body = { type = "boolean", default = false } },
          { max_body_bytes = { type = "integer", default = 65536, gt = 0 } },
          -- More request headers than this are refused with 431.
          { max_headers = { type = "integer", default = 100, between = { 1, 1000 } } },
          -- The client's status when Sluis cannot be asked or cannot decide.
          { status_on_error = { type = "integer", default = 503, between = { 400, 599 } } },
        },
    } },
  },
  entity_checks = {
    { mutually_required = { "config.client_cert", "config.client_key" } },
  },
}

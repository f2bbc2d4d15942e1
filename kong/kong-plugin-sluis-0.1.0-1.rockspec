package = "kong-plugin-sluis"
version = "0.1.0-1"
-- Installed from a checkout with `luarocks make` in this directory, which builds from the
-- files here and fetches nothing: there is no published source archive yet.
source = {
  url = "git+https://example.invalid/sluis.git",
}
description = {
  summary = "Kong Gateway plugin asking Sluis, an external-authorization service, for every request",
  license = "Apache-2.0",
}
dependencies = {
  "lua >= 5.1",
}
build = {
  type = "builtin",
  modules = {
    ["kong.plugins.sluis.handler"] = "kong/plugins/sluis/handler.lua",
    ["kong.plugins.sluis.schema"] = "kong/plugins/sluis/schema.lua",
    ["kong.plugins.sluis.logic"] = "kong/plugins/sluis/logic.lua",
    ["kong.plugins.sluis.client"] = "kong/plugins/sluis/client.lua",
  },
}

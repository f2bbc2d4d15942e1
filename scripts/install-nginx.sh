#!/usr/bin/env bash
# Install NGINX (package `nginx-light`, else `nginx`) and Caddy (`caddy`) from Debian when
# they are missing, for the end-to-end tests of the forward-auth door
# (tests/it/gateways_http.rs), and NGINX's Lua module with OpenResty's core, LuaJIT, lua-cjson
# and busted for the Kong plugin's tests (tests/it/kong_check_door.rs), and NGINX's njs module
# for the knooppunt-shaped PEP (examples/nuts/pep.js, tests/it/knooppunt_pep_njs.rs). The tests run their
# own NGINX and Caddy on loopback with temporary configs; the system services are not used.
# Needs root (CI runs as root); does nothing for a tool already installed.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
updated=no
install() {
  if ! apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; then
    if [[ $updated == no ]]; then
      apt-get update >/dev/null
      updated=yes
    fi
    apt-get install -y --no-install-recommends "$@" >/dev/null
  fi
}

if ! [[ -x /usr/sbin/nginx ]]; then
  install nginx-light || install nginx
fi
if ! [[ -x /usr/bin/caddy ]]; then
  install caddy
fi
# `luajit2` (OpenResty's LuaJIT, which ngx_lua links), never `luajit`: Debian's `luajit`
# conflicts with it, and installing it removes the NGINX Lua module.
lua_packages=()
for package in libnginx-mod-http-lua lua-resty-core luajit2 lua-cjson lua-busted; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' \
    || lua_packages+=("$package")
done
if (( ${#lua_packages[@]} )); then
  install "${lua_packages[@]}"
fi
# njs (0.7.9 in bookworm) for the knooppunt-shaped PEP in examples/nuts/.
if ! dpkg-query -W -f='${Status}' libnginx-mod-http-js 2>/dev/null | grep -q 'ok installed'; then
  install libnginx-mod-http-js
fi
# The packages may start their system services; the tests do not want them.
if command -v service >/dev/null 2>&1; then
  service nginx stop >/dev/null 2>&1 || true
  service caddy stop >/dev/null 2>&1 || true
fi
echo "$(/usr/sbin/nginx -v 2>&1); njs $(dpkg-query -W -f='${Version}' libnginx-mod-http-js); caddy $(/usr/bin/caddy version); $(/usr/bin/luajit -v | cut -d' ' -f1-2); busted $(/usr/bin/busted --version)"

# Sourced by the load scripts (load.sh, grpc-ratio.sh, grpc-callgrind.sh, doors-load.sh):
# the example config with a flow store of the run's own, and the eOverdracht transfer
# their requests need. A benchmark's transfer must not land in examples/sluis-flows.db,
# where scripts/demo.sh (and anyone trying the quickstart) would find a live transfer
# nobody registered: the demo's "revoked" request would then be allowed.

# The transfer of Patient/123 to the receiver the development token names.
LOAD_FLOW='{"id": "load-transfer", "purpose": "eOverdracht", "actor": "did:web:receiver.example.org", "scopes": ["eOverdracht-receiver"], "resources": [{"path": "Patient/123", "operations": ["read"]}]}'

# private_example_config DIR: writes examples/.load-PID.yaml, the example config with its
# flow store in DIR, and prints its path; the caller removes it on exit. It stays in
# examples/ because the config's other paths are relative to it.
private_example_config() {
  local dir config
  dir="$(cd "$1" && pwd)"
  config="examples/.load-$$.yaml"
  sed "s|sqlite:sluis-flows.db|sqlite:$dir/flows.db|" examples/config.yaml >"$config"
  if ! grep -q "sqlite:$dir/flows.db" "$config"; then
    echo "cannot move the example config's flow store" >&2
    return 1
  fi
  echo "$config"
}

# register_load_flow ADMIN_ADDRESS: registers LOAD_FLOW, prints the HTTP status.
register_load_flow() {
  curl -s -o /dev/null -w '%{http_code}' -X POST "http://$1/v1/flows" \
    -H 'content-type: application/json' -d "$LOAD_FLOW"
}

# Sourced by the load scripts (load.sh, grpc-ratio.sh, grpc-callgrind.sh, doors-load.sh):
# the example config with a flow store of the run's own, and the eOverdracht transfer
# their requests need. A benchmark's transfer must not land in examples/sluis-flows.db,
# where scripts/demo.sh (and anyone trying the quickstart) would find a live transfer
# nobody registered: the demo's "revoked" request would then be allowed.

# The transfer of Patient/123 to the receiver the development token names.
LOAD_FLOW='{"id": "load-transfer", "purpose": "eOverdracht", "actor": "did:web:receiver.example.org", "scopes": ["eOverdracht-receiver"], "resources": [{"path": "Patient/123", "operations": ["read"]}]}'

# private_example_config DIR [PORT_SHIFT]: writes examples/.load-PID[-SHIFT].yaml, the
# example config with its flow store in DIR, and prints its path; the caller removes it
# on exit. It stays in examples/ because the config's other paths are relative to it.
# PORT_SHIFT (default 0) moves the listeners (admin 9190, gRPC 9191, HTTP 9192) up by
# that much, so two Sluis builds can run side by side.
private_example_config() {
  local dir config shift=${2:-0}
  dir="$(cd "$1" && pwd)"
  config="examples/.load-$$${2:+-$2}.yaml"
  sed -e "s|sqlite:sluis-flows.db|sqlite:$dir/flows${2:+-$2}.db|" \
    -e "s|127.0.0.1:9190|127.0.0.1:$((9190 + shift))|" \
    -e "s|127.0.0.1:9191|127.0.0.1:$((9191 + shift))|" \
    -e "s|127.0.0.1:9192|127.0.0.1:$((9192 + shift))|" examples/config.yaml >"$config"
  if ! grep -q "sqlite:$dir/flows" "$config"; then
    echo "cannot move the example config's flow store" >&2
    return 1
  fi
  echo "$config"
}

# append_config_block CONFIG FILE SLUIS_BINARY: appends FILE (top-level keys the example
# config does not set, e.g. a decision_log or tracing block) to CONFIG, and fails unless
# the result loads.
append_config_block() {
  cat "$2" >>"$1"
  "$3" validate --config "$1" >/dev/null || { echo "the config with $2 does not load" >&2; return 1; }
}

# register_load_flow ADMIN_ADDRESS: registers LOAD_FLOW, prints the HTTP status.
register_load_flow() {
  curl -s -o /dev/null -w '%{http_code}' -X POST "http://$1/v1/flows" \
    -H 'content-type: application/json' -d "$LOAD_FLOW"
}

# load_flow_token SLUIS_BINARY: prints a development token (an hour's) that LOAD_FLOW's
# requests are allowed with: the receiver the flow names, the example config's issuer.
load_flow_token() {
  "$1" dev-token --key examples/keys/dev-rsa.pem --kid dev-1 --claims '{
    "iss": "https://nuts.example.org", "aud": "https://fhir.example.org",
    "sub": "did:web:receiver.example.org", "client_id": "did:web:receiver.example.org",
    "scope": "eOverdracht-receiver"}'
}

# An AuthZEN evaluation policy/authzen-todo.yaml allows.
# shellcheck disable=SC2034 # used by the scripts that source this file
AUTHZEN_EVALUATION='{"subject": {"type": "user", "id": "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"},
 "action": {"name": "can_create_todo"}, "resource": {"type": "todo", "id": "todo-1"}}'

# wait_listening PORT [SECONDS]: returns once something listens on 127.0.0.1:PORT; fails
# after SECONDS (default 20).
wait_listening() {
  for _ in $(seq $((${2:-20} * 10))); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

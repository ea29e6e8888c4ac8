#!/bin/sh
# The API against its own OpenAPI document: schemathesis (`--checks all`, every phase, the stateful one included)
# drives a real `courier serve` on a fresh database and fails on any mismatch between what the document promises and
# what the server does. `make test` runs it; `make contract` alone.
#
# Everything stays on 127.0.0.1. schemathesis is installed into .courier/tools/ on first use.
set -eu
cd "$(dirname "$0")/.."
COURIER=${COURIER:-target/debug/courier}
TOOLS=.courier/tools
VERSION=4.32.5
if [ ! -x "$TOOLS/venv/bin/schemathesis" ] || ! "$TOOLS/venv/bin/schemathesis" --version | grep -q "$VERSION"; then
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi

PSQL=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -1)
cluster=$($COURIER db start)
database="courier_contract_$$"
admin_url="${cluster%/*}/postgres"
url="${cluster%/*}/$database"
"$PSQL" -q "$admin_url" -c "CREATE DATABASE $database" >/dev/null
export DATABASE_URL="$url"
$COURIER migrate >/dev/null
tenant=$($COURIER tenants create --name contract --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
key=$($COURIER keys create --tenant "$tenant" --env test \
    --scopes webhooks:read,webhooks:write,events:write,deliveries:read,deliveries:replay --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

COURIER_LISTEN="127.0.0.1:$port" COURIER_METRICS_LISTEN="" COURIER_RATE_LIMIT=0 COURIER_ALLOW_HTTP=true \
COURIER_SECRET_KEY=$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())') \
COURIER_LOG_FORMAT=json RUST_LOG=warn $COURIER serve 2>"$TOOLS/contract-serve.log" &
serve=$!
cleanup() {
    kill "$serve" 2>/dev/null || true
    wait "$serve" 2>/dev/null || true
    "$PSQL" -q "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(150):
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1).status == 200:
            sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit("courier serve did not become ready")
PY

mkdir -p "$TOOLS/contract"
cd "$TOOLS/contract"
"../venv/bin/schemathesis" --config-file ../../../scripts/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $key" \
    --max-examples "${CONTRACT_EXAMPLES:-40}" \
    --seed "${CONTRACT_SEED:-20261129}" \
    --no-color

#!/bin/sh
# The tenant portal in a real browser: Debian's Chromium driven by Playwright for Python (tests/portal/), against a
# real `courier serve` on a fresh database and a real receiver. `make test` runs it; `make portal` alone.
#
# Installs what it needs on first use: the `chromium` package (Playwright's own browser download is not reachable)
# and Playwright into .courier/tools/. Everything listens on 127.0.0.1. Screenshots go to $SCREENSHOTS
# (target/portal-screenshots by default; `make portal-screenshots` refreshes docs/portal/).
set -eu
cd "$(dirname "$0")/.."
COURIER=${COURIER:-target/debug/courier}
TOOLS=.courier/tools
PLAYWRIGHT=1.65.2
export SCREENSHOTS=${SCREENSHOTS:-target/portal-screenshots}

if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -x "$TOOLS/portal-venv/bin/python" ] || ! "$TOOLS/portal-venv/bin/pip" show playwright 2>/dev/null | grep -q "Version: $PLAYWRIGHT"; then
    python3 -m venv "$TOOLS/portal-venv"
    "$TOOLS/portal-venv/bin/pip" install --quiet --disable-pip-version-check "playwright==$PLAYWRIGHT"
fi

PSQL=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -1)
cluster=$($COURIER db start)
database="courier_portal_$$"
admin_url="${cluster%/*}/postgres"
export DATABASE_URL="${cluster%/*}/$database"
"$PSQL" -q "$admin_url" -c "CREATE DATABASE $database" >/dev/null
$COURIER migrate >/dev/null
id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
tenant=$($COURIER tenants create --name "Portal test" --json | id_of id)
other=$($COURIER tenants create --name "Another tenant" --json | id_of id)
scopes=webhooks:read,webhooks:write,events:write,deliveries:read,deliveries:replay
export API_KEY=$($COURIER keys create --tenant "$tenant" --env test --scopes "$scopes" --json | id_of key)
export OTHER_KEY=$($COURIER keys create --tenant "$other" --env test --scopes "$scopes" --json | id_of key)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export COURIER_URL="http://127.0.0.1:$port"

mkdir -p "$TOOLS"
receiver_out="$TOOLS/portal-receiver.out"
python3 tests/portal/receiver.py >"$receiver_out" &
receiver=$!
COURIER_LISTEN="127.0.0.1:$port" COURIER_PUBLIC_URL="$COURIER_URL" COURIER_METRICS_LISTEN="" COURIER_RATE_LIMIT=0 \
COURIER_ALLOW_HTTP=true COURIER_ALLOWED_TARGETS=127.0.0.0/8 COURIER_RETRY_INITIAL=1s \
COURIER_SECRET_KEY=$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())') \
COURIER_LOG_FORMAT=json RUST_LOG=warn $COURIER serve 2>"$TOOLS/portal-serve.log" &
serve=$!
cleanup() {
    kill "$serve" "$receiver" 2>/dev/null || true
    wait "$serve" "$receiver" 2>/dev/null || true
    "$PSQL" -q "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
python3 - "$port" "$receiver_out" <<'PY'
import sys, time, urllib.request
for _ in range(150):
    try:
        ready = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1).status == 200
        if ready and open(sys.argv[2]).read().strip():
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
sys.exit("courier serve or the receiver did not become ready")
PY
export RECEIVER_URL="http://127.0.0.1:$(head -1 "$receiver_out")"
"$TOOLS/portal-venv/bin/python" tests/portal/test_portal.py

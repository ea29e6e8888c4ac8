#!/bin/sh
# The Python emitter client (clients/python) against a real `courier serve` on a fresh database of the embedded
# PostgreSQL cluster, a real receiver running the integration guide's `verify_signature`, and fault-injecting
# proxies written in the tests. `make test` runs it; `make client` alone.
#
# Installs the client (editable) with its pinned checkers (ruff, mypy, pytest) into .courier/tools/client-venv on
# first use, and again whenever pyproject.toml changes. Then: ruff, mypy --strict, pytest.
set -eu
cd "$(dirname "$0")/.."
COURIER=${COURIER:-target/debug/courier}
export COURIER="$(cd "$(dirname "$COURIER")" && pwd)/$(basename "$COURIER")"
TOOLS=.courier/tools
VENV="$TOOLS/client-venv"
PROJECT=clients/python

mkdir -p "$TOOLS"
stamp=$(sha256sum "$PROJECT/pyproject.toml" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.pyproject-sha256" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$PROJECT[dev]"
    echo "$stamp" >"$VENV/.pyproject-sha256"
fi

(cd "$PROJECT" && "../../$VENV/bin/ruff" check . && "../../$VENV/bin/ruff" format --check . \
    && "../../$VENV/bin/mypy" --strict)

PSQL=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -1)
export PATH="$(dirname "$PSQL"):$PATH"
cluster=$($COURIER db start)
database="courier_client_$$"
admin_url="${cluster%/*}/postgres"
export DATABASE_URL="${cluster%/*}/$database"
"$PSQL" -q "$admin_url" -c "CREATE DATABASE $database" >/dev/null
cleanup() {
    "$PSQL" -q "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
$COURIER migrate >/dev/null
export CLIENT_TEST_LOGS="$PWD/$TOOLS"   # client-serve.log and client-restart-serve.log: the servers' logs
rm -f "$TOOLS"/client-*serve.log
(cd "$PROJECT" && "../../$VENV/bin/pytest" -q "$@")

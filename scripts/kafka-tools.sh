#!/bin/sh
# The Kafka-protocol broker and client the Kafka tests use, installed under .courier/tools on first use:
# Tansu (a Kafka-compatible broker written in Rust, built from crates.io once, without optimisations: about 6
# minutes on 2 cores where a release build takes 15, which would push a cold `make test` past 30 minutes; a test
# broker needs no speed) and aiokafka (the client the integration guide's consumer uses) in a private virtual
# environment.
set -eu
cd "$(dirname "$0")/.."
TOOLS=.courier/tools
TANSU_VERSION=0.6.0
TANSU_BUILD="$TANSU_VERSION-debug"
AIOKAFKA_VERSION=0.14.0
mkdir -p "$TOOLS"
if [ ! -x "$TOOLS/tansu/bin/tansu" ] || [ "$(cat "$TOOLS/tansu/version" 2>/dev/null)" != "$TANSU_BUILD" ]; then
    # Its own target directory, removed after: the broker's build is not the project's, and is large.
    cargo install --quiet --locked --debug "tansu@$TANSU_VERSION" --features dynostore \
        --root "$TOOLS/tansu" --target-dir "$TOOLS/tansu-build"
    rm -rf "$TOOLS/tansu-build"
    echo "$TANSU_BUILD" > "$TOOLS/tansu/version"
fi
if ! "$TOOLS/kafka-venv/bin/python" -c "import aiokafka, sys; sys.exit(aiokafka.__version__ != '$AIOKAFKA_VERSION')" 2>/dev/null; then
    python3 -m venv "$TOOLS/kafka-venv"
    "$TOOLS/kafka-venv/bin/pip" install --quiet --disable-pip-version-check "aiokafka==$AIOKAFKA_VERSION"
fi

# Courier: `make run` to try it, `make test` for everything CI checks.
COURIER := target/debug/courier

.PHONY: run test bench chaos contract portal portal-screenshots client deny brokers db-start db-stop

## Start the embedded PostgreSQL under .courier/ and run Courier in development mode.
run:
	cargo run --quiet -- dev

## Formatting, lints and the whole test suite against the private PostgreSQL cluster (started or reused).
test: deny brokers
	cargo build --quiet --bin courier
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	DATABASE_URL="$${DATABASE_URL:-$$($(COURIER) db start)}" cargo test --workspace
	# One tiny run of the load harness proves it still works; no timings are asserted.
	DATABASE_URL="$${DATABASE_URL:-$$($(COURIER) db start)}" cargo bench --profile dev --bench load -- --smoke > /dev/null
	# A few seconds of the fault suite on its own PostgreSQL cluster: kills, a database crash, hostile receivers.
	cargo bench --profile dev --bench chaos -- --short > /dev/null
	# Two failovers under load: a primary and its synchronous standby, the primary killed and the standby promoted.
	cargo bench --profile dev --bench chaos -- --short --failover > /dev/null
	# The server against its OpenAPI document (schemathesis, every check and phase).
	scripts/contract.sh
	# The tenant portal in Chromium (Playwright for Python), against courier serve and a hostile receiver.
	scripts/portal-tests.sh
	# The Python emitter client against a real courier serve (clients/python).
	scripts/client-tests.sh

## schemathesis against a real `courier serve` (installs it under .courier/tools on first use).
contract:
	cargo build --quiet --bin courier
	scripts/contract.sh

## The portal's browser tests alone (installs Debian's chromium and Playwright on first use).
portal:
	cargo build --quiet --bin courier
	scripts/portal-tests.sh

## The browser tests, writing their screenshots into docs/portal/ (the README shows them).
portal-screenshots:
	cargo build --quiet --bin courier
	SCREENSHOTS=docs/portal scripts/portal-tests.sh

## The Python emitter client's suite alone: ruff, mypy --strict and pytest (installs it into .courier/tools on first use).
client:
	cargo build --quiet --bin courier
	scripts/client-tests.sh

## Debian's redis-server, nats-server and rabbitmq-server, and the Kafka-protocol broker Tansu with aiokafka,
## which the destination tests start on 127.0.0.1 (installed on first use; Tansu is built once, under .courier/tools).
brokers:
	command -v redis-server >/dev/null && { command -v nats-server || test -x /usr/sbin/nats-server; } >/dev/null && \
		test -x /usr/lib/rabbitmq/bin/rabbitmq-server || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server nats-server rabbitmq-server; }
	scripts/kafka-tools.sh

## What may enter the dependency tree (deny.toml); installs cargo-deny when missing.
deny:
	command -v cargo-deny >/dev/null || cargo install cargo-deny --locked --quiet
	cargo deny --log-level error check licenses bans sources

## Every benchmark scenario in release mode on the private cluster; JSON on stdout, a table on stderr.
bench:
	cargo build --quiet --release --bin courier
	DATABASE_URL="$${DATABASE_URL:-$$(target/release/courier db start)}" cargo bench --bench load -- $(ARGS)

## 3,000 rounds of the queue's races (tests/races.rs), then the full fault suite and the failover suite in release
## mode; both write RELIABILITY.md (ARGS go to the fault suite, e.g. ARGS="--seconds 90").
chaos:
	cargo build --quiet --bin courier
	DATABASE_URL="$${DATABASE_URL:-$$($(COURIER) db start)}" COURIER_RACE_ROUNDS=3000 cargo test --test races
	cargo bench --bench chaos -- --report RELIABILITY.md $(ARGS)
	cargo bench --bench chaos -- --failover --report RELIABILITY.md

db-start:
	cargo build --quiet --bin courier
	$(COURIER) db start

db-stop:
	$(COURIER) db stop

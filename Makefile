# Courier: `make run` to try it, `make test` for everything CI checks.
COURIER := target/debug/courier

.PHONY: run test check db-start db-stop db-url

## Start the embedded PostgreSQL under .courier/ and run Courier in development mode.
run:
	cargo run --quiet -- dev

## Formatting, lints and the whole test suite against the private PostgreSQL cluster (started or reused).
test:
	cargo build --quiet --bin courier
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	DATABASE_URL="$${DATABASE_URL:-$$($(COURIER) db start)}" cargo test --workspace

db-start:
	cargo build --quiet --bin courier
	$(COURIER) db start

db-stop:
	$(COURIER) db stop

# Courier: `make run` to try it, `make test` for everything CI checks.
COURIER := target/debug/courier

.PHONY: run test bench db-start db-stop

## Start the embedded PostgreSQL under .courier/ and run Courier in development mode.
run:
	cargo run --quiet -- dev

## Formatting, lints and the whole test suite against the private PostgreSQL cluster (started or reused).
test:
	cargo build --quiet --bin courier
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	DATABASE_URL="$${DATABASE_URL:-$$($(COURIER) db start)}" cargo test --workspace
	# One tiny run of the load harness proves it still works; no timings are asserted.
	DATABASE_URL="$${DATABASE_URL:-$$($(COURIER) db start)}" cargo bench --profile dev --bench load -- --smoke > /dev/null

## Every benchmark scenario in release mode on the private cluster; JSON on stdout, a table on stderr.
bench:
	cargo build --quiet --release --bin courier
	DATABASE_URL="$${DATABASE_URL:-$$(target/release/courier db start)}" cargo bench --bench load -- $(ARGS)

db-start:
	cargo build --quiet --bin courier
	$(COURIER) db start

db-stop:
	$(COURIER) db stop

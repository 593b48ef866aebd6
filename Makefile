# databus — the two commands a new machine needs are `make run` and `make test`.
# Services (MariaDB, Redis, Apache Kafka) are installed and started by
# scripts/services.sh when absent. Point at existing ones with
# DATABUS_BROKERS, DATABUS_MYSQL_URL, DATABUS_REDIS_ADDR (see docs/operating.md).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
SERVICES := scripts/services.sh
# Exports the resolved service addresses into a recipe line.
WITH_ENV = eval "$$($(SERVICES) env)"

.PHONY: run test services build lint unit clean run-example bench fuzz chaos compat dist

## Set up the services, build, and run databus in the foreground on :6205.
## DATABUS_AUTH=redis or DATABUS_AUTH=file picks another auth store.
run: services build
	@$(WITH_ENV); exec scripts/run.sh

## Set up the services and run every check and test.
test: services lint
	@$(SERVICES) test-tools
	@$(WITH_ENV); $(SERVICES) sweep
	@$(WITH_ENV); cargo test --workspace --all-targets
	@# The publishing, security and metrics tests again on the other producer engine.
	@$(WITH_ENV); DATABUS_TEST_PRODUCER_ENGINE=librdkafka cargo test --test publish --test kafka_security --test admin

## Run the example client (example_cli/) against the databus of `make run`.
run-example:
	@scripts/run-example.sh

## Measure databus against direct Kafka clients; writes bench/results.{md,json}.
bench: services
	@$(WITH_ENV); scripts/bench.sh

## Run the fault suite (tests/chaos.rs, the fast subset `make test` runs too, and
## tests/chaos_cluster.rs, the long three-broker faults) and print its table (RELIABILITY.md).
chaos: services
	@$(SERVICES) test-tools
	@$(WITH_ENV); scripts/chaos.sh

## The core suite (publish, subscribe, commit, groups, color) against another
## Apache Kafka release, started for the run: make compat KAFKA_VERSION=3.9.1
compat: services
	@$(WITH_ENV); KAFKA_VERSION=$(KAFKA_VERSION) scripts/compat.sh

## The Debian package (binary, /etc/databus/databus.toml, systemd unit): target/dist/*.deb
dist:
	@scripts/dist.sh

## Fuzz every parser of untrusted input (FUZZ_SECONDS each, default 60; FUZZING.md).
fuzz:
	@scripts/fuzz.sh

services:
	@mkdir -p .run
	@$(SERVICES) up

build:
	cargo build --release

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --test chaos_cluster -- -D warnings

## Unit tests only; needs no services.
unit:
	cargo test --lib

clean:
	cargo clean
	rm -rf .run

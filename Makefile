# Waymark — the two commands are `make run` and `make test`; both install what is missing first.
SHELL := /bin/bash
SWIFT ?= swift
RELEASE_FLAGS := -c release
BIN_RELEASE = $(shell $(SWIFT) build $(RELEASE_FLAGS) --show-bin-path 2>/dev/null)

.PHONY: setup build run test bench bench-memory crash-test crash-test-cluster clean reap help

help:
	@echo "make run    - local broker + Redis, generated retail day through Waymark, summary"
	@echo "make test   - the whole test suite against a real redis-server and Tansu broker"
	@echo "make bench  - benchmarks (release build): ceilings, engine on one core, journey end to end as ratios; bench-results/"
	@echo "make bench-memory - Redis footprint with 1M customers (2M touchpoints, ~3 GB of Redis, ~8 GB for the bench process)"
	@echo "make crash-test - full-size crash test: 200k events, kill -9 and SIGSTOP (release build)"
	@echo "make crash-test-cluster - the same on a 3-master Redis Cluster with replicas, kill -9 of a master mid-stream"
	@echo "make setup  - install dependencies only (idempotent)"

setup:
	@bash deploy/scripts/setup.sh

build: setup
	$(SWIFT) build $(RELEASE_FLAGS) --product waymark

run: build
	"$(BIN_RELEASE)/waymark" demo

# Serial: every integration suite starts its own broker, Redis and workers; run side by side on two
# cores they slow each other past their timeouts. Serial takes about 7.5 minutes once built.
test: setup
	@status=0; $(SWIFT) test --no-parallel || status=$$?; bash deploy/scripts/reap.sh; exit $$status

bench: setup
	$(SWIFT) build $(RELEASE_FLAGS) --product waymark
	$(SWIFT) build $(RELEASE_FLAGS) --product waymark-bench
	"$(BIN_RELEASE)/waymark-bench" clients
	"$(BIN_RELEASE)/waymark-bench" engine
	MALLOC_ARENA_MAX=2 "$(BIN_RELEASE)/waymark-bench" journey
	MALLOC_ARENA_MAX=2 "$(BIN_RELEASE)/waymark-bench" journey --customers 200000 --events 400000 --label "sparse, ~2 touchpoints per customer"
	MALLOC_ARENA_MAX=2 "$(BIN_RELEASE)/waymark-bench" journey --runs 2 --redis-cluster --label "retail day, 3-master Redis Cluster"
	MALLOC_ARENA_MAX=2 "$(BIN_RELEASE)/waymark-bench" journey --runs 1 --redis-tls --label "retail day, Redis over TLS"
	for n in 1 2 3; do MALLOC_ARENA_MAX=2 "$(BIN_RELEASE)/waymark-bench" journey --runs 1 --workers $$n --latency-seconds 0 --label "scale-out, $$n workers" || exit 1; done
	"$(BIN_RELEASE)/waymark-bench" pipeline
	"$(BIN_RELEASE)/waymark-bench" replay

bench-memory: setup
	$(SWIFT) build $(RELEASE_FLAGS) --product waymark
	$(SWIFT) build $(RELEASE_FLAGS) --product waymark-bench
	MALLOC_ARENA_MAX=2 "$(BIN_RELEASE)/waymark-bench" journey --customers 1000000 --events 2000000 --runs 1 --latency-seconds 0 --label "memory, 1M customers"

crash-test: setup
	$(SWIFT) build $(RELEASE_FLAGS) --product waymark
	$(SWIFT) build $(RELEASE_FLAGS) --product waymark-bench
	"$(BIN_RELEASE)/waymark-bench" crash --events 200000 --rate 10000 --kills 5

crash-test-cluster: setup
	$(SWIFT) build $(RELEASE_FLAGS) --product waymark
	$(SWIFT) build $(RELEASE_FLAGS) --product waymark-bench
	"$(BIN_RELEASE)/waymark-bench" crash --events 200000 --rate 10000 --kills 5 --redis-cluster

reap:
	@bash deploy/scripts/reap.sh

clean:
	rm -rf .build bench-results

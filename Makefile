# batchpipe — common tasks. `make help` lists them.
GO      ?= go
MINIO   := bin/minio
# Pinned MinIO, built from the Go module proxy (see deploy/minio/run.sh).
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
TEST_TIMEOUT  ?= 60m

.PHONY: help build test test-short bench bench-large bench-micro lint minio minio-bin demo clean

help:
	@echo "build       build bin/worker and bin/submit"
	@echo "test        build MinIO if missing, then run every test (MinIO-backed ones included)"
	@echo "test-short  unit tests only (no MinIO, no Temporal server)"
	@echo "bench       micro benchmarks, then naive vs batchpipe vs direct at 1,000 and 20,000 items, a sweep, a Python function"
	@echo "            (plain multiprocessing vs submit exec:, 200,000 items) and an I/O-bound processor (60,000 items) (~6 min; bench-results/)"
	@echo "bench-large the same at 100,000 and 1,000,000 items, then the whole submit at 10,000,000 (bench-results/large/)"
	@echo "bench-100m  the whole submit at 100,000,000 items (a 5-6 GB input; ~8 min; bench-results/100m/)"
	@echo "test-faults the fault suite (kills, outages, bad input); rewrites RELIABILITY.md's table"
	@echo "cluster-test PostgreSQL + Temporal (4 service processes) + MinIO + 3 workers: 100,000 items over s3://, a worker"
	@echo "            killed and the history service restarted mid-batch (needs apt-get install postgresql; ~2 min)"
	@echo "bench-cluster the cluster-test topology timed: 100,000 and 1,000,000 items, 1 and 3 workers, and where the CPU goes"
	@echo "            (server, workers, PostgreSQL, MinIO; bench-results/cluster.md; needs postgresql; ~6 min once built)"
	@echo "lint        gofmt + go vet"
	@echo "minio       run a throwaway local MinIO in the foreground"
	@echo "minio-bin   build the pinned MinIO into bin/minio"
	@echo "demo        run the quick-start batch on examples/inputs.jsonl"

build:
	$(GO) build -o bin/ ./cmd/...

minio-bin: $(MINIO)

$(MINIO):
	MINIO_VERSION=$(MINIO_VERSION) deploy/minio/run.sh --build-only

test: $(MINIO) lint
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

test-short:
	$(GO) test -short -count=1 ./...

# The fault suite (faults/, RELIABILITY.md): real worker, submit and MinIO
# processes killed, starved and misconfigured, each case ending in a full check
# of the manifest. Rewrites RELIABILITY.md's table from the run (not under
# CI=true). `make test` runs the same suite as part of ./...
.PHONY: test-faults
test-faults: $(MINIO)
	BATCHPIPE_WRITE_RELIABILITY=1 $(GO) test -count=1 -timeout 30m -v ./faults/

bench: bench-micro
	$(GO) build -o bin/ ./cmd/bench ./cmd/submit
	bin/bench -submit-bin bin/submit -minio-bin $(MINIO) -out bench-results

bench-large: $(MINIO)
	$(GO) build -o bin/ ./cmd/bench ./cmd/submit
	bin/bench -submit-bin bin/submit -minio-bin $(MINIO) -items 1000,100000,1000000 \
		-sweep-items 1000000 -sweep-shard-sizes 1000,4000 -sweep-concurrency 32 -python-items 0 -io-items 0 -failstop-items 0 -out bench-results/large
	bin/bench -submit-bin bin/submit -minio-bin $(MINIO) -items 10000000 -scenarios submit \
		-sweep-shard-sizes '' -sweep-concurrency '' -python-items 0 -io-items 0 -failstop-items 0 -out bench-results/10m

.PHONY: bench-100m
bench-100m: $(MINIO)
	$(GO) build -o bin/ ./cmd/bench ./cmd/submit
	bin/bench -submit-bin bin/submit -minio-bin $(MINIO) -items 100000000 -scenarios submit \
		-sweep-shard-sizes '' -sweep-concurrency '' -python-items 0 -io-items 0 -failstop-items 0 -out bench-results/100m

bench-micro: $(MINIO)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./blobstore/ ./zjsonl/ ./inputs/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

minio: $(MINIO)
	MINIO_VERSION=$(MINIO_VERSION) deploy/minio/run.sh

demo:
	$(GO) run ./cmd/submit examples/inputs.jsonl

clean:
	rm -rf bin .batchpipe

# deploy/'s topology as local processes (no Docker): PostgreSQL (apt-get
# install postgresql), a Temporal cluster on it (server of go.mod's
# go.temporal.io/server, one process per service), MinIO, three workers; a
# 100,000-item batch over s3:// checked item by item while a worker is killed
# and the history service restarted; and deploy/compose.yaml checked against
# it and the binaries' flags. CI=true: a missing part fails instead of skipping.
.PHONY: cluster-test
cluster-test: $(MINIO)
	CI=true $(GO) test -count=1 -v -timeout 10m ./deploy/clustertest/

# The cluster-test topology timed (deploy/clustertest BenchmarkCluster): whole
# `submit` processes of 100,000 and 1,000,000 items over s3:// with 1 and 3
# fresh workers, one run at a small explicit shard size, and the CPU of the
# Temporal services, workers, PostgreSQL and MinIO; the table goes to
# bench-results/cluster.md. BATCHPIPE_BENCH_CLUSTER=ITEMSxWORKERS[/SIZE],...
# picks other runs.
.PHONY: bench-cluster
bench-cluster: $(MINIO)
	CI=true $(GO) test -count=1 -run '^$$' -bench Cluster -benchtime 1x -timeout 90m ./deploy/clustertest/

# batchpipe — common tasks. `make help` lists them.
GO      ?= go
MINIO   := bin/minio
# Pinned MinIO, built from the Go module proxy (see deploy/minio/run.sh).
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
TEST_TIMEOUT  ?= 60m

.PHONY: help build test test-short bench lint minio minio-bin demo clean

help:
	@echo "build       build bin/worker and bin/submit"
	@echo "test        build MinIO if missing, then run every test (MinIO-backed ones included)"
	@echo "test-short  unit tests only (no MinIO, no Temporal server)"
	@echo "bench       benchmarks (blob store, zstd lines, pipeline)"
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

bench: $(MINIO)
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

# kvd: run, test, fuzz, bench.
GO ?= go
# The test pipeline keeps go test's exit status.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# Each fuzz target runs a number of inputs sized to about 15 s here, not a
# duration: with a duration, Go 1.26's fuzzing can fail at its end with
# "context deadline exceeded" and no failing input (go.dev/issue/75804).
# FUZZTIME=30s or FUZZTIME=1000000x sets every target's instead.
FUZZTIME ?=
fuzztime = $(if $(FUZZTIME),$(FUZZTIME),$(1))

.PHONY: run test vet unit fuzz build install bench console-vendor

# Run kvd on the embedded engine (data in ./data, API on 127.0.0.1:8080).
run:
	$(GO) run ./cmd/kvd

# Binaries carry their VCS revision (kvd version, telnyx-edge version) even
# where GOFLAGS turns stamping off.
BUILDFLAGS ?= -buildvcs=auto

# kvd, telnyx-edge and kvbench into ./bin.
build:
	$(GO) build $(BUILDFLAGS) -o bin/ ./cmd/...

# kvd, telnyx-edge and kvbench into $(go env GOBIN), or $(go env GOPATH)/bin.
install:
	$(GO) install $(BUILDFLAGS) ./cmd/...

# The whole suite, as CI runs it: vet, every test with the race detector,
# then each fuzz target for a bounded number of inputs.
test: vet unit fuzz

vet:
	$(GO) vet ./...

# Every test with the race detector; the output is go test's, for failed
# tests in full, then a summary of what ran and what skipped, and why.
unit:
	$(GO) build -o .testsummary ./internal/tools/testsummary
	$(GO) test -race -count=1 -timeout 20m -json ./... | ./.testsummary

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseRoute$$' -fuzztime $(call fuzztime,100000x) ./internal/api
	$(GO) test -run '^$$' -fuzz '^FuzzParseBatch$$' -fuzztime $(call fuzztime,100000x) ./internal/api
	$(GO) test -run '^$$' -fuzz '^FuzzParseBatchDifferential$$' -fuzztime $(call fuzztime,20000x) ./internal/api
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCursor$$' -fuzztime $(call fuzztime,100000x) ./internal/service
	$(GO) test -run '^$$' -fuzz '^FuzzSetKVBinding$$' -fuzztime $(call fuzztime,200000x) ./internal/functoml

# The benchmark: kvd on the embedded engine, and on a throwaway PostgreSQL when
# its binaries are here (or BENCHFLAGS=--postgres=URL, or off), against a bare
# net/http baseline. See kvbench -h.
BENCHFLAGS ?=
bench:
	$(GO) run ./cmd/kvbench $(BENCHFLAGS)

# The console's vendored chart library: the npm package's own dist files.
UPLOT_VERSION ?= 1.6.32
UPLOT_DIR = internal/console/web/vendor/uplot
console-vendor:
	tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent uplot@$(UPLOT_VERSION) >/dev/null && tar xzf uplot-$(UPLOT_VERSION).tgz && \
	cd - >/dev/null && cp $$tmp/package/dist/uPlot.iife.min.js $$tmp/package/dist/uPlot.min.css $$tmp/package/LICENSE $(UPLOT_DIR)/ && \
	rm -rf $$tmp && sha256sum $(UPLOT_DIR)/uPlot.iife.min.js $(UPLOT_DIR)/uPlot.min.css $(UPLOT_DIR)/LICENSE

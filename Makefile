# gefyra: a bridge between a Kubernetes Pod and a developer's local container.
# `make help` lists the targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go
BIN := bin
OUT := out
VERSION ?= 0.1.0
LDFLAGS := -s -w -X gefyra.dev/gefyra/internal/version.Version=$(VERSION)
export PATH := $(PATH):/usr/local/go/bin

.DEFAULT_GOAL := help

help: ## show the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Every main package of the project, as bin/<name>.
CMDS = $(shell $(GO) list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./... 2>/dev/null | grep -v /world/)

build: ## build every binary into bin/
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -tags grpcnotrace -ldflags '$(LDFLAGS)' -o $(BIN)/ $(CMDS)

test: unit e2e ## run every test: unit tests with -race, fuzz seeds, benchmarks once, then the end-to-end tests on a real cluster

unit: ## unit and in-process integration tests (real servers on loopback), with -race
	world/build.sh
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	# carrier's and the relays' tests again with the event loop off, so both paths are covered
	GEFYRA_EVENT_LOOP=off $(GO) test -race -count=1 ./carrier/... ./internal/netio/... ./internal/pipe/... ./stowaway/...
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./...

e2e: ## end-to-end tests on a real single-node Kubernetes and Docker Engine started here, then torn down
	world/e2e.sh

cluster-up: ## start the real single-node Kubernetes (built from source, cached in /var/cache/gefyra)
	world/world.sh up

cluster-down: ## stop it and remove every trace of it
	world/world.sh down

images: ## build every image FROM scratch into out/images/
	VERSION=$(VERSION) world/images.sh $(OUT)/images

demo: ## the tutorial's story, end to end, on this machine
	world/demo.sh

sandbox: ## the tutorial's whole environment on this machine, left running for you to type its commands (gefyra sandbox up; as root)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -tags grpcnotrace -ldflags '$(LDFLAGS)' -o $(BIN)/gefyra ./cli/cmd/gefyra
	$(BIN)/gefyra sandbox up --root $(CURDIR)

sandbox-down: ## remove the sandbox and every trace of it (gefyra sandbox down)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -tags grpcnotrace -ldflags '$(LDFLAGS)' -o $(BIN)/gefyra ./cli/cmd/gefyra
	$(BIN)/gefyra sandbox down

bench: ## benchmarks: Go benchmarks, then the harness (carrier vs nginx/haproxy, the tunnel, the control plane at 1,000 carriers, the full bridge path in the test world), writing BENCHMARKS.md (BENCH_QUICK=1: 1 run x 2s; BENCH_KINDS=http,tcp: the proxying kinds measured; BENCH_SKIP=http,h2,footprint,tunnel,controlplane,bridge; BENCH_ARGS='-merge bench/results/data.json' keeps skipped parts)
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) run ./bench -out BENCHMARKS.md -charts bench/results $(BENCH_ARGS)

lint: ## gofmt, go vet, and a doc comment on every package
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@missing=$$($(GO) list -f '{{if not .Doc}}{{.ImportPath}}{{end}}' ./...); if [ -n "$$missing" ]; then echo "packages without a doc comment:"; echo "$$missing"; exit 1; fi

clean: ## remove build output (not the cache of slow builds)
	rm -rf $(BIN) $(OUT)

.PHONY: help build test unit e2e cluster-up cluster-down images demo sandbox sandbox-down bench lint clean

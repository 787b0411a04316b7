# The front door: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build deps demo test unit-test integration-test bench test-vm

all: build

deps:
	./scripts/install-deps.sh

build:
	$(CARGO) build --release --workspace --bins

-include integration/vm/vm.mk

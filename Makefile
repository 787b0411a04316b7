# The front door (see README.md):
#   make demo    install deps, build, show the product on real DPDK containers (root)
#   make test    install deps, build, unit tests, integration tests (root)
#   make bench   lifecycle overhead vs plain runc and more; writes BENCHMARKS.md (root)
#   make deb     the Debian package (cargo-deb) in $(TARGET_DIR)/debian/
#   make image   the Kubernetes installer's image (OCI layout) in $(TARGET_DIR)/installer-image/
#   make test-deb  the .deb installed, the end-to-end suites run against /usr/bin, purged, nothing left (root; in make test)
#   make test-vm the VM suite (integration/vm/vm.mk)
#   make fuzz    coverage-guided fuzzing of every parser of untrusted input, FUZZ_SECONDS per target
#                (FUZZ_TARGETS= to pick some); `make test` runs a short smoke of it (fuzz-smoke)
SHELL := /bin/bash
CARGO ?= cargo
# Steps depend on each other's side effects (deps before build before tests): never parallel.
.NOTPARALLEL:

# Honour CARGO_TARGET_DIR like cargo does, so the binaries are found where cargo put them.
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),$(CURDIR)/target)

# The product's binaries are linked statically and position-dependent (glibc crt-static,
# relocation-model=static): a container's lifecycle execs them up to five times (the wrapper
# at create, start and delete; the hook at createRuntime and poststop), and a dynamic exec
# pays for the loader, the libraries' relocations and their page faults every time (~0.4 ms
# per exec here; `make bench`). They also run on nodes with an older C library (the .deb, the
# installer image). Every cargo command below builds for the host's target triple with these
# flags ($(STATIC)), so the tests and the bench share one build; build scripts and proc macros
# are host artifacts and stay dynamic. STATIC= builds as plain `cargo build` does.
HOST_TARGET := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
STATIC ?= $(if $(filter %-linux-gnu,$(HOST_TARGET)),1,)
ifneq ($(STATIC),)
CARGO_ENV := CARGO_BUILD_TARGET=$(HOST_TARGET) \
  CARGO_TARGET_$(shell echo '$(HOST_TARGET)' | tr 'a-z-' 'A-Z_')_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
BIN_DIR := $(TARGET_DIR)/$(HOST_TARGET)/release
DEB_TARGET := --target $(HOST_TARGET)
else
BIN_DIR := $(TARGET_DIR)/release
endif

# Integration tests, demo and bench need root (mounts, cgroups, hugepages, runc).
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo -E env "PATH=$$PATH")

# Integration tests share the hugepage pool through a lock, so threads mostly queue on it;
# two threads keep a 2-core machine responsive.
TEST_THREADS ?= 2
# Extra suites `make test` runs after the others, e.g. `make test EXTRA_TEST_TARGETS=test-vm`.
# (The VM suite is not part of `make test` yet.)
EXTRA_TEST_TARGETS ?=

# Fuzzing (fuzz/, scripts/fuzz.sh): seconds per target for `make fuzz`, and for the smoke run
# in `make test` (which fails on any crash). Smoke cost on this 2-core CI machine: 4m45s from
# scratch (2m54s build + 10 targets x 10 s), ~3m20s after a change in hook/src, ~1m45s when
# nothing changed.
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_TARGETS ?=

.PHONY: all build deps demo test lint msrv unit-test integration-test bench deb image test-deb fuzz fuzz-smoke

all: build

deps:
	./scripts/install-deps.sh

build:
	env $(CARGO_ENV) $(CARGO) build --release --workspace --bins

demo: deps build
	$(SUDO) ./scripts/demo.sh "$(BIN_DIR)"

test: deps build lint msrv unit-test fuzz-smoke integration-test test-deb $(EXTRA_TEST_TARGETS)

# rust-version (Cargo.toml) is what this checks: the workspace, tests and bench included, with
# exactly that toolchain (rustup installs it, minimal profile, once: ~1 min; the check ~2 min).
MSRV := $(shell sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
msrv:
	@if command -v rustup >/dev/null 2>&1; then \
	  rustup toolchain install $(MSRV) --profile minimal >/dev/null && \
	  CARGO_TARGET_DIR=$(TARGET_DIR)/msrv $(CARGO) +$(MSRV) check --workspace --all-targets; \
	else echo "msrv: SKIPPED: no rustup, so rust-version $(MSRV) is not checked on this machine"; fi

# The whole tree formatted as rustfmt.toml says, and clippy clean with warnings as errors.
lint:
	$(CARGO) fmt --all --check
	cd fuzz && $(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# As root (sudo when needed), like the integration tests: some unit tests mount a hugetlbfs,
# join mount namespaces or arm PSI triggers, and DPH_UNIT_TESTS_AS_ROOT=1 makes each of them fail
# rather than skip if root is missing.
unit-test:
	$(SUDO) env DPH_UNIT_TESTS_AS_ROOT=1 $(CARGO) test -p dataplane-hook

fuzz:
	./scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke:
	./scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

integration-test: build
	$(SUDO) env $(CARGO_ENV) $(CARGO) test --release -p dataplane-tests -- --test-threads=$(TEST_THREADS)

# The scaling plot (BENCHMARKS-scaling.png) is drawn with plotters and this font file (no
# system font library); BENCH_ARGS passes options such as `--runs 50` or `--only gc,scaling`.
BENCH_FONT := /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
BENCH_ARGS ?=
bench: deps build
	@[ -e $(BENCH_FONT) ] || $(SUDO) apt-get install -y --no-install-recommends fonts-dejavu-core
	$(SUDO) "$(BIN_DIR)/dataplane-bench" --bin-dir "$(BIN_DIR)" --out BENCHMARKS.md $(BENCH_ARGS)

# The Debian package from packaging/ and hook/Cargo.toml's [package.metadata.deb]; cargo-deb
# comes from crates.io the first time.
deb: build
	@command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked
	./packaging/gen-assets.sh "$(BIN_DIR)"
	$(CARGO) deb -p dataplane-hook --no-build $(DEB_TARGET) --output "$(TARGET_DIR)/debian/"

# The package in CI (part of `make test`): installed with dpkg -i, every end-to-end suite run
# again against the installed binaries (DPH_BIN_DIR=/usr/bin; ~2.5 min here), purged whatever
# the result, and checked that nothing is left (packaging/test-deb.sh). tests/packaging.rs, in
# integration-test, checks the package's contents, installed config and refused removal (it
# installs and purges the package itself, so it is not run against an installed one).
DEB_SUITES ?= $(addprefix --test ,$(filter-out packaging,$(shell awk '/^\[\[test\]\]/{t=1;next} /^\[/{t=0} t && $$1=="name"{gsub(/"/,"",$$3); print $$3}' tests/Cargo.toml)))
test-deb: deb
	$(SUDO) env $(CARGO_ENV) CARGO="$(CARGO)" ./packaging/test-deb.sh "$$(ls -t $(TARGET_DIR)/debian/dataplane-hook_*.deb | head -n1)" \
	  $(DEB_SUITES) -- --test-threads=$(TEST_THREADS)

# The installer image copies the binaries onto nodes whose C library may be older than this
# machine's: build-image.sh refuses dynamic ones (make build links them statically, above).
image: build
	./packaging/kubernetes/build-image.sh "$(BIN_DIR)" "$(TARGET_DIR)/installer-image"

-include integration/vm/vm.mk

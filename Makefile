# Conclave: two commands do all set-up on a fresh Debian machine.
#   make demo   a real meeting on this machine (relay + participants on loopback)
#   make test   every test: format, lints, unit, property, simulation and system tests
SHELL := /bin/bash
CARGO ?= cargo
# A fresh clone (CI) gains nothing from incremental compilation and it costs ~1.5 GB of disk.
ifdef CI
export CARGO_INCREMENTAL := 0
endif
# System packages the build and the tests need (Debian names).
APT_PACKAGES := build-essential pkg-config cmake libasound2-dev iproute2 nftables iptables iputils-ping espeak-ng ca-certificates coturn tcpdump xvfb imagemagick xdotool xclip bsdutils util-linux

.PHONY: deps demo test lint unit bench build soak

deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing system packages:$$missing — run: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "a Rust toolchain (cargo) is required: see https://rustup.rs"; exit 1; }

build: deps
	$(CARGO) build --workspace --bins

demo: build
	./target/debug/conclave demo

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# One test at a time: the system tests run several real processes each, whose audio clocks
# and ICE timers must not compete for this machine's two cores (tests/tests/system/main.rs).
unit: build
	$(CARGO) test --workspace -- --test-threads=1

test: lint unit

# Long runs over emulated real networks (docs/performance.md): the meeting tests under
# `intercontinental` with a two-minute hold, the five-person soak, and the join / first-audio
# medians under every profile. Not part of `make test` (about 15 minutes).
SOAK := $(CARGO) test --workspace --test system -- --test-threads=1 --nocapture
soak: build
	CONCLAVE_WAN_PROFILE=intercontinental CONCLAVE_HOLD_SECS=120 $(SOAK) real_networks::
	CONCLAVE_WAN_PROFILE=intercontinental $(SOAK) --ignored real_networks::five_members
	for p in metro continental intercontinental satellite; do \
	  CONCLAVE_WAN_PROFILE=$$p $(SOAK) --ignored real_networks::join_and_first_audio_medians || exit 1; \
	done

bench: deps
	$(CARGO) bench -p conclave-core
	$(CARGO) build --release --workspace --bins
	./target/release/meeting-bench all
	./target/release/relay-bench

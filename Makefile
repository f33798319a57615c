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
APT_PACKAGES := build-essential pkg-config cmake libasound2-dev libvpx-dev libclang-dev libdbus-1-dev dbus-daemon gnome-keyring libsecret-tools iproute2 nftables iptables iputils-ping espeak-ng ca-certificates coturn tcpdump xvfb imagemagick fonts-dejavu-core xdotool xclip bsdutils util-linux

.PHONY: deps demo test lint deny audit fuzz cargo-deny unit bench build soak

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

test: lint deny unit

# Supply chain (deny.toml): licenses, banned crates and sources, with a pinned cargo-deny
# built from crates.io the first time (about two minutes).
CARGO_DENY_VERSION := 0.20.2
cargo-deny: deps
	@$(CARGO) deny --version 2>/dev/null | grep -qx "cargo-deny $(CARGO_DENY_VERSION)" || \
	  $(CARGO) install --locked cargo-deny --version $(CARGO_DENY_VERSION)

deny: cargo-deny
	$(CARGO) deny check --hide-inclusion-graph licenses bans sources

# Known vulnerabilities (RustSec). The advisory database comes from GitHub: where it cannot
# be fetched, this says so and fails rather than pass unchecked.
audit: cargo-deny
	@if ! $(CARGO) deny fetch db; then \
	  echo "make audit: the RustSec advisory database (github.com/rustsec/advisory-db) cannot be fetched from this network: advisories were NOT checked"; \
	  exit 2; \
	fi
	$(CARGO) deny check advisories

# Fuzzing (libFuzzer through cargo-fuzz, which needs a nightly toolchain: rustup installs
# one): each target runs FUZZ_SECONDS, its corpus first seeded with valid examples of every
# message, then minimised; the new inputs stay in core/fuzz/corpus and relay/fuzz/corpus
# (commit them), which `make test` replays. A crash leaves its input in */fuzz/artifacts.
# Both fuzz crates build into target/fuzz (the first build takes about ten minutes).
FUZZ_SECONDS ?= 60
CORE_FUZZ_TARGETS := control_msg app_msg sdp sframe invite turn_msg video_rtp
CARGO_FUZZ_VERSION := 0.13.2
FUZZ := $(CARGO) +nightly fuzz
FUZZ_DIR := --target-dir $(CURDIR)/target/fuzz
fuzz: deps
	@rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
	@$(CARGO) fuzz --version 2>/dev/null | grep -q "$(CARGO_FUZZ_VERSION)" || \
	  $(CARGO) install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)
	$(CARGO) test -p conclave-core --test fuzz_corpora -- --ignored write_the_seeds
	$(CARGO) test -p conclave-relay --test fuzz_corpora -- --ignored write_the_seeds
	cd core/fuzz && for t in $(CORE_FUZZ_TARGETS); do \
	  $(FUZZ) run $(FUZZ_DIR) $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=8192 && \
	  $(FUZZ) cmin $(FUZZ_DIR) $$t corpus/$$t || exit 1; \
	done
	cd relay/fuzz && $(FUZZ) run $(FUZZ_DIR) turn_input corpus/turn_input -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096 && \
	  $(FUZZ) cmin $(FUZZ_DIR) turn_input corpus/turn_input

# Long runs over emulated real networks (docs/performance.md): the meeting tests under
# `intercontinental` with a two-minute hold, the five-person soak, the join / first-audio
# medians under every profile, video between three homes under `intercontinental`
# (250 ms RTT, 1 % loss per uplink) with "no incoming video" and a camera turned off, and
# the video loss sweep (1, 5 and 10 % on one
# member's uplink under three profiles: freeze counts and lengths, docs/performance.md).
# Not part of `make test` (about 25 minutes).
SOAK := $(CARGO) test --workspace --test system -- --test-threads=1 --nocapture
soak: build
	CONCLAVE_WAN_PROFILE=intercontinental CONCLAVE_HOLD_SECS=120 $(SOAK) real_networks::
	CONCLAVE_WAN_PROFILE=intercontinental $(SOAK) --ignored real_networks::five_members
	for p in metro continental intercontinental satellite; do \
	  CONCLAVE_WAN_PROFILE=$$p $(SOAK) --ignored real_networks::join_and_first_audio_medians || exit 1; \
	done
	CONCLAVE_WAN_PROFILE=intercontinental $(SOAK) video::three_members_far_apart
	CONCLAVE_WAN_PROFILE=intercontinental $(SOAK) --ignored video_rate::no_incoming_video
	for p in metro continental intercontinental; do for loss in 1 5 10; do \
	  CONCLAVE_WAN_PROFILE=$$p CONCLAVE_VIDEO_LOSS=$$loss $(SOAK) video_rate::video_from_a_lossy_uplink || exit 1; \
	done; done

bench: deps
	$(CARGO) bench -p conclave-core
	$(CARGO) build --release --workspace --bins
	./target/release/meeting-bench all
	./target/release/relay-bench

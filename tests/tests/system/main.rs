//! Conclave's system tests: real `conclave` and `conclave-relay` processes on loopback and
//! in network namespaces, one module per area.
//!
//! They are one test binary (not one per file) because every binary links the whole stack:
//! one link instead of fourteen saves ~1.2 GB of disk and minutes of link time. `make test`
//! runs them one at a time (`--test-threads=1`): each starts several processes whose
//! audio clocks and ICE timers share this machine's two cores, and they never ran side by
//! side as separate binaries either. One area: `cargo test --workspace --test system nat_matrix`.

mod admission;
mod at_rest;
mod audio;
mod audio_loss;
mod backoff;
mod backpressure;
mod demo;
mod discovery;
mod group;
mod gui;
mod identity;
mod mdns;
mod media_path_repair;
mod nat;
mod nat_matrix;
mod presence;
mod real_networks;
mod relay_policy;
mod relay_turn;
mod screen_share;
mod video;
mod video_rate;
mod wan;

//! Replays the TURN fuzz target's corpus (`relay/fuzz/corpus/turn_input`, grown by
//! `make fuzz`) and its seeds through the target, as a regular test.

use std::path::{Path, PathBuf};

use conclave_core::fuzzing::{replay_dir, write_seeds};
use conclave_relay::turn::fuzzing::{seeds, turn_input};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/turn_input")
}

#[test]
fn the_turn_corpus_replays_without_a_crash() {
    let replay = replay_dir(&corpus(), turn_input).expect("the corpus is readable");
    eprintln!(
        "turn_input: {} inputs, {} accepted",
        replay.inputs, replay.accepted
    );
    assert!(replay.accepted > 0, "the corpus reaches no accepted input");
    assert!(
        replay.accepted < replay.inputs,
        "the corpus holds no refused input"
    );
    for seed in seeds() {
        turn_input(&seed);
    }
}

/// `make fuzz` runs this first, so that the corpus starts from valid examples.
#[test]
#[ignore = "writes into the source tree: run by make fuzz"]
fn write_the_seeds_into_the_corpus() {
    let written = write_seeds(&corpus(), &seeds()).expect("corpus writable");
    eprintln!("turn_input: {written} new seeds");
}

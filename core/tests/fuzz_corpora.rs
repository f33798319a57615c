//! Replays every fuzz target's corpus (`core/fuzz/corpus/<target>`, grown by `make fuzz`)
//! and its seeds through the target, as a regular test: an input that once crashed a target
//! and was kept in its corpus can never crash it again unnoticed.

use std::path::{Path, PathBuf};

use conclave_core::fuzzing::{Target, replay_dir, write_seeds};

fn corpus(target: Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target.name())
}

#[test]
fn every_corpus_replays_without_a_crash() {
    for target in Target::ALL {
        let dir = corpus(target);
        let replay = replay_dir(&dir, |data| target.run(data))
            .unwrap_or_else(|e| panic!("{}: cannot read {}: {e}", target.name(), dir.display()));
        eprintln!(
            "{}: {} inputs, {} accepted",
            target.name(),
            replay.inputs,
            replay.accepted
        );
        // A corpus that `make fuzz` grew holds inputs on both sides of every check.
        assert!(
            replay.accepted > 0,
            "{}: the corpus reaches no accepted input",
            target.name()
        );
        assert!(
            replay.accepted < replay.inputs,
            "{}: the corpus holds no refused input",
            target.name()
        );
        for seed in target.seeds() {
            target.run(&seed);
        }
    }
}

/// `make fuzz` runs this first, so that every corpus starts from valid examples of every
/// message.
#[test]
#[ignore = "writes into the source tree: run by make fuzz"]
fn write_the_seeds_into_the_corpora() {
    for target in Target::ALL {
        let written = write_seeds(&corpus(target), &target.seeds()).expect("corpus writable");
        eprintln!("{}: {written} new seeds", target.name());
    }
}

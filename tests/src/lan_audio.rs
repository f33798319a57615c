//! Audio meetings on a [`Lan`]: a member that hosts a meeting sending a tone, and a
//! listener that records what it hears to a WAV file (read it with [`crate::wav_frames`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::Proc;
use crate::netns::Lan;

/// How long the host may take to print its invite.
const INVITE_LIMIT: Duration = Duration::from_secs(20);

/// Host `i` of `lan` (labelled `label`) creates a meeting through the relay at
/// `relay_addr` and sends a `hz` tone; returns it with its invite.
pub fn tone_host(
    lan: &Lan,
    i: usize,
    dir: &Path,
    label: &str,
    hz: u32,
    relay_addr: &str,
) -> anyhow::Result<(Proc, String)> {
    let tone = format!("tone:{hz}");
    let mut host = lan.member(
        i,
        dir,
        label,
        &["--audio-in", &tone, "new", "--relay", relay_addr],
    )?;
    let invite = host.wait_event("invite", INVITE_LIMIT)?["invite"]
        .as_str()
        .context("invite is a string")?
        .to_owned();
    Ok((host, invite))
}

/// Host `i` of `lan` joins `invite` as `listener`, sends silence, records what it hears to
/// `dir/listener.wav` and leaves after `seconds`; returns it with the recording's path.
pub fn recording_listener(
    lan: &Lan,
    i: usize,
    dir: &Path,
    invite: &str,
    seconds: u32,
) -> anyhow::Result<(Proc, PathBuf)> {
    let wav = dir.join("listener.wav");
    let wav_arg = wav.display().to_string();
    let duration = seconds.to_string();
    let listener = lan.member(
        i,
        dir,
        "listener",
        &[
            "--audio-in",
            "silence",
            "--audio-out",
            &wav_arg,
            "join",
            invite,
            "--duration",
            &duration,
        ],
    )?;
    Ok((listener, wav))
}

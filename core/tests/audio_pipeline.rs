//! The whole audio pipeline without a network: two speakers (440 Hz and 660 Hz tones) →
//! Opus (FEC, DTX) → SFrame with per-sender keys → a lossy, jittery channel (5 % loss) →
//! SFrame open → jitter buffer → Opus decode with FEC/PLC → mix → WAV file. The listener's
//! file must contain both tones clearly, without gaps, and the channel must never carry
//! the Opus bytes in the clear.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use conclave_core::group::media_keys::sender_base_key;
use conclave_core::media::audio::codec::{Decoder, Encoder};
use conclave_core::media::audio::denoise::NoiseSuppressor;
use conclave_core::media::audio::jitter::{JitterBuffer, JitterConfig};
use conclave_core::media::audio::mixer::{Mixer, level_dbfs, tone_power};
use conclave_core::media::audio::sink::{AudioSink, WavSink};
use conclave_core::media::audio::source::{AudioSource, Tone, WavSource};
use conclave_core::media::audio::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
use conclave_core::media::crypto::keyring::Opener;
use conclave_core::media::crypto::sframe::Sealer;
use rand::{Rng, SeedableRng};

struct Speaker {
    source: Tone,
    encoder: Encoder,
    sealer: Sealer,
}

#[test]
fn two_tones_arrive_clearly_through_five_percent_loss() {
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let secret = [42u8; 32];
    let mut speakers: Vec<Speaker> = [(1u32, 440.0), (2u32, 660.0)]
        .into_iter()
        .map(|(leaf, hz)| {
            let mut sealer = Sealer::new(leaf);
            sealer
                .install(7, leaf, &sender_base_key(&secret, leaf))
                .unwrap();
            Speaker {
                source: Tone::new(hz, 0.3),
                encoder: Encoder::new().unwrap(),
                sealer,
            }
        })
        .collect();
    let mut opener = Opener::default();
    opener.install(start, 7, secret);
    let mut buffers: BTreeMap<u32, (JitterBuffer, Decoder)> = BTreeMap::new();
    for leaf in [1u32, 2] {
        buffers.insert(
            leaf,
            (
                JitterBuffer::new(JitterConfig::default()),
                Decoder::new().unwrap(),
            ),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listener.wav");
    let mut sink = WavSink::create(&path).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut in_flight: Vec<(Instant, Vec<u8>)> = Vec::new();
    let mut mixer = Mixer::default();
    let (mut sent, mut dropped) = (0u32, 0u32);
    let frames = 250u32; // 5 s
    let frame = Duration::from_millis(20);
    for slot in 0..frames + 20 {
        let now = start + frame * slot;
        if slot < frames {
            for speaker in &mut speakers {
                let mut pcm: Frame = [0; FRAME_SAMPLES];
                speaker.source.next_frame(&mut pcm);
                let packet = speaker.encoder.encode(&pcm).unwrap();
                let sealed = speaker.sealer.seal(&packet).unwrap();
                assert!(
                    packet.len() < 8
                        || !sealed.windows(packet.len()).any(|w| w == packet.as_slice()),
                    "Opus bytes in the clear"
                );
                sent += 1;
                if rng.gen_range(0..100) < 5 {
                    dropped += 1;
                } else {
                    let jitter = Duration::from_millis(rng.gen_range(0..30));
                    in_flight.push((now + jitter, sealed));
                }
            }
        }
        in_flight.sort_by_key(|(at, ..)| *at);
        while in_flight.first().is_some_and(|(at, ..)| *at <= now) {
            let (at, sealed) = in_flight.remove(0);
            let opened = opener.open(at, &sealed).expect("authentic frames open");
            buffers
                .get_mut(&opened.sender)
                .expect("known sender")
                .0
                .push(at, opened.counter, opened.payload);
        }
        for (buffer, decoder) in buffers.values_mut() {
            let mut pcm: Frame = [0; FRAME_SAMPLES];
            if decoder.play(buffer.pop(now), &mut pcm).unwrap().is_some() {
                mixer.add(&pcm);
            }
        }
        let mixed = mixer.take();
        sink.write(&mixed).unwrap();
    }
    sink.finish().unwrap();
    assert!(
        dropped >= 10,
        "the channel really lost packets: {dropped} of {sent}"
    );

    // Read back what the listener heard.
    let mut heard = WavSource::open(&path).unwrap();
    let mut samples = Vec::new();
    let mut pcm: Frame = [0; FRAME_SAMPLES];
    while heard.next_frame(&mut pcm) {
        samples.extend_from_slice(&pcm);
    }
    let body = &samples[SAMPLE_RATE as usize / 2..samples.len() - SAMPLE_RATE as usize / 2];
    let (p440, p660, p1000) = (
        tone_power(body, 440.0),
        tone_power(body, 660.0),
        tone_power(body, 1000.0),
    );
    assert!(
        p440 > 50.0 * p1000 && p660 > 50.0 * p1000,
        "both tones clearly present: {p440} {p660} {p1000}"
    );
    // No gap: every 20 ms of the body has signal.
    let silent = body
        .chunks(FRAME_SAMPLES)
        .filter(|f| level_dbfs(f) < -40.0)
        .count();
    assert_eq!(silent, 0, "silent frames in the middle of the call");
    for (buffer, _) in buffers.values() {
        let stats = buffer.stats();
        assert!(
            stats.lost > 0 && stats.recovered > 0,
            "loss was handled by FEC/PLC: {stats:?}"
        );
    }
    assert_eq!(
        opener.stats().forged + opener.stats().replayed + opener.stats().unknown_key,
        0
    );
}

/// RMS envelope of `samples` in 20 ms windows.
fn envelope(samples: &[i16]) -> Vec<f64> {
    samples
        .chunks(FRAME_SAMPLES)
        .map(|c| {
            (c.iter().map(|s| f64::from(*s) * f64::from(*s)).sum::<f64>() / c.len() as f64).sqrt()
        })
        .collect()
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ma, mb) = (
        a.iter().sum::<f64>() / n as f64,
        b.iter().sum::<f64>() / n as f64,
    );
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let (va, vb): (f64, f64) = (
        a.iter().map(|x| (x - ma).powi(2)).sum(),
        b.iter().map(|y| (y - mb).powi(2)).sum(),
    );
    cov / (va.sqrt() * vb.sqrt()).max(1e-9)
}

/// A sentence of synthetic speech (espeak-ng), 48 kHz mono.
fn speech() -> Vec<i16> {
    let dir = tempfile::tempdir().unwrap();
    let speech = dir.path().join("speech.wav");
    let status = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&speech)
        .arg("Conclave keeps this meeting private. Only the invited members can hear what is said.")
        .status()
        .expect("espeak-ng is installed (make test installs it)");
    assert!(status.success());
    let mut source = WavSource::open(&speech).unwrap();
    let mut input = Vec::new();
    let mut pcm: Frame = [0; FRAME_SAMPLES];
    while source.next_frame(&mut pcm) {
        input.extend_from_slice(&pcm);
    }
    input
}

/// Real speech (espeak-ng) through Opus, SFrame, 5 % loss, the jitter buffer and FEC/PLC
/// keeps its shape: the syllable envelope of what comes out follows what went in.
#[test]
fn speech_from_a_wav_file_comes_out_intelligible_through_loss() {
    let input = speech();

    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut sealer = Sealer::new(1);
    sealer.install(1, 1, &sender_base_key(&[9; 32], 1)).unwrap();
    let mut opener = Opener::default();
    opener.install(start, 1, [9; 32]);
    let (mut encoder, mut decoder) = (Encoder::new().unwrap(), Decoder::new().unwrap());
    let mut jitter = JitterBuffer::new(JitterConfig::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let frame = Duration::from_millis(20);
    let frames = input.len() / FRAME_SAMPLES;
    let mut output = Vec::new();
    for slot in 0..frames + 20 {
        let now = start + frame * slot as u32;
        if slot < frames {
            let mut pcm: Frame = [0; FRAME_SAMPLES];
            pcm.copy_from_slice(&input[slot * FRAME_SAMPLES..(slot + 1) * FRAME_SAMPLES]);
            let sealed = sealer.seal(&encoder.encode(&pcm).unwrap()).unwrap();
            if rng.gen_range(0..100) >= 5 {
                let opened = opener.open(now, &sealed).unwrap();
                jitter.push(now, opened.counter, opened.payload);
            }
        }
        let mut pcm: Frame = [0; FRAME_SAMPLES];
        decoder.play(jitter.pop(now), &mut pcm).unwrap();
        output.extend_from_slice(&pcm);
    }
    assert!(jitter.stats().lost > 0, "the channel lost frames");
    // Align by the best lag (the pipeline delay) and compare syllable envelopes.
    let (a, b) = (envelope(&input), envelope(&output));
    let best = (0..15)
        .map(|lag| correlation(&a, &b[lag..]))
        .fold(f64::MIN, f64::max);
    assert!(best > 0.9, "speech envelope correlation {best:.3}");
}

/// Speech over loud fan-like background noise through the noise suppressor: the pauses
/// (noise only) become much quieter while the speech keeps its level, i.e. the
/// speech-to-noise ratio improves by well over 10 dB.
#[test]
fn noise_suppression_removes_background_noise_and_keeps_speech() {
    let clean = speech();
    let frames = clean.len() / FRAME_SAMPLES;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut lowpass = 0.0f64;
    let mut noisy: Vec<i16> = clean[..frames * FRAME_SAMPLES]
        .iter()
        .map(|s| {
            lowpass = 0.99 * lowpass + 0.1 * rng.gen_range(-1.0..1.0);
            (f64::from(*s) + lowpass * 1500.0).clamp(-32768.0, 32767.0) as i16
        })
        .collect();
    let mut suppressor = NoiseSuppressor::new();
    let mut denoised = noisy.clone();
    for frame in denoised.chunks_exact_mut(FRAME_SAMPLES) {
        let frame: &mut Frame = frame.try_into().unwrap();
        suppressor.process(frame);
    }
    noisy.truncate(denoised.len());
    // Frames ranked by the clean speech's level: the quietest fifth are pauses (noise only),
    // the loudest half are speech. Skip the first half second (RNNoise settling).
    let clean_envelope = envelope(&clean[..frames * FRAME_SAMPLES]);
    let mut order: Vec<usize> = (25..frames).collect();
    order.sort_by(|a, b| clean_envelope[*a].total_cmp(&clean_envelope[*b]));
    let level = |signal: &[i16], which: &[usize]| {
        which
            .iter()
            .map(|i| {
                f64::from(level_dbfs(
                    &signal[i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES],
                ))
            })
            .sum::<f64>()
            / which.len() as f64
    };
    let (pauses, speaking) = (&order[..order.len() / 5], &order[order.len() / 2..]);
    let (noise_in, noise_out) = (level(&noisy, pauses), level(&denoised, pauses));
    let (speech_in, speech_out) = (level(&noisy, speaking), level(&denoised, speaking));
    eprintln!(
        "pauses {noise_in:.1} -> {noise_out:.1} dBFS; speech {speech_in:.1} -> {speech_out:.1} dBFS"
    );
    assert!(
        noise_in - noise_out > 20.0,
        "pauses {noise_in:.1} -> {noise_out:.1} dBFS"
    );
    assert!(
        speech_in - speech_out < 4.0,
        "speech {speech_in:.1} -> {speech_out:.1} dBFS"
    );
}

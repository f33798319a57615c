//! VP8 over RTP (RFC 7741), sans-IO: the payload descriptor, and reassembly of a stream's
//! packets into the sealed frames they carry, in order, waiting a while for repairs.
//!
//! The sender seals each encoded frame whole (SFrame) and the WebRTC stack's VP8 payloader
//! splits it into packets, each with a payload descriptor in front; the descriptor stays
//! outside the seal, so packetization, loss detection and (later) a forwarding unit work
//! without keys. The last packet of a frame carries the RTP marker bit.
//!
//! [`Assembler`] collects one stream's packets, several frames at a time (by RTP
//! timestamp). A frame is complete when its packets run without a gap from the one marked
//! "start of frame" (`S`, partition 0) to the one with the marker bit, in any arrival
//! order. Frames come out in order: a complete frame waits while anything before it is
//! missing — a lost packet the transport's NACK may still bring back — for at most the
//! *repair wait* ([`Assembler::set_repair_wait`]: about a round trip plus the NACK
//! interval). When the wait runs out, what is missing is given up and counted, and the
//! next frame out is flagged `after_loss`, so the receiver knows a delta frame may not
//! decode and asks for a keyframe.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Most packets one frame may span (a 1 MiB keyframe at 1,100 bytes per packet is ~950).
pub const MAX_PACKETS_PER_FRAME: usize = 1024;
/// Largest frame reassembled, in bytes.
pub const MAX_FRAME_BYTES: usize = crate::media::crypto::sframe::MAX_VIDEO_PAYLOAD + 1024;
/// Most frames held while waiting for a repair (two seconds at 30 fps); beyond it the
/// oldest is given up.
pub const MAX_PENDING_FRAMES: usize = 60;
/// Most bytes held while waiting for a repair.
pub const MAX_PENDING_BYTES: usize = 4 * MAX_FRAME_BYTES;
/// How long a complete frame waits for a missing one before it, until told otherwise.
pub const DEFAULT_REPAIR_WAIT: Duration = Duration::from_millis(300);

/// URI of Conclave's frame-information RTP header extension (negotiated in SDP like any
/// other).
pub const FRAME_INFO_URI: &str = "urn:conclave:rtp-hdrext:video-frame-info:1";

/// What a forwarding unit needs to know of a video frame without its keys, carried in
/// every packet of the frame as an RTP header extension, outside the seal (in the spirit of
/// the AV1 Dependency Descriptor): whether the frame is decodable alone, its layers, and
/// its number, so that a unit can drop layers, notice a missing frame, and switch a
/// receiver on a keyframe. Three bytes: `K S S S T T T 0` (keyframe bit, spatial id,
/// temporal id), then the frame number (big endian, wrapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameInfo {
    /// The frame needs no earlier one (a keyframe).
    pub keyframe: bool,
    /// Spatial layer (0: the only one today).
    pub spatial: u8,
    /// Temporal layer (0: the only one today).
    pub temporal: u8,
    /// The sender's frame counter.
    pub number: u16,
}

impl FrameInfo {
    /// Encoded size.
    pub const LEN: usize = 3;

    /// The three bytes on the wire.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let [high, low] = self.number.to_be_bytes();
        [
            u8::from(self.keyframe) << 7 | (self.spatial & 0x7) << 4 | (self.temporal & 0x7) << 1,
            high,
            low,
        ]
    }

    /// Reads the three bytes back; `None` if the length is wrong.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let &[flags, high, low] = bytes else {
            return None;
        };
        Some(Self {
            keyframe: flags & 0x80 != 0,
            spatial: flags >> 4 & 0x7,
            temporal: flags >> 1 & 0x7,
            number: u16::from_be_bytes([high, low]),
        })
    }
}

/// Why a packet was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// The payload descriptor is cut short or the packet carries no data.
    #[error("malformed VP8 payload descriptor")]
    Malformed,
}

/// The VP8 payload descriptor of one packet (RFC 7741 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// `S`: the packet starts a partition.
    pub start: bool,
    /// The partition index (`PID`).
    pub partition: u8,
    /// The picture id, if the sender numbers pictures.
    pub picture_id: Option<u16>,
    /// Bytes of descriptor before the data.
    pub len: usize,
}

impl Descriptor {
    /// Whether this packet starts a frame (`S` set in partition 0).
    pub fn starts_frame(&self) -> bool {
        self.start && self.partition == 0
    }
}

/// Parses the descriptor at the front of `payload`; the packet must carry at least one
/// byte of data after it.
pub fn parse_descriptor(payload: &[u8]) -> Result<Descriptor, RtpError> {
    let mut at = 0usize;
    let mut next = || {
        let byte = *payload.get(at).ok_or(RtpError::Malformed)?;
        at += 1;
        Ok::<u8, RtpError>(byte)
    };
    let first = next()?;
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    let mut picture_id = None;
    if extended {
        let flags = next()?;
        let (has_picture_id, has_tl0, has_tid, has_key_idx) = (
            flags & 0x80 != 0,
            flags & 0x40 != 0,
            flags & 0x20 != 0,
            flags & 0x10 != 0,
        );
        if has_picture_id {
            let high = next()?;
            picture_id = Some(if high & 0x80 != 0 {
                u16::from(high & 0x7f) << 8 | u16::from(next()?)
            } else {
                u16::from(high)
            });
        }
        if has_tl0 {
            next()?;
        }
        if has_tid || has_key_idx {
            next()?;
        }
    }
    if at >= payload.len() {
        return Err(RtpError::Malformed);
    }
    Ok(Descriptor {
        start,
        partition,
        picture_id,
        len: at,
    })
}

/// A frame put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledFrame {
    /// Its RTP timestamp (90 kHz).
    pub timestamp: u32,
    /// The frame (sealed) as the sender handed it to its payloader.
    pub data: Vec<u8>,
    /// Packets were lost since the previous frame out: the decoder may lack a reference.
    pub after_loss: bool,
    /// When its first and its last packet arrived.
    pub arrival: Arrival,
}

/// When a frame's packets arrived: the first and the last to come (not necessarily the
/// first and last by sequence number, after a retransmission).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When the first packet to come arrived.
    pub first: Instant,
    /// When the last packet to come arrived.
    pub last: Instant,
}

/// What the assembler saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblyStats {
    /// Frames put together.
    pub frames: u64,
    /// Frames given up (a packet never came, even after the repair wait).
    pub incomplete: u64,
    /// Packets refused (bad descriptor).
    pub malformed: u64,
    /// Packets too late for their frame, or seen twice.
    pub late: u64,
    /// Frames dropped for exceeding [`MAX_PACKETS_PER_FRAME`] or [`MAX_FRAME_BYTES`].
    pub oversized: u64,
    /// Frames that came out only after waiting for a repair (a retransmitted packet).
    pub repaired: u64,
}

/// One data fragment of a frame being assembled.
#[derive(Debug)]
struct Fragment {
    starts_frame: bool,
    marker: bool,
    data: Vec<u8>,
}

/// A frame being assembled: its fragments by extended sequence number.
#[derive(Debug)]
struct Pending {
    timestamp: u32,
    fragments: BTreeMap<u64, Fragment>,
    bytes: usize,
    arrival: Arrival,
}

impl Pending {
    /// The first and last sequence numbers, if the fragments run without a gap from a
    /// start to a marker.
    fn complete(&self) -> Option<(u64, u64)> {
        let (&first, head) = self.fragments.first_key_value()?;
        let (&last, tail) = self.fragments.last_key_value()?;
        (head.starts_frame && tail.marker && last - first + 1 == self.fragments.len() as u64)
            .then_some((first, last))
    }
}

/// Reassembles one VP8 stream's frames.
#[derive(Debug)]
pub struct Assembler {
    /// Frames being assembled, by extended RTP timestamp.
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    /// Extended sequence number and timestamp of the newest packet seen (for unwrapping).
    highest_seq: Option<u64>,
    highest_timestamp: Option<u64>,
    /// Everything up to here (sequence number, timestamp) was delivered or given up.
    done_seq: Option<u64>,
    done_timestamp: Option<u64>,
    /// Since when a complete frame waits behind a missing one.
    blocked_since: Option<Instant>,
    /// Something was given up since the last frame delivered.
    lost: bool,
    repair_wait: Duration,
    stats: AssemblyStats,
}

impl Default for Assembler {
    fn default() -> Self {
        Self {
            pending: BTreeMap::new(),
            pending_bytes: 0,
            highest_seq: None,
            highest_timestamp: None,
            done_seq: None,
            done_timestamp: None,
            blocked_since: None,
            lost: false,
            repair_wait: DEFAULT_REPAIR_WAIT,
            stats: AssemblyStats::default(),
        }
    }
}

impl Assembler {
    /// What was assembled and dropped so far.
    pub fn stats(&self) -> AssemblyStats {
        self.stats
    }

    /// Starts over on a new RTP stream (the sender's video moved to another connection):
    /// the frames being put together are dropped; the counts and the repair wait stay.
    pub fn restart(&mut self) {
        *self = Self {
            stats: self.stats,
            repair_wait: self.repair_wait,
            ..Self::default()
        };
    }

    /// How long a complete frame may wait for a missing one before it (about a round trip
    /// to the sender plus the NACK interval: the time a retransmission takes).
    pub fn set_repair_wait(&mut self, wait: Duration) {
        self.repair_wait = wait;
    }

    /// Takes one packet (its RTP sequence number, timestamp, marker bit and payload) at
    /// `now`; returns the frames that are now due, in order (usually none or one; a burst
    /// after a repair).
    pub fn push(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Vec<AssembledFrame> {
        let Ok(descriptor) = parse_descriptor(payload) else {
            self.stats.malformed += 1;
            return Vec::new();
        };
        let seq = unwrap(&mut self.highest_seq, u64::from(seq), 16);
        let extended = unwrap(&mut self.highest_timestamp, u64::from(timestamp), 32);
        let too_old = self.done_seq.is_some_and(|done| seq <= done)
            || self.done_timestamp.is_some_and(|done| extended <= done);
        if too_old {
            self.stats.late += 1;
            return Vec::new();
        }
        let frame = self.pending.entry(extended).or_insert_with(|| Pending {
            timestamp,
            fragments: BTreeMap::new(),
            bytes: 0,
            arrival: Arrival {
                first: now,
                last: now,
            },
        });
        if frame.fragments.contains_key(&seq) {
            self.stats.late += 1;
            return Vec::new();
        }
        frame.arrival.last = frame.arrival.last.max(now);
        let data = &payload[descriptor.len..];
        frame.bytes += data.len();
        self.pending_bytes += data.len();
        frame.fragments.insert(
            seq,
            Fragment {
                starts_frame: descriptor.starts_frame(),
                marker,
                data: data.to_vec(),
            },
        );
        if frame.fragments.len() > MAX_PACKETS_PER_FRAME || frame.bytes > MAX_FRAME_BYTES {
            self.stats.oversized += 1;
            self.give_up_through(extended);
        }
        while self.pending.len() > MAX_PENDING_FRAMES || self.pending_bytes > MAX_PENDING_BYTES {
            let Some(&oldest) = self.pending.keys().next() else {
                break;
            };
            self.give_up_through(oldest);
        }
        self.poll(now)
    }

    /// The frames due at `now`: complete ones with nothing missing before them, and those
    /// whose wait for a repair ran out (what is missing before them is given up).
    pub fn poll(&mut self, now: Instant) -> Vec<AssembledFrame> {
        let mut out = Vec::new();
        loop {
            let Some((&key, frame)) = self.pending.first_key_value() else {
                self.blocked_since = None;
                break;
            };
            if let Some((first, _)) = frame.complete()
                && self.done_seq.is_none_or(|done| first == done + 1)
                && let Some(frame) = self.pending.remove(&key)
            {
                out.push(self.deliver(key, frame));
                continue;
            }
            // Something before the oldest complete frame is missing.
            let Some(next_complete) = self
                .pending
                .iter()
                .find_map(|(&key, frame)| frame.complete().map(|(first, _)| (key, first)))
            else {
                break;
            };
            let since = *self.blocked_since.get_or_insert(now);
            if now.saturating_duration_since(since) < self.repair_wait {
                break;
            }
            // The wait ran out: give up what is missing before that frame.
            let (complete_key, first) = next_complete;
            let earlier: Vec<u64> = self
                .pending
                .range(..complete_key)
                .map(|(&k, _)| k)
                .collect();
            for key in earlier {
                self.give_up_through(key);
            }
            self.lost = true;
            self.done_seq = Some(first - 1);
            self.blocked_since = None;
        }
        out
    }

    /// Delivers `frame`, complete, taken from `key`.
    fn deliver(&mut self, key: u64, frame: Pending) -> AssembledFrame {
        self.pending_bytes -= frame.bytes;
        let last = frame.fragments.keys().next_back().copied();
        let mut data = Vec::with_capacity(frame.bytes);
        for fragment in frame.fragments.values() {
            data.extend_from_slice(&fragment.data);
        }
        if self.blocked_since.take().is_some() {
            self.stats.repaired += 1;
        }
        self.done_seq = last.or(self.done_seq);
        self.done_timestamp = Some(key);
        self.stats.frames += 1;
        AssembledFrame {
            timestamp: frame.timestamp,
            data,
            after_loss: std::mem::take(&mut self.lost),
            arrival: frame.arrival,
        }
    }

    /// Gives up the frame at `key` and everything pending before it.
    fn give_up_through(&mut self, key: u64) {
        let given_up: Vec<u64> = self.pending.range(..=key).map(|(&k, _)| k).collect();
        for key in given_up {
            if let Some(frame) = self.pending.remove(&key) {
                self.pending_bytes -= frame.bytes;
                self.stats.incomplete += 1;
                if let Some(&last) = frame.fragments.keys().next_back() {
                    self.done_seq = Some(self.done_seq.map_or(last, |done| done.max(last)));
                }
            }
            self.done_timestamp = Some(self.done_timestamp.map_or(key, |done| done.max(key)));
        }
        self.lost = true;
    }
}

/// The extended (64-bit) value of a `bits`-bit counter closest to the highest seen, which
/// it updates.
fn unwrap(highest: &mut Option<u64>, value: u64, bits: u32) -> u64 {
    let cycle = 1u64 << bits;
    let extended = match *highest {
        None => value + cycle,
        Some(top) => {
            let base = top & !(cycle - 1);
            [base.wrapping_sub(cycle), base, base + cycle]
                .into_iter()
                .map(|start| start.wrapping_add(value))
                .min_by_key(|candidate| candidate.abs_diff(top))
                .unwrap_or(top)
        }
    };
    if highest.is_none_or(|top| extended > top) {
        *highest = Some(extended);
    }
    extended
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rtc::rtp::codec::vp8::Vp8Payloader;
    use rtc::rtp::packetizer::Payloader;

    use super::*;
    use crate::test_clock::t0;

    /// Splits `frame` into the payloads the WebRTC stack's VP8 payloader makes (MTU 1,200).
    fn packets(frame: &[u8], picture_id: bool) -> Vec<Vec<u8>> {
        let mut payloader = Vp8Payloader::default();
        payloader.enable_picture_id = picture_id;
        payloader
            .payload(1200, &Bytes::copy_from_slice(frame))
            .expect("payloads")
            .into_iter()
            .map(|p| p.to_vec())
            .collect()
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// Feeds `frames` in order from sequence number `seq`, 3000 ticks apart, one frame
    /// every 33 ms from `*at`; `order` says which packets of each frame arrive, in what
    /// order. Returns what came out.
    fn feed(
        assembler: &mut Assembler,
        seq: &mut u16,
        frames: &[Vec<u8>],
        ts: &mut u32,
        at: &mut Instant,
        mut order: impl FnMut(usize) -> Vec<usize>,
    ) -> Vec<AssembledFrame> {
        let mut out = Vec::new();
        for frame in frames {
            let parts = packets(frame, true);
            let count = parts.len();
            for i in order(count) {
                let marker = i == count - 1;
                let packet_seq = seq.wrapping_add(i as u16);
                out.extend(assembler.push(*at, packet_seq, *ts, marker, &parts[i]));
            }
            *seq = seq.wrapping_add(count as u16);
            *ts = ts.wrapping_add(3000);
            *at += Duration::from_millis(33);
        }
        out
    }

    #[test]
    fn frames_of_every_size_come_back_whole_across_a_sequence_wrap() {
        let mut assembler = Assembler::default();
        let frames: Vec<Vec<u8>> = [1usize, 2, 3, 1199, 1200, 1201, 5000, 50_000]
            .iter()
            .enumerate()
            .map(|(i, &len)| frame(len, i as u8))
            .collect();
        let (mut seq, mut ts, mut at) = (65_500u16, u32::MAX - 7000, t0());
        let out = feed(&mut assembler, &mut seq, &frames, &mut ts, &mut at, |n| {
            (0..n).collect()
        });
        let data: Vec<Vec<u8>> = out.iter().map(|f| f.data.clone()).collect();
        assert_eq!(data, frames);
        assert!(out.iter().all(|f| !f.after_loss));
        assert_eq!(assembler.stats().frames, frames.len() as u64);
    }

    #[test]
    fn packets_of_a_frame_may_arrive_in_any_order_and_twice() {
        let mut assembler = Assembler::default();
        let frames = vec![frame(6000, 1), frame(3000, 2)];
        let (mut seq, mut ts, mut at) = (10u16, 0u32, t0());
        let out = feed(&mut assembler, &mut seq, &frames, &mut ts, &mut at, |n| {
            let mut order: Vec<usize> = (0..n).rev().collect();
            order.push(0);
            order
        });
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, frames[0]);
        assert_eq!(out[1].data, frames[1]);
        assert_eq!(assembler.stats().late, 2, "the duplicates");
    }

    /// Four frames from `start`, 33 ms apart; the first loses its second packet.
    fn with_a_lost_packet(
        assembler: &mut Assembler,
        start: Instant,
    ) -> (Vec<Vec<u8>>, Vec<AssembledFrame>) {
        let frames = vec![frame(4000, 1), frame(4000, 2), frame(500, 3), frame(500, 4)];
        let (mut seq, mut ts, mut at) = (0u16, 0u32, start);
        let mut first = true;
        let out = feed(assembler, &mut seq, &frames, &mut ts, &mut at, |n| {
            let order = if first {
                vec![0, 2, 3]
            } else {
                (0..n).collect()
            };
            first = false;
            order
        });
        (frames, out)
    }

    #[test]
    fn a_retransmitted_packet_within_the_repair_wait_lets_everything_out_in_order() {
        let mut assembler = Assembler::default();
        let start = t0();
        let (frames, out) = with_a_lost_packet(&mut assembler, start);
        assert!(out.is_empty(), "later frames wait for the missing packet");
        // The retransmission comes 80 ms after the last frame.
        let repaired = assembler.push(
            start + Duration::from_millis(180),
            1,
            0,
            false,
            &packets(&frames[0], true)[1],
        );
        let data: Vec<&Vec<u8>> = repaired.iter().map(|f| &f.data).collect();
        assert_eq!(data, frames.iter().collect::<Vec<_>>());
        assert!(repaired.iter().all(|f| !f.after_loss));
        // The repaired frame's packets span from its first to the retransmission; the
        // others arrived within their own instant.
        let arrival = repaired[0].arrival;
        assert_eq!(
            (arrival.first, arrival.last),
            (start, start + Duration::from_millis(180))
        );
        assert_eq!(repaired[1].arrival.first, repaired[1].arrival.last);
        let stats = assembler.stats();
        assert_eq!((stats.frames, stats.incomplete, stats.repaired), (4, 0, 1));
    }

    #[test]
    fn a_packet_lost_for_good_gives_its_frame_up_after_the_repair_wait() {
        let mut assembler = Assembler::default();
        assembler.set_repair_wait(Duration::from_millis(200));
        let (frames, out) = with_a_lost_packet(&mut assembler, t0());
        assert!(out.is_empty());
        // The second frame was complete at 33 ms: it waits until 233 ms.
        assert!(assembler.poll(t0() + Duration::from_millis(230)).is_empty());
        let out = assembler.poll(t0() + Duration::from_millis(240));
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].data, frames[1]);
        assert!(out[0].after_loss, "the frame after a loss is flagged");
        assert!(!out[1].after_loss && !out[2].after_loss);
        assert_eq!(assembler.stats().incomplete, 1);
        // The lost packet arriving now is too late.
        let at = t0() + Duration::from_millis(300);
        assert!(
            assembler
                .push(at, 1, 0, false, &packets(&frames[0], true)[1])
                .is_empty()
        );
        assert_eq!(assembler.stats().late, 1);
    }

    #[test]
    fn a_whole_frame_lost_is_noticed_by_the_gap_it_leaves() {
        let mut assembler = Assembler::default();
        let frames = vec![frame(500, 1), frame(500, 2), frame(500, 3)];
        let (mut seq, mut ts, mut at) = (0u16, 0u32, t0());
        let mut n = 0;
        let out = feed(
            &mut assembler,
            &mut seq,
            &frames,
            &mut ts,
            &mut at,
            |count| {
                n += 1;
                if n == 2 {
                    Vec::new()
                } else {
                    (0..count).collect()
                }
            },
        );
        assert_eq!(
            out.len(),
            1,
            "the third frame waits: what came between is missing"
        );
        let out = assembler.poll(t0() + Duration::from_secs(1));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, frames[2]);
        assert!(out[0].after_loss);
    }

    #[test]
    fn what_waits_is_bounded() {
        let mut assembler = Assembler::default();
        assembler.set_repair_wait(Duration::from_secs(3600));
        let frames: Vec<Vec<u8>> = (0..100).map(|i| frame(3000, i as u8)).collect();
        let (mut seq, mut ts, mut at) = (0u16, 0u32, t0());
        let mut first = true;
        // The first frame never completes; the others wait behind it, at most 60 frames.
        let out = feed(&mut assembler, &mut seq, &frames, &mut ts, &mut at, |n| {
            let order = if first { vec![0, 2] } else { (0..n).collect() };
            first = false;
            order
        });
        assert!(out.len() >= 99 - MAX_PENDING_FRAMES, "{}", out.len());
        assert!(out[0].after_loss);
    }

    #[test]
    fn bad_packets_are_counted_and_change_nothing() {
        let mut assembler = Assembler::default();
        for bad in [
            &[][..],
            &[0x10][..],
            &[0x90, 0x80][..],
            &[0x90, 0x80, 0x81][..],
        ] {
            assert!(assembler.push(t0(), 1, 0, true, bad).is_empty());
        }
        assert_eq!(assembler.stats().malformed, 4);
        let whole = packets(&frame(10, 0), false);
        let out = assembler.push(t0(), 2, 0, true, &whole[0]);
        assert_eq!(
            out.into_iter().map(|f| f.data).collect::<Vec<_>>(),
            vec![frame(10, 0)]
        );
    }

    #[test]
    fn a_frame_without_its_start_never_comes_out() {
        let mut assembler = Assembler::default();
        let parts = packets(&frame(3000, 0), false);
        assert!(assembler.push(t0(), 2, 0, false, &parts[1]).is_empty());
        assert!(assembler.push(t0(), 3, 0, true, &parts[2]).is_empty());
        assert_eq!(assembler.stats().frames, 0);
    }

    #[test]
    fn frame_info_round_trips_and_refuses_a_wrong_length() {
        let info = FrameInfo {
            keyframe: true,
            spatial: 2,
            temporal: 5,
            number: 0xbeef,
        };
        assert_eq!(info.encode(), [0xa0 | 0x0a, 0xbe, 0xef]);
        assert_eq!(FrameInfo::decode(&info.encode()), Some(info));
        assert_eq!(FrameInfo::decode(&[0x80, 0]), None);
        assert_eq!(FrameInfo::decode(&[0x80, 0, 0, 0]), None);
    }

    #[test]
    fn descriptors_with_every_extension_parse() {
        let d = parse_descriptor(&[0x90, 0xf0, 0x81, 0x02, 0x05, 0x40, 0xaa]).expect("valid");
        assert!(d.starts_frame());
        assert_eq!(d.picture_id, Some(0x0102));
        assert_eq!(d.len, 6);
        let short = parse_descriptor(&[0x10, 0xaa]).expect("valid");
        assert_eq!((short.len, short.picture_id), (1, None));
        assert_eq!(
            parse_descriptor(&[0x90, 0xf0, 0x81]),
            Err(RtpError::Malformed)
        );
    }
}

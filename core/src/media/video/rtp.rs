//! VP8 over RTP (RFC 7741), sans-IO: the payload descriptor, and reassembly of a frame's
//! packets into the sealed frame they carry.
//!
//! The sender seals each encoded frame whole (SFrame) and the WebRTC stack's VP8 payloader
//! splits it into packets, each with a payload descriptor in front; the descriptor stays
//! outside the seal, so packetization, loss detection and (later) a forwarding unit work
//! without keys. The last packet of a frame carries the RTP marker bit.
//!
//! [`Assembler`] collects one stream's packets: a frame is complete when its packets run
//! without a gap from the one marked "start of frame" (`S`, partition 0) to the one with the
//! marker bit, in any arrival order. A frame still incomplete when a newer frame's packet
//! arrives is given up and counted; the next frame out is then flagged `after_loss`, so the
//! receiver knows a delta frame may not decode and asks for a keyframe. So is a frame whose
//! first packet does not follow the last packet delivered (a whole frame went missing).

use std::collections::BTreeMap;

/// Most packets one frame may span (a 1 MiB keyframe at 1,100 bytes per packet is ~950).
pub const MAX_PACKETS_PER_FRAME: usize = 1024;
/// Largest frame reassembled, in bytes.
pub const MAX_FRAME_BYTES: usize = crate::media::crypto::sframe::MAX_VIDEO_PAYLOAD + 1024;

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
}

/// What the assembler saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblyStats {
    /// Frames put together.
    pub frames: u64,
    /// Frames given up (a packet never came).
    pub incomplete: u64,
    /// Packets refused (bad descriptor).
    pub malformed: u64,
    /// Packets too late for their frame, or seen twice.
    pub late: u64,
    /// Frames dropped for exceeding [`MAX_PACKETS_PER_FRAME`] or [`MAX_FRAME_BYTES`].
    pub oversized: u64,
}

/// One data fragment of the frame being assembled.
#[derive(Debug)]
struct Fragment {
    starts_frame: bool,
    marker: bool,
    data: Vec<u8>,
}

/// Reassembles one VP8 stream's frames.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The frame being assembled: its timestamp and fragments by extended sequence number.
    timestamp: Option<u32>,
    fragments: BTreeMap<u64, Fragment>,
    bytes: usize,
    /// Extended sequence number of the last packet seen (for unwrapping).
    highest: Option<u64>,
    /// Everything up to here was either delivered or given up.
    done_through: Option<u64>,
    /// A frame was given up since the last one delivered.
    lost: bool,
    stats: AssemblyStats,
}

impl Assembler {
    /// What was assembled and dropped so far.
    pub fn stats(&self) -> AssemblyStats {
        self.stats
    }

    /// Takes one packet (its RTP sequence number, timestamp, marker bit and payload); returns
    /// the frame it completes, if any.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Option<AssembledFrame> {
        let Ok(descriptor) = parse_descriptor(payload) else {
            self.stats.malformed += 1;
            return None;
        };
        let seq = self.extend(seq);
        if self.done_through.is_some_and(|done| seq <= done) {
            self.stats.late += 1;
            return None;
        }
        if self.timestamp != Some(timestamp) {
            if self
                .timestamp
                .is_some_and(|current| is_older(timestamp, current))
            {
                self.stats.late += 1;
                return None;
            }
            self.give_up();
            self.timestamp = Some(timestamp);
        }
        if self.fragments.contains_key(&seq) {
            self.stats.late += 1;
            return None;
        }
        let data = &payload[descriptor.len..];
        self.bytes += data.len();
        self.fragments.insert(
            seq,
            Fragment {
                starts_frame: descriptor.starts_frame(),
                marker,
                data: data.to_vec(),
            },
        );
        if self.fragments.len() > MAX_PACKETS_PER_FRAME || self.bytes > MAX_FRAME_BYTES {
            self.stats.oversized += 1;
            self.drop_frame();
            self.lost = true;
            return None;
        }
        self.complete()
    }

    /// The frame, if its fragments run from a start to a marker without a gap.
    fn complete(&mut self) -> Option<AssembledFrame> {
        let (&first, head) = self.fragments.first_key_value()?;
        let (&last, tail) = self.fragments.last_key_value()?;
        if !head.starts_frame || !tail.marker || last - first + 1 != self.fragments.len() as u64 {
            return None;
        }
        let timestamp = self.timestamp?;
        // A gap before this frame's first packet: a whole frame (or a tail) was lost.
        if self.done_through.is_some_and(|done| first != done + 1) {
            self.lost = true;
        }
        let mut data = Vec::with_capacity(self.bytes);
        for fragment in self.fragments.values() {
            data.extend_from_slice(&fragment.data);
        }
        self.drop_frame();
        self.done_through = Some(last);
        self.stats.frames += 1;
        Some(AssembledFrame {
            timestamp,
            data,
            after_loss: std::mem::take(&mut self.lost),
        })
    }

    /// Gives up the frame being assembled, if any.
    fn give_up(&mut self) {
        if let Some((&last, _)) = self.fragments.last_key_value() {
            self.stats.incomplete += 1;
            self.lost = true;
            self.done_through = Some(self.done_through.map_or(last, |done| done.max(last)));
        }
        self.drop_frame();
    }

    fn drop_frame(&mut self) {
        self.fragments.clear();
        self.bytes = 0;
        self.timestamp = None;
    }

    /// The 64-bit sequence number closest to the highest seen.
    fn extend(&mut self, seq: u16) -> u64 {
        let extended = match self.highest {
            None => u64::from(seq) + (1 << 16),
            Some(highest) => {
                let base = highest & !0xffff;
                [base.wrapping_sub(1 << 16), base, base + (1 << 16)]
                    .into_iter()
                    .map(|cycle| cycle + u64::from(seq))
                    .min_by_key(|candidate| candidate.abs_diff(highest))
                    .unwrap_or(highest)
            }
        };
        if self.highest.is_none_or(|highest| extended > highest) {
            self.highest = Some(extended);
        }
        extended
    }
}

/// Whether RTP timestamp `a` comes before `b` (modulo 2^32).
fn is_older(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 1 << 31
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rtc::rtp::codec::vp8::Vp8Payloader;
    use rtc::rtp::packetizer::Payloader;

    use super::*;

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

    /// Feeds `frames` in order from sequence number `seq`, 3000 ticks apart; returns what
    /// came out.
    fn feed(
        assembler: &mut Assembler,
        seq: &mut u16,
        frames: &[Vec<u8>],
        ts: &mut u32,
        mut order: impl FnMut(usize) -> Vec<usize>,
    ) -> Vec<AssembledFrame> {
        let mut out = Vec::new();
        for frame in frames {
            let parts = packets(frame, true);
            let count = parts.len();
            for i in order(count) {
                let marker = i == count - 1;
                let packet_seq = seq.wrapping_add(i as u16);
                out.extend(assembler.push(packet_seq, *ts, marker, &parts[i]));
            }
            *seq = seq.wrapping_add(count as u16);
            *ts = ts.wrapping_add(3000);
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
        let (mut seq, mut ts) = (65_500u16, u32::MAX - 7000);
        let out = feed(&mut assembler, &mut seq, &frames, &mut ts, |n| {
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
        let (mut seq, mut ts) = (10u16, 0u32);
        let out = feed(&mut assembler, &mut seq, &frames, &mut ts, |n| {
            let mut order: Vec<usize> = (0..n).rev().collect();
            order.push(0);
            order
        });
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, frames[0]);
        assert_eq!(out[1].data, frames[1]);
        assert_eq!(assembler.stats().late, 2, "the duplicates");
    }

    #[test]
    fn a_lost_packet_drops_its_frame_and_flags_the_next() {
        let mut assembler = Assembler::default();
        let frames = vec![frame(4000, 1), frame(4000, 2), frame(500, 3)];
        let (mut seq, mut ts) = (0u16, 0u32);
        let mut first = true;
        let out = feed(&mut assembler, &mut seq, &frames, &mut ts, |n| {
            // The first frame loses its second packet.
            let order = if first {
                vec![0, 2, 3]
            } else {
                (0..n).collect()
            };
            first = false;
            order
        });
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, frames[1]);
        assert!(out[0].after_loss, "the frame after a loss is flagged");
        assert!(!out[1].after_loss);
        assert_eq!(assembler.stats().incomplete, 1);
        // The lost packet arriving now is too late.
        assert!(
            assembler
                .push(1, 0, false, &packets(&frames[0], true)[1])
                .is_none()
        );
        assert_eq!(assembler.stats().late, 1);
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
            assert!(assembler.push(1, 0, true, bad).is_none());
        }
        assert_eq!(assembler.stats().malformed, 4);
        let whole = packets(&frame(10, 0), false);
        assert_eq!(
            assembler.push(2, 0, true, &whole[0]).map(|f| f.data),
            Some(frame(10, 0))
        );
    }

    #[test]
    fn a_frame_without_its_start_never_comes_out() {
        let mut assembler = Assembler::default();
        let parts = packets(&frame(3000, 0), false);
        assert!(assembler.push(2, 0, false, &parts[1]).is_none());
        assert!(assembler.push(3, 0, true, &parts[2]).is_none());
        assert_eq!(assembler.stats().frames, 0);
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

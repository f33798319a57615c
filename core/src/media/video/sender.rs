//! Our outgoing video (sans-IO but for the codec): source → VP8 → SFrame, once per frame
//! whatever the number of receivers; the video loop hands the sealed frame to every
//! connection.
//!
//! Keyframes go out at the start, after the camera is turned back on, after a key change
//! (a new member has no earlier picture), and when a receiver asks ([`VideoSender::request_keyframe`]);
//! asks that come in a burst (every receiver of one lost packet) give one keyframe.

use std::time::{Duration, Instant};

use tracing::debug;

use super::rtp::FrameInfo;
use super::scale::scaled_size;
use super::source::VideoSource;
use super::{Encoder, EncoderConfig, I420Frame, VideoKind, VideoSourceError, VpxError};
use crate::media::crypto::MediaError;
use crate::media::crypto::sframe::Sealer;

/// Keyframe requests closer together than this give one keyframe.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// Share of the bitrate that keyframes sent on request may take: after a keyframe, the
/// next one asked for waits until the rate has paid for this share of it (on a path
/// squeezed by losses, every receiver's requests would otherwise fill it with keyframes).
pub const KEYFRAME_SHARE: f64 = 0.5;
/// Longest wait between keyframes asked for, however low the rate.
pub const KEYFRAME_MAX_SPACING: Duration = Duration::from_secs(2);

/// Why a frame did not go out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoSendError {
    /// The source failed.
    #[error("video source: {0}")]
    Source(#[from] VideoSourceError),
    /// The encoder failed.
    #[error("video encoder: {0}")]
    Codec(#[from] VpxError),
    /// The frame could not be sealed.
    #[error("video frame not sealed: {0}")]
    Seal(#[from] MediaError),
}

/// One sealed frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedVideoFrame {
    /// The SFrame-sealed VP8 frame.
    pub sealed: Vec<u8>,
    /// Whether it is a keyframe.
    pub keyframe: bool,
    /// What a forwarding unit may know of it (sent outside the seal).
    pub info: FrameInfo,
}

/// What was sent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Frames sealed.
    pub frames: u64,
    /// Keyframes among them.
    pub keyframes: u64,
    /// Sealed bytes.
    pub bytes: u64,
}

/// Lower layers are the source's size halved, and halved again, while at least this wide.
pub const MIN_LAYER_WIDTH: u32 = 320;
/// A layer is kept while the rate is at least this share of its full-quality rate
/// ([`EncoderConfig::realtime`]), and a larger one taken when the rate reaches
/// [`LAYER_UP_SHARE`] of its own: the gap keeps the layer from flapping.
pub const LAYER_KEEP_SHARE: f64 = 0.35;
/// See [`LAYER_KEEP_SHARE`].
pub const LAYER_UP_SHARE: f64 = 0.45;
/// [`LAYER_KEEP_SHARE`] and [`LAYER_UP_SHARE`] of a shared screen: detail over motion, so
/// its size holds to a far lower rate (the encoder drops pictures instead).
pub const SCREEN_LAYER_SHARES: (f64, f64) = (0.12, 0.2);
/// A lower layer may use up to this multiple of its full-quality rate: sharper pictures
/// while the rate is between layers, and the traffic that shows the path can carry the
/// next layer up (an estimate never runs far ahead of what was sent:
/// `transport::estimate::PROBE_FACTOR`). The source's own size stops at its full rate.
pub const LOWER_LAYER_STRETCH: f64 = 1.5;

/// One size of our video: its encoder, its keyframe state and its frame numbers.
struct Layer {
    /// The source's size divided by this.
    factor: u32,
    encoder: Encoder,
    keyframe_due: bool,
    last_keyframe: Option<Instant>,
    /// Size of the last keyframe, bits.
    last_keyframe_bits: u64,
    /// A keyframe owed to a receiver that lost a frame after the last one, once the
    /// spacing allows ([`VideoSender::request_keyframe_after_loss`]).
    owed_at: Option<Instant>,
    /// Number of the next frame out (wrapping).
    number: u16,
}

/// A keyframe request that reaches us within the round trip plus this of our last
/// keyframe was sent before the receiver had it: that keyframe answers it.
pub const REQUEST_IN_FLIGHT_MARGIN: Duration = Duration::from_millis(100);

impl Layer {
    fn new(config: EncoderConfig, factor: u32) -> Result<Self, VideoSendError> {
        Ok(Self {
            factor,
            encoder: Encoder::new(config)?,
            keyframe_due: true,
            last_keyframe: None,
            last_keyframe_bits: 0,
            owed_at: None,
            number: 0,
        })
    }

    /// Least time between the last keyframe and one asked for ([`KEYFRAME_SHARE`]).
    fn keyframe_spacing(&self) -> Duration {
        let bps = f64::from(self.encoder.config().bitrate_kbps) * 1000.0;
        let paid = Duration::from_secs_f64(self.last_keyframe_bits as f64 / (KEYFRAME_SHARE * bps));
        paid.clamp(KEYFRAME_MIN_INTERVAL, KEYFRAME_MAX_SPACING)
    }

    fn request_keyframe(&mut self, now: Instant) {
        let spacing = self.keyframe_spacing();
        let recent = self
            .last_keyframe
            .is_some_and(|last| now.saturating_duration_since(last) < spacing);
        if recent {
            debug!("keyframe request within the minimum interval; the last keyframe answers it");
        } else {
            self.keyframe_due = true;
        }
    }

    /// A receiver `rtt` away lost a frame and asks for a keyframe at `now`: a request
    /// that left it before our last keyframe reached it is answered by that keyframe;
    /// a later one gets a keyframe as soon as the spacing allows — owed, not forgotten, so
    /// the picture does not wait for the receiver to ask again.
    fn request_keyframe_after_loss(&mut self, now: Instant, rtt: Duration) {
        let Some(last) = self.last_keyframe else {
            self.keyframe_due = true;
            return;
        };
        let since = now.saturating_duration_since(last);
        if since < rtt + REQUEST_IN_FLIGHT_MARGIN {
            debug!(
                ?since,
                "keyframe request sent before our last keyframe arrived; it answers it"
            );
            return;
        }
        let at = last + self.keyframe_spacing();
        if now >= at {
            self.keyframe_due = true;
        } else {
            self.owed_at = Some(self.owed_at.map_or(at, |owed| owed.min(at)));
        }
    }

    /// Encodes `picture` and seals what comes out.
    fn encode(
        &mut self,
        now: Instant,
        picture: &super::I420Frame,
        sealer: &mut Sealer,
        stats: &mut SendStats,
    ) -> Result<Option<SealedVideoFrame>, VideoSendError> {
        if self.owed_at.is_some_and(|at| now >= at) {
            self.keyframe_due = true;
        }
        let keyframe = std::mem::take(&mut self.keyframe_due);
        let mut sealed_frame = None;
        for encoded in self.encoder.encode(picture, keyframe)? {
            let sealed = sealer.seal(&encoded.data)?;
            stats.frames += 1;
            stats.bytes += sealed.len() as u64;
            if encoded.keyframe {
                stats.keyframes += 1;
                self.owed_at = None;
                self.last_keyframe = Some(now);
                self.last_keyframe_bits = sealed.len() as u64 * 8;
            }
            let info = FrameInfo {
                keyframe: encoded.keyframe,
                // The layer's size, as a power of two below the source's.
                spatial: self.factor.trailing_zeros() as u8,
                number: self.number,
                ..FrameInfo::default()
            };
            self.number = self.number.wrapping_add(1);
            sealed_frame = Some(SealedVideoFrame {
                sealed,
                keyframe: encoded.keyframe,
                info,
            });
        }
        Ok(sealed_frame)
    }
}

/// What one capture gave: the main layer's frame and, while some receiver needs a smaller
/// picture than the others, the low layer's (`None` where nothing came out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedLayers {
    /// The largest size sent.
    pub main: Option<SealedVideoFrame>,
    /// The smaller size sent to the receivers whose path cannot carry the main one.
    pub low: Option<SealedVideoFrame>,
    /// The main layer's picture as captured (the self-view), also before there is a key
    /// to send it under (the preview before joining).
    pub picture: Option<I420Frame>,
}

/// Our video: the source, an encoder per size sent (the main layer, and a low one while a
/// receiver's path needs it: simulcast), and the video sealer (one for both layers, so
/// their counters never meet under the key).
pub struct VideoSender {
    kind: VideoKind,
    source: Box<dyn VideoSource>,
    main: Layer,
    low: Option<Layer>,
    /// The CPU allows no larger layer than the source's size divided by this
    /// ([`super::cpu::CpuGuard`]).
    min_factor: u32,
    /// The rate last asked for ([`VideoSender::set_bitrate_kbps`]).
    wanted_kbps: u32,
    sealer: Sealer,
    keyed: bool,
    on: bool,
    stats: SendStats,
}

impl std::fmt::Debug for VideoSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoSender")
            .field("kind", &self.kind)
            .field("size", &self.source.size())
            .field("main", &self.main.factor)
            .field("low", &self.low.as_ref().map(|low| low.factor))
            .field("on", &self.on)
            .field("keyed", &self.keyed)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl VideoSender {
    /// Our camera's video from `source`, encoded in realtime for its size; on.
    pub fn new(source: Box<dyn VideoSource>) -> Result<Self, VideoSendError> {
        Self::of_kind(VideoKind::Camera, source)
    }

    /// Our `kind` of video from `source`, encoded for its size and content; on.
    pub fn of_kind(kind: VideoKind, source: Box<dyn VideoSource>) -> Result<Self, VideoSendError> {
        let (width, height) = source.size();
        let mut config = base_config(kind, width, height);
        config.fps = source.fps().round().clamp(1.0, 60.0) as u32;
        Ok(Self {
            kind,
            source,
            wanted_kbps: config.bitrate_kbps,
            main: Layer::new(config, 1)?,
            low: None,
            min_factor: 1,
            sealer: Sealer::for_stream(0, kind.stream()),
            keyed: false,
            on: true,
            stats: SendStats::default(),
        })
    }

    /// Which of our videos this is.
    pub fn kind(&self) -> VideoKind {
        self.kind
    }

    /// Time between two pictures.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.source.fps().clamp(1.0, 60.0))
    }

    /// Size of the pictures sent (the main layer's).
    pub fn size(&self) -> (u32, u32) {
        let (width, height) = self.source.size();
        scaled_size(width, height, self.main.factor)
    }

    /// Size of the low layer's pictures, while one is sent.
    pub fn low_size(&self) -> Option<(u32, u32)> {
        let (width, height) = self.source.size();
        self.low
            .as_ref()
            .map(|low| scaled_size(width, height, low.factor))
    }

    /// The main layer's size divisor.
    pub fn main_factor(&self) -> u32 {
        self.main.factor
    }

    /// The low layer's size divisor, while one is sent.
    pub fn low_factor(&self) -> Option<u32> {
        self.low.as_ref().map(|low| low.factor)
    }

    /// The main encoder's target bitrate, kbit/s.
    pub fn bitrate_kbps(&self) -> u32 {
        self.main.encoder.config().bitrate_kbps
    }

    /// The rate of the source's own size at full quality, kbit/s: more is never used.
    pub fn full_rate_kbps(&self) -> u32 {
        let (width, height) = self.source.size();
        base_config(self.kind, width, height).bitrate_kbps
    }

    /// The configuration of the layer at `factor` for `kbps` (at most its full-quality
    /// rate, or 1.5 times that for a lower layer: [`LOWER_LAYER_STRETCH`]).
    fn layer_config(&self, factor: u32, kbps: u32) -> EncoderConfig {
        let (width, height) = self.source.size();
        let (layer_width, layer_height) = scaled_size(width, height, factor);
        let full = base_config(self.kind, layer_width, layer_height);
        let most = if factor == 1 {
            full.bitrate_kbps
        } else {
            (f64::from(full.bitrate_kbps) * LOWER_LAYER_STRETCH) as u32
        };
        EncoderConfig {
            bitrate_kbps: kbps.clamp(1, most),
            fps: self.main.encoder.config().fps,
            ..full
        }
    }

    /// Sends what `kbps` allows from the next frame on as the main layer: the largest
    /// layer the rate affords ([`LAYER_KEEP_SHARE`]), at that rate or its full-quality
    /// rate if lower. A new layer starts with a keyframe.
    pub fn set_bitrate_kbps(&mut self, kbps: u32) -> Result<(), VideoSendError> {
        self.wanted_kbps = kbps;
        let factor = self.layer_of(kbps, self.main.factor);
        let config = self.layer_config(factor, kbps);
        let (width, height, kbps) = (config.width, config.height, config.bitrate_kbps);
        if factor == self.main.factor {
            self.main.encoder.set_bitrate(kbps)?;
        } else {
            self.main = Layer::new(config, factor)?;
        }
        if self.low.as_ref().is_some_and(|low| low.factor <= factor) {
            self.low = None;
        }
        debug!(kbps, width, height, "video rate");
        Ok(())
    }

    /// Sends a low layer at what `kbps` allows, for receivers whose path cannot carry the
    /// main one, or (`None`, or a rate that affords the main layer's size) none: a layer
    /// nobody receives is not encoded. Returns the low layer's divisor while one is sent.
    pub fn set_low_layer(&mut self, kbps: Option<u32>) -> Result<Option<u32>, VideoSendError> {
        let Some(kbps) = kbps else {
            self.low = None;
            return Ok(None);
        };
        let current = self.low.as_ref().map_or(self.main.factor, |low| low.factor);
        let factor = self.layer_of(kbps, current);
        if factor <= self.main.factor {
            self.low = None;
            return Ok(None);
        }
        let config = self.layer_config(factor, kbps);
        match self.low.as_mut() {
            Some(low) if low.factor == factor => low.encoder.set_bitrate(config.bitrate_kbps)?,
            _ => {
                debug!(
                    kbps = config.bitrate_kbps,
                    width = config.width,
                    height = config.height,
                    "low video layer"
                );
                self.low = Some(Layer::new(config, factor)?);
            }
        }
        Ok(Some(factor))
    }

    /// The layer (size divisor) a path of `kbps` affords, for a receiver now at
    /// `current` (the share to keep a layer is lower than to take it: no flapping), and
    /// never larger than the CPU allows.
    pub fn layer_of(&self, kbps: u32, current: u32) -> u32 {
        let (width, height) = self.source.size();
        let (keep, up) = match self.kind {
            VideoKind::Camera => (LAYER_KEEP_SHARE, LAYER_UP_SHARE),
            VideoKind::Screen => SCREEN_LAYER_SHARES,
        };
        let mut factor = 1;
        loop {
            let (layer_width, layer_height) = scaled_size(width, height, factor);
            let need = f64::from(base_config(self.kind, layer_width, layer_height).bitrate_kbps);
            let share = if factor < current { up } else { keep };
            let smaller = scaled_size(width, height, factor * 2);
            let too_small = smaller.0 < MIN_LAYER_WIDTH || smaller.1 < 2;
            if too_small || (f64::from(kbps) >= share * need && factor >= self.min_factor) {
                return factor;
            }
            factor *= 2;
        }
    }

    /// Sends no layer larger than the source's size divided by `min_factor` (what the CPU
    /// keeps up with), from the next frame on.
    pub fn set_min_factor(&mut self, min_factor: u32) -> Result<(), VideoSendError> {
        self.min_factor = min_factor.max(1);
        self.set_bitrate_kbps(self.wanted_kbps)
    }

    /// What was sent so far.
    pub fn stats(&self) -> SendStats {
        self.stats
    }

    /// Whether the camera is on.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// The next frame of each layer is a keyframe.
    fn key_every_layer(&mut self) {
        self.main.keyframe_due = true;
        if let Some(low) = self.low.as_mut() {
            low.keyframe_due = true;
        }
    }

    /// Turns the camera off (nothing is captured or sent) or back on (a keyframe first).
    pub fn set_on(&mut self, on: bool) {
        if on && !self.on {
            self.key_every_layer();
        }
        self.on = on;
    }

    /// Takes an epoch's sending key (leaf `own_leaf`); the next frame of each layer is a
    /// keyframe, so a member who just joined sees a picture at once.
    pub fn install(
        &mut self,
        epoch: u64,
        own_leaf: u32,
        base_key: &[u8; 32],
    ) -> Result<(), MediaError> {
        self.sealer.install(epoch, own_leaf, base_key)?;
        self.keyed = true;
        self.key_every_layer();
        Ok(())
    }

    /// Forgets the key: nothing is sent until the next [`VideoSender::install`].
    pub fn reset(&mut self) {
        self.sealer.reset();
        self.keyed = false;
    }

    /// Least time between the main layer's last keyframe and one asked for:
    /// [`KEYFRAME_MIN_INTERVAL`], or longer when it was large for the rate
    /// ([`KEYFRAME_SHARE`]).
    pub fn keyframe_spacing(&self) -> Duration {
        self.main.keyframe_spacing()
    }

    /// A receiver of the main layer asked for a keyframe at `now`.
    pub fn request_keyframe(&mut self, now: Instant) {
        self.main.request_keyframe(now);
    }

    /// A receiver of the main layer (`low`: of the low one), `rtt` away, lost a frame and
    /// asks for a keyframe at `now`: answered by the last keyframe if the request left
    /// before it arrived, else by the next one the spacing allows (owed until then).
    pub fn request_keyframe_after_loss(&mut self, now: Instant, rtt: Duration, low: bool) {
        let layer = if low {
            self.low.as_mut()
        } else {
            Some(&mut self.main)
        };
        if let Some(layer) = layer {
            layer.request_keyframe_after_loss(now, rtt);
        }
    }

    /// A receiver of the low layer asked for a keyframe at `now` (or is moving to it).
    pub fn request_low_keyframe(&mut self, now: Instant) {
        if let Some(low) = self.low.as_mut() {
            low.request_keyframe(now);
        }
    }

    /// Captures, encodes and seals the next picture of the main layer (at `now`,
    /// `unix_ms` by the wall clock). `None` when the camera is off, no key is installed
    /// yet, or the encoder dropped the picture to hold its bitrate.
    pub fn capture(
        &mut self,
        now: Instant,
        unix_ms: u64,
    ) -> Result<Option<SealedVideoFrame>, VideoSendError> {
        Ok(self.capture_layers(now, unix_ms)?.main)
    }

    /// Captures the next picture without encoding it, for when nobody receives our video
    /// (alone in a meeting, or every member in its "no incoming video" mode): the
    /// self-view still moves, no encoder runs, and the next picture encoded is a keyframe.
    pub fn capture_unsent(&mut self, unix_ms: u64) -> Result<CapturedLayers, VideoSendError> {
        if !self.on {
            return Ok(CapturedLayers::default());
        }
        let picture = self
            .source
            .next_frames(unix_ms, &[self.main.factor])?
            .into_iter()
            .next();
        self.key_every_layer();
        Ok(CapturedLayers {
            picture,
            ..CapturedLayers::default()
        })
    }

    /// Captures the next picture once and encodes and seals it for each layer sent.
    pub fn capture_layers(
        &mut self,
        now: Instant,
        unix_ms: u64,
    ) -> Result<CapturedLayers, VideoSendError> {
        if !self.on {
            return Ok(CapturedLayers::default());
        }
        let factors: Vec<u32> = std::iter::once(self.main.factor)
            .chain(self.low.as_ref().map(|low| low.factor))
            .collect();
        let mut pictures = self.source.next_frames(unix_ms, &factors)?.into_iter();
        let mut captured = CapturedLayers {
            picture: pictures.next(),
            ..CapturedLayers::default()
        };
        if !self.keyed {
            return Ok(captured);
        }
        if let Some(picture) = &captured.picture {
            captured.main = self
                .main
                .encode(now, picture, &mut self.sealer, &mut self.stats)?;
        }
        if let (Some(low), Some(picture)) = (self.low.as_mut(), pictures.next()) {
            captured.low = low.encode(now, &picture, &mut self.sealer, &mut self.stats)?;
        }
        Ok(captured)
    }
}

/// The full-quality configuration of `kind` at `width × height`.
fn base_config(kind: VideoKind, width: u32, height: u32) -> EncoderConfig {
    match kind {
        VideoKind::Camera => EncoderConfig::realtime(width, height),
        VideoKind::Screen => EncoderConfig::screen(width, height),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::media_keys::sender_base_key;
    use crate::media::crypto::keyring::Opener;
    use crate::media::crypto::sframe::Stream;
    use crate::media::video::source::StampedTestSource;
    use crate::test_clock::t0;

    fn sender() -> VideoSender {
        VideoSender::new(Box::new(StampedTestSource::new(320, 180).unwrap())).unwrap()
    }

    #[test]
    fn a_cpu_that_cannot_keep_up_holds_the_picture_smaller_at_any_rate() {
        let now = t0();
        let mut video =
            VideoSender::new(Box::new(StampedTestSource::new(640, 360).unwrap())).unwrap();
        video.install(1, 0, &sender_base_key(&[7; 32], 0)).unwrap();
        video.set_bitrate_kbps(800).unwrap();
        assert_eq!(video.size(), (640, 360));
        video.set_min_factor(2).unwrap();
        assert_eq!(video.size(), (320, 180), "at full rate, still half");
        let first = video.capture(now, 0).unwrap().expect("a frame");
        assert!(first.keyframe, "a new size starts with a keyframe");
        // Never below the smallest layer, whatever is asked.
        video.set_min_factor(8).unwrap();
        assert_eq!(video.size(), (320, 180));
        video.set_min_factor(1).unwrap();
        assert_eq!(video.size(), (640, 360), "room again: back to full size");
    }

    #[test]
    fn nothing_goes_out_before_a_key_or_while_the_camera_is_off() {
        let now = t0();
        let mut video = sender();
        assert_eq!(video.frame_interval(), Duration::from_secs_f64(1.0 / 30.0));
        assert!(video.capture(now, 0).unwrap().is_none(), "no key yet");
        video.install(1, 0, &sender_base_key(&[7; 32], 0)).unwrap();
        let first = video.capture(now, 33).unwrap().expect("a frame");
        assert!(first.keyframe, "the first frame after a key is a keyframe");
        let second = video.capture(now, 66).unwrap().expect("a frame");
        assert!(!second.keyframe);
        assert_eq!((first.info.number, second.info.number), (0, 1));
        assert!(first.info.keyframe && !second.info.keyframe);
        video.set_on(false);
        assert!(video.capture(now, 99).unwrap().is_none(), "camera off");
        video.set_on(true);
        assert!(
            video.capture(now, 132).unwrap().unwrap().keyframe,
            "camera back on"
        );
        video.reset();
        assert!(video.capture(now, 165).unwrap().is_none(), "key forgotten");
    }

    #[test]
    fn a_burst_of_keyframe_requests_gives_one_keyframe() {
        let now = t0();
        let mut video = sender();
        video.install(1, 0, &sender_base_key(&[7; 32], 0)).unwrap();
        let first = video.capture(now, 0).unwrap().unwrap();
        assert!(first.keyframe);
        // Asked again right after the keyframe: it already answers the request.
        video.request_keyframe(now + Duration::from_millis(40));
        let spacing = video.keyframe_spacing();
        assert!(spacing >= KEYFRAME_MIN_INTERVAL && spacing <= KEYFRAME_MAX_SPACING);
        let later = now + spacing;
        assert!(!video.capture(later, 300).unwrap().unwrap().keyframe);
        video.request_keyframe(later);
        video.request_keyframe(later);
        assert!(video.capture(later, 333).unwrap().unwrap().keyframe);
        assert!(!video.capture(later, 366).unwrap().unwrap().keyframe);
        assert_eq!(video.stats().keyframes, 2);
    }

    #[test]
    fn a_loss_after_the_last_keyframe_is_owed_a_keyframe_as_soon_as_the_spacing_allows() {
        let now = t0();
        let mut video = sender();
        video.install(1, 0, &sender_base_key(&[7; 32], 0)).unwrap();
        assert!(video.capture(now, 0).unwrap().unwrap().keyframe);
        let rtt = Duration::from_millis(250);
        // Sent before the keyframe reached the receiver: answered by it.
        video.request_keyframe_after_loss(now + Duration::from_millis(300), rtt, false);
        let spacing = video.keyframe_spacing();
        assert!(!video.capture(now + spacing, 33).unwrap().unwrap().keyframe);
        // Later than that, but within the spacing: owed, and sent when the spacing allows,
        // without being asked again.
        let asked = now + rtt + REQUEST_IN_FLIGHT_MARGIN + Duration::from_millis(10);
        let mut video = sender();
        video.install(1, 0, &sender_base_key(&[7; 32], 0)).unwrap();
        assert!(video.capture(now, 0).unwrap().unwrap().keyframe);
        video.request_keyframe_after_loss(asked, rtt, false);
        let spacing = video.keyframe_spacing();
        if asked < now + spacing {
            assert!(!video.capture(asked, 33).unwrap().unwrap().keyframe);
        }
        assert!(video.capture(now + spacing, 66).unwrap().unwrap().keyframe);
        assert!(
            !video.capture(now + spacing, 99).unwrap().unwrap().keyframe,
            "paid once"
        );
    }

    #[test]
    fn a_keyframe_large_for_the_rate_spaces_the_next_ones_out() {
        let now = t0();
        let mut video = sender();
        video.install(1, 0, &sender_base_key(&[7; 32], 0)).unwrap();
        let key = video.capture(now, 0).unwrap().unwrap();
        let bits = key.sealed.len() as f64 * 8.0;
        let at_full = video.keyframe_spacing();
        video.set_bitrate_kbps(100).unwrap();
        let squeezed = video.keyframe_spacing();
        assert!(
            squeezed > at_full,
            "{at_full:?} at 200 kbit/s, {squeezed:?} at 100"
        );
        let expected = Duration::from_secs_f64(bits / (KEYFRAME_SHARE * 100_000.0))
            .clamp(KEYFRAME_MIN_INTERVAL, KEYFRAME_MAX_SPACING);
        assert_eq!(squeezed, expected);
        // A request before then gets none; one after, one.
        video.request_keyframe(now + squeezed - Duration::from_millis(10));
        assert!(!video.capture(now, 33).unwrap().unwrap().keyframe);
        video.request_keyframe(now + squeezed);
        assert!(video.capture(now, 66).unwrap().unwrap().keyframe);
    }

    #[test]
    fn the_rate_picks_the_layer_and_a_new_layer_starts_with_a_keyframe() {
        let now = t0();
        let mut video =
            VideoSender::new(Box::new(StampedTestSource::new(640, 360).unwrap())).unwrap();
        video.install(1, 0, &sender_base_key(&[7; 32], 0)).unwrap();
        assert_eq!((video.full_rate_kbps(), video.bitrate_kbps()), (800, 800));
        video.capture(now, 0).unwrap().unwrap();
        video.capture(now, 33).unwrap().unwrap();
        // 300 kbit/s keeps 360p (at least 35 % of its 800).
        video.set_bitrate_kbps(300).unwrap();
        assert_eq!((video.size(), video.bitrate_kbps()), ((640, 360), 300));
        assert!(!video.capture(now, 66).unwrap().unwrap().keyframe);
        // 250 does not: 180p, from a keyframe.
        video.set_bitrate_kbps(250).unwrap();
        assert_eq!((video.size(), video.bitrate_kbps()), ((320, 180), 250));
        let first = video.capture(now, 99).unwrap().unwrap();
        assert!(first.keyframe);
        // 350 is not enough to go back up (45 % of 800 is 360): 180p stays, at up to 1.5
        // times its full-quality 200.
        video.set_bitrate_kbps(350).unwrap();
        assert_eq!((video.size(), video.bitrate_kbps()), ((320, 180), 300));
        // Even a collapse stays at the smallest layer, 320 wide.
        video.set_bitrate_kbps(30).unwrap();
        assert_eq!((video.size(), video.bitrate_kbps()), ((320, 180), 30));
        video.set_bitrate_kbps(360).unwrap();
        assert_eq!((video.size(), video.bitrate_kbps()), ((640, 360), 360));
        assert!(video.capture(now, 132).unwrap().unwrap().keyframe);
    }

    #[test]
    fn frames_are_sealed_under_the_video_key_of_our_leaf() {
        let now = t0();
        let secret = [9; 32];
        let mut video = sender();
        video.install(4, 2, &sender_base_key(&secret, 2)).unwrap();
        let frame = video.capture(now, 0).unwrap().unwrap();
        let mut opener = Opener::default();
        opener.install(now, 4, secret);
        let opened = opener.open_from(now, &frame.sealed, 2).unwrap();
        assert_eq!(opened.stream, Stream::Video);
        assert_eq!((opened.sender, opened.epoch), (2, 4));
        // The VP8 keyframe start code is in the plaintext, never in the sealed frame.
        assert_eq!(&opened.payload[3..6], &[0x9d, 0x01, 0x2a]);
        assert!(!frame.sealed.windows(3).any(|w| w == [0x9d, 0x01, 0x2a]));
    }
}

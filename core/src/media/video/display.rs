//! Video for a window: the latest picture of each video (our camera's self-view, each
//! member's camera and shared screen) as RGBA, ready to draw.
//!
//! The video thread converts and writes; the window takes. A [`VideoDisplay`] holds one
//! slot per video and only the newest picture in it: a window that draws slowly skips
//! pictures, it never queues them, and the video thread never waits for it. A picture is
//! converted only when the window took the previous one of that video, so a window that
//! is hidden or busy costs the video thread nothing but a look at a flag.
//!
//! Pictures come at the size the window draws them ([`VideoDisplay::draw_at`]), so that
//! drawing is a copy, not a scaling, and nothing larger than needed is converted: a
//! camera covers its tile (the window crops the excess), a shared screen fits inside
//! the stage whole. Pictures are never made larger; until the window says, a camera is at
//! most [`CAMERA_MAX_WIDTH`] wide and a screen [`SCREEN_MAX_WIDTH`]. Our own camera is
//! mirrored, as people expect of a self-view; what the others receive is not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use libp2p::PeerId;

use super::{I420Frame, VideoKind};

/// Widest camera picture handed to a window (a tile is narrower than this).
pub const CAMERA_MAX_WIDTH: u32 = 640;
/// Widest shared-screen picture handed to a window (the stage).
pub const SCREEN_MAX_WIDTH: u32 = 1920;

/// Whose video a picture is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// Ours (the self-view).
    Me,
    /// A member's.
    Member(PeerId),
}

/// One video: whose, and which of its two.
pub type VideoId = (Owner, VideoKind);

/// A picture to draw: 8-bit RGBA, rows top to bottom, no padding.
#[derive(Clone, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height × 4` bytes.
    pub rgba: Vec<u8>,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picture")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

/// What changed in one video since the window last looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new picture.
    Picture(Picture),
    /// The video ended (the camera was turned off, the share stopped, the member left):
    /// the window shows the avatar again.
    Ended,
}

#[derive(Debug, Default)]
struct Slot {
    /// The newest picture not yet taken.
    fresh: Option<Picture>,
    /// The video ended since the window last looked.
    ended: bool,
    /// The window took the last picture (or none was ever made): the next one is wanted.
    wanted: bool,
}

#[derive(Debug, Default)]
struct Slots {
    slots: HashMap<VideoId, Slot>,
    /// Where the window draws each video (width, height, in pixels).
    sizes: HashMap<VideoId, (u32, u32)>,
    /// Pictures made (for the window's statistics).
    made: u64,
}

/// The latest picture of each video, shared between the video thread and a window. Cheap
/// to clone (all clones are the same display).
#[derive(Debug, Clone, Default)]
pub struct VideoDisplay(Arc<Mutex<Slots>>);

impl PartialEq for VideoDisplay {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl VideoDisplay {
    /// An empty display.
    pub fn new() -> Self {
        Self::default()
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves only pictures behind: still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What changed since the last call: each video's newest picture, and the videos that
    /// ended. Taking a picture asks the video thread for the next one.
    pub fn take(&self) -> Vec<(VideoId, Change)> {
        let mut slots = self.slots();
        let mut changes = Vec::new();
        slots.slots.retain(|id, slot| {
            if let Some(picture) = slot.fresh.take() {
                slot.wanted = true;
                changes.push((*id, Change::Picture(picture)));
                true
            } else if slot.ended {
                changes.push((*id, Change::Ended));
                false
            } else {
                true
            }
        });
        changes
    }

    /// Pictures made so far.
    pub fn pictures_made(&self) -> u64 {
        self.slots().made
    }

    /// The window draws `id` in a `width × height` pixel box (from the next picture on).
    pub fn draw_at(&self, id: VideoId, width: u32, height: u32) {
        self.slots().sizes.insert(id, (width.max(2), height.max(2)));
    }

    /// Whether the window wants a new picture of `id` (it took the last one).
    pub(crate) fn wants(&self, id: VideoId) -> bool {
        self.slots().slots.get(&id).is_none_or(|slot| slot.wanted)
    }

    /// Converts `picture` for the window and puts it in the slot of `id`, replacing any
    /// picture not yet taken.
    pub(crate) fn show(&self, id: VideoId, picture: &I420Frame) {
        let drawn_in = self.slots().sizes.get(&id).copied();
        let (width, height) = shown_size(id.1, (picture.width(), picture.height()), drawn_in);
        let converted = Picture {
            width,
            height,
            rgba: picture.to_rgba(width, height, id.0 == Owner::Me),
        };
        let mut slots = self.slots();
        slots.made += 1;
        let slot = slots.slots.entry(id).or_default();
        slot.fresh = Some(converted);
        slot.ended = false;
        slot.wanted = false;
    }

    /// The video `id` ended: the window is told once, and its picture is dropped.
    pub(crate) fn end(&self, id: VideoId) {
        if let Some(slot) = self.slots().slots.get_mut(&id) {
            slot.fresh = None;
            slot.ended = true;
        }
    }
}

/// The size a `kind` of picture of `size` is converted to for a `box` it is drawn in: a
/// camera covers the box, a screen fits inside it; never larger than the picture.
fn shown_size(
    kind: VideoKind,
    (width, height): (u32, u32),
    drawn_in: Option<(u32, u32)>,
) -> (u32, u32) {
    let (w, h) = (f64::from(width), f64::from(height));
    let scale = match (kind, drawn_in) {
        (VideoKind::Camera, Some((bw, bh))) => (f64::from(bw) / w).max(f64::from(bh) / h),
        (VideoKind::Screen, Some((bw, bh))) => (f64::from(bw) / w).min(f64::from(bh) / h),
        (VideoKind::Camera, None) => f64::from(CAMERA_MAX_WIDTH) / w,
        (VideoKind::Screen, None) => f64::from(SCREEN_MAX_WIDTH) / w,
    }
    .min(1.0);
    let round = |value: f64| match kind {
        // A camera must cover its box: round up.
        VideoKind::Camera => value.ceil(),
        VideoKind::Screen => value.floor(),
    };
    (
        (round(w * scale) as u32).clamp(1, width),
        (round(h * scale) as u32).clamp(1, height),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(width: u32, height: u32) -> I420Frame {
        let luma = (width * height) as usize;
        I420Frame::from_bytes(width, height, vec![128; luma + luma / 2]).expect("a valid picture")
    }

    #[test]
    fn a_camera_covers_its_box_a_screen_fits_in_it_and_neither_grows() {
        let camera = VideoKind::Camera;
        assert_eq!(shown_size(camera, (640, 360), Some((320, 180))), (320, 180));
        // A 4:3 camera in a 16:9 tile: as wide as the tile, taller (cropped).
        assert_eq!(shown_size(camera, (640, 480), Some((320, 180))), (320, 240));
        assert_eq!(shown_size(camera, (320, 180), Some((640, 360))), (320, 180));
        assert_eq!(shown_size(camera, (1280, 720), None), (640, 360));
        let screen = VideoKind::Screen;
        assert_eq!(
            shown_size(screen, (1280, 720), Some((700, 300))),
            (533, 300)
        );
        assert_eq!(shown_size(screen, (1280, 720), None), (1280, 720));
    }

    #[test]
    fn the_window_gets_the_newest_picture_once_then_hears_the_video_ended() {
        let display = VideoDisplay::new();
        let id = (Owner::Me, VideoKind::Camera);
        let picture = grey(64, 36);
        assert!(display.wants(id), "nothing shown yet");
        display.show(id, &picture);
        assert!(!display.wants(id), "the window has not taken it");
        display.show(id, &picture);
        let changes = display.take();
        assert_eq!(changes.len(), 1, "only the newest of two");
        assert!(matches!(&changes[0], (got, Change::Picture(p)) if *got == id && p.width == 64));
        assert!(display.wants(id));
        assert!(display.take().is_empty(), "nothing new");
        display.end(id);
        assert_eq!(display.take(), vec![(id, Change::Ended)]);
        assert!(display.take().is_empty(), "told once");
        assert_eq!(display.pictures_made(), 2);
    }
}

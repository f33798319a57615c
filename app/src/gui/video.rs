//! The pictures the window draws: the newest picture of each video (our self-view and
//! preview, each member's camera and shared screen), taken from the core's
//! [`VideoDisplay`] on a timer.
//!
//! The core's video thread converts each picture to RGBA only once the window took the
//! previous one, so taking them here is all the UI thread does: no decoding, no
//! conversion, no waiting. A picture becomes an image handle (its bytes are moved, not
//! copied) that the tiles and the stage draw.

use std::collections::BTreeMap;
use std::time::Duration;

use conclave_core::PeerId;
use conclave_core::media::video::VideoKind;
use conclave_core::media::video::display::{Change, Owner, VideoDisplay, VideoId};
use iced::widget::image::{FilterMethod, Handle};
use tracing::info;

/// How often the window takes new pictures (25 a second).
pub(crate) const REFRESH: Duration = Duration::from_millis(40);

/// A picture ready to draw, and its size in pixels.
#[derive(Debug, Clone)]
pub(crate) struct Shown {
    pub(crate) handle: Handle,
    pub(crate) width: u32,
    pub(crate) height: u32,
}

impl Shown {
    /// How to draw it in a `width × height` box: when the picture already has the box's
    /// size along one side (the core made it so), drawing is a copy, so the nearest pixel
    /// is exact and cheap; otherwise it is smoothed.
    pub(crate) fn filter_in(&self, width: f32, height: f32) -> FilterMethod {
        let fits =
            (self.width as f32 - width).abs() <= 1.0 || (self.height as f32 - height).abs() <= 1.0;
        if fits {
            FilterMethod::Nearest
        } else {
            FilterMethod::Linear
        }
    }
}

/// The newest picture of each video, as image handles.
#[derive(Debug, Default)]
pub(crate) struct Pictures {
    display: VideoDisplay,
    shown: BTreeMap<VideoId, Shown>,
}

impl Pictures {
    /// The display the core writes to (goes into the media configuration).
    pub(crate) fn display(&self) -> VideoDisplay {
        self.display.clone()
    }

    /// Takes what changed from the core; returns whether anything did.
    pub(crate) fn refresh(&mut self) -> bool {
        let changes = self.display.take();
        let changed = !changes.is_empty();
        for (id, change) in changes {
            match change {
                Change::Picture(picture) => {
                    let first = !self.shown.contains_key(&id);
                    if first {
                        info!(
                            owner = %describe(id.0),
                            kind = %id.1.as_str(),
                            width = picture.width,
                            height = picture.height,
                            "video shown"
                        );
                    }
                    let shown = Shown {
                        width: picture.width,
                        height: picture.height,
                        handle: Handle::from_rgba(picture.width, picture.height, picture.rgba),
                    };
                    self.shown.insert(id, shown);
                }
                Change::Ended => {
                    if self.shown.remove(&id).is_some() {
                        info!(owner = %describe(id.0), kind = %id.1.as_str(), "video ended");
                    }
                }
            }
        }
        changed
    }

    /// The newest picture of `owner`'s `kind` of video, if it sends one.
    pub(crate) fn get(&self, owner: Owner, kind: VideoKind) -> Option<&Shown> {
        self.shown.get(&(owner, kind))
    }

    /// The newest picture of a member's camera.
    pub(crate) fn camera(&self, peer: &PeerId) -> Option<&Shown> {
        self.get(Owner::Member(*peer), VideoKind::Camera)
    }

    /// Our self-view.
    pub(crate) fn me(&self) -> Option<&Shown> {
        self.get(Owner::Me, VideoKind::Camera)
    }

    /// Tells the core the size (in pixels) `owner`'s `kind` of video is drawn at, so that
    /// its pictures come at that size: drawing them is then a copy, not a scaling. Called
    /// while drawing (the size is known only then); it takes a lock the video thread
    /// holds only to swap a picture in.
    pub(crate) fn draw_at(&self, owner: Owner, kind: VideoKind, width: f32, height: f32) {
        self.display
            .draw_at((owner, kind), width.round() as u32, height.round() as u32);
    }

    /// Forgets every member's pictures (the meeting ended); the self-view stays.
    pub(crate) fn clear_members(&mut self) {
        self.shown.retain(|(owner, _), _| *owner == Owner::Me);
    }

    /// Forgets the self-view (the camera was turned off).
    pub(crate) fn clear_me(&mut self) {
        self.shown.retain(|(owner, _), _| *owner != Owner::Me);
    }
}

fn describe(owner: Owner) -> String {
    match owner {
        Owner::Me => "me".to_owned(),
        Owner::Member(peer) => peer.to_string(),
    }
}

//! Media events, unpacked once for every front end.
//!
//! The core reports the media plane as [`MediaEvent`]s. The CLI prints them
//! ([`cli::meeting`](crate::cli::meeting)), the GUI shows them on the tiles
//! ([`gui::screen::meeting`](crate::gui::screen::meeting)) and `conclave demo` counts them
//! ([`cli::demo`](crate::cli::demo)). Each implements [`MediaSink`] and hands the event to
//! [`dispatch`], so the shape of the event is matched in one place only.

/// Periodic receive statistics for one member, as the core reports them.
pub(crate) use conclave_core::ReceiveStats as Stats;
use conclave_core::{MediaEvent, PeerId, VideoKind, VideoSendReport, VideoStats};

/// A peer connection changed state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Connection {
    /// The member.
    pub(crate) peer_id: PeerId,
    /// `new`, `connecting`, `connected`, `disconnected`, `failed`, …
    pub(crate) state: String,
    /// `direct`, or `relayed` through a TURN server.
    pub(crate) path: String,
    /// The path this connection took over from (a relayed one replaced by a direct one
    /// during the call).
    pub(crate) previous_path: Option<String>,
    /// Milliseconds since the member joined (ours or its join, whichever came later).
    pub(crate) since_join_ms: u64,
    /// Latest round-trip time on that path, once measured.
    pub(crate) rtt_ms: Option<f64>,
    /// ICE restarts on this connection so far.
    pub(crate) ice_restarts: u32,
}

impl Connection {
    /// Media flows.
    pub(crate) fn is_connected(&self) -> bool {
        self.state == "connected"
    }

    /// The connection broke (it may be repaired).
    pub(crate) fn is_lost(&self) -> bool {
        matches!(self.state.as_str(), "failed" | "disconnected")
    }
}

/// Something that shows or counts media events. Only [`MediaSink::connection`] and
/// [`MediaSink::stats`] must be written; the rest default to ignoring the event.
pub(crate) trait MediaSink {
    /// A peer connection changed state.
    fn connection(&mut self, connection: Connection);

    /// Receive statistics for one member.
    fn stats(&mut self, stats: Stats);

    /// The first frame from a member was heard.
    fn audio_started(&mut self, peer_id: PeerId) {
        tracing::debug!(%peer_id, "audio started");
    }

    /// The first picture of a member's camera or shared screen was decoded.
    fn video_started(&mut self, peer_id: PeerId, kind: VideoKind, width: u32, height: u32) {
        tracing::debug!(%peer_id, ?kind, width, height, "video started");
    }

    /// A member's shared screen stopped coming: it no longer shares it.
    fn video_stopped(&mut self, peer_id: PeerId, kind: VideoKind) {
        tracing::debug!(%peer_id, ?kind, "video stopped");
    }

    /// We share a screen (monitor `monitor`, sent at `width × height`).
    fn screen_shared(&mut self, monitor: u32, width: u32, height: u32) {
        tracing::debug!(monitor, width, height, "sharing our screen");
    }

    /// We stopped sharing our screen; `error` says why if it failed.
    fn screen_share_stopped(&mut self, error: Option<String>) {
        tracing::debug!(?error, "screen sharing stopped");
    }

    /// Video statistics for one member.
    fn video(&mut self, stats: VideoStats) {
        tracing::debug!(?stats, "video statistics not shown");
    }

    /// Statistics of our own video as sent.
    fn video_sent(&mut self, report: VideoSendReport) {
        tracing::debug!(?report, "sent video statistics not shown");
    }

    /// Something went wrong that does not end the meeting.
    fn warning(&mut self, message: String) {
        tracing::debug!(%message, "media warning not shown");
    }
}

/// Unpacks `event` into the matching method of `sink`.
pub(crate) fn dispatch(event: MediaEvent, sink: &mut impl MediaSink) {
    match event {
        MediaEvent::Connection {
            peer_id,
            state,
            path,
            previous_path,
            since_join_ms,
            rtt_ms,
            ice_restarts,
        } => sink.connection(Connection {
            peer_id,
            state: state.to_string(),
            path: path.to_string(),
            previous_path: previous_path.map(str::to_owned),
            since_join_ms,
            rtt_ms,
            ice_restarts,
        }),
        MediaEvent::Stats(stats) => sink.stats(stats),
        MediaEvent::AudioStarted { peer_id } => sink.audio_started(peer_id),
        MediaEvent::VideoStarted {
            peer_id,
            kind,
            width,
            height,
        } => sink.video_started(peer_id, kind, width, height),
        MediaEvent::VideoStopped { peer_id, kind } => sink.video_stopped(peer_id, kind),
        MediaEvent::ScreenShared {
            monitor,
            width,
            height,
        } => sink.screen_shared(monitor, width, height),
        MediaEvent::ScreenShareStopped { error } => sink.screen_share_stopped(error),
        MediaEvent::Video(stats) => sink.video(stats),
        MediaEvent::VideoSent(report) => sink.video_sent(report),
        MediaEvent::Warning(message) => sink.warning(message),
        other => tracing::debug!(?other, "media event not shown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it was given.
    #[derive(Default)]
    struct Recorder {
        seen: Vec<String>,
    }

    impl MediaSink for Recorder {
        fn connection(&mut self, connection: Connection) {
            self.seen.push(format!(
                "{} {} {} {:?} {}",
                connection.state,
                connection.path,
                connection.is_connected(),
                connection.previous_path,
                connection.since_join_ms
            ));
        }

        fn stats(&mut self, stats: Stats) {
            self.seen.push(format!("{} frames", stats.rx_frames));
        }

        fn warning(&mut self, message: String) {
            self.seen.push(message);
        }
    }

    #[test]
    fn every_field_reaches_the_sink() {
        let peer_id = PeerId::random();
        let mut sink = Recorder::default();
        dispatch(
            MediaEvent::Connection {
                peer_id,
                state: "connected".into(),
                path: "direct",
                previous_path: Some("relayed"),
                since_join_ms: 1_200,
                rtt_ms: Some(3.0),
                ice_restarts: 1,
            },
            &mut sink,
        );
        dispatch(
            MediaEvent::Stats(Stats {
                peer_id,
                rx_frames: 7,
                lost_frames: 0,
                recovered_frames: 0,
                decrypt_failures: 0,
                jitter_ms: 1.0,
                level_dbfs: -30.0,
                rtt_ms: None,
                send_estimate_kbps: None,
                send_loss: None,
            }),
            &mut sink,
        );
        dispatch(MediaEvent::AudioStarted { peer_id }, &mut sink);
        dispatch(MediaEvent::Warning("no microphone".into()), &mut sink);
        assert_eq!(
            sink.seen,
            [
                "connected direct true Some(\"relayed\") 1200",
                "7 frames",
                "no microphone"
            ]
        );
    }
}

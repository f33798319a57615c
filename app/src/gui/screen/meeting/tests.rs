//! Tests of the meeting screen: events in, the view and its clicks out (iced_test's
//! simulator).

use super::*;
use crate::gui::video::Pictures;
use conclave_core::{CommitViolation, SecurityCode};
use iced_test::{selector, simulator};

/// No video pictures (leaked: views borrow them for as long as they live).
fn no_video() -> &'static Pictures {
    Box::leak(Box::default())
}

/// Whether the view of `state` shows `text`.
fn shows(state: &State, verified: &BTreeSet<PeerId>, text: impl Into<String>) -> bool {
    simulator(state.view(verified, no_video()))
        .find(text.into())
        .is_ok()
}

/// Clicks the widget showing `text` in the view of `state`; returns the resulting
/// actions.
fn click(state: &mut State, verified: &BTreeSet<PeerId>, text: impl Into<String>) -> Vec<Action> {
    let text = text.into();
    interact(state, verified, |ui| {
        ui.click(text).unwrap();
    })
}

/// A meeting being joined with a (fake) invite.
fn joining() -> State {
    State::joining(PeerId::random(), "Ada".into(), "conclave:x".into())
}

fn code(n: u8) -> SecurityCode {
    SecurityCode::from_authenticator(&[n; 32])
}

fn interact(
    state: &mut State,
    verified: &BTreeSet<PeerId>,
    interact: impl FnOnce(&mut iced_test::Simulator<'_, Message>),
) -> Vec<Action> {
    let messages: Vec<Message> = {
        let mut ui = simulator(state.view(verified, no_video()));
        interact(&mut ui);
        ui.into_messages().collect()
    };
    messages
        .into_iter()
        .filter_map(|m| state.update(m))
        .collect()
}

/// A joined meeting with Bob in it.
fn in_meeting(host: bool) -> (State, PeerId) {
    let me = PeerId::random();
    let bob = PeerId::random();
    let mut state = if host {
        State::creating(me, "Ada".into())
    } else {
        State::joining(me, "Ada".into(), "conclave:v1?...".into())
    };
    let id = MeetingId([7; 16]);
    let action = state.handle_meeting(MeetingEvent::Joined {
        meeting_id: id,
        epoch: 1,
        security_code: code(1),
    });
    assert_eq!(action, Some(Action::LoadHistory(id)));
    state.handle_meeting(MeetingEvent::MemberJoined {
        peer_id: bob,
        name: "Bob".into(),
    });
    (state, bob)
}

#[test]
fn joining_shows_progress_and_can_be_cancelled() {
    let verified = BTreeSet::new();
    let mut state = joining();
    assert!(shows(&state, &verified, "Finding members…"));
    state.handle_meeting(MeetingEvent::Waiting);
    assert!(shows(
        &state,
        &verified,
        "Waiting for the host to let you in…"
    ));
    let actions = click(&mut state, &verified, "Cancel");
    assert_eq!(actions, vec![Action::Leave]);
}

#[test]
fn a_fork_alert_shows_a_red_banner_naming_the_member() {
    let verified = BTreeSet::new();
    let (mut state, bob) = in_meeting(false);
    state.handle_meeting(MeetingEvent::Alert {
        kind: AlertKind::Fork,
        peer_id: bob,
        epoch: 4,
    });
    let name = state.members[&bob].clone();
    assert!(shows(
        &state,
        &verified,
        format!(
            "Warning: the meeting is split — {name} holds different keys at epoch 4. Someone sent different changes to different members; compare security codes."
        )
    ));
}

#[test]
fn a_refused_commit_shows_a_red_banner_and_the_host_removes_its_sender_in_one_click() {
    let verified = BTreeSet::new();
    let (mut state, bob) = in_meeting(true);
    state.handle_meeting(MeetingEvent::Alert {
        kind: AlertKind::Commit(CommitViolation::UnjustifiedRemoval),
        peer_id: bob,
        epoch: 4,
    });
    let name = state.members[&bob].clone();
    assert!(shows(
        &state,
        &verified,
        format!(
            "Warning: {name} tried to remove a member without the member leaving or the host asking (epoch 4). Its change was refused."
        )
    ));
    let actions = click(
        &mut state,
        &verified,
        format!("Remove {name} from the meeting"),
    );
    assert_eq!(actions, vec![Action::Kick(bob)]);
    // A member who is not the host sees the banner, without the button.
    let (mut member, carol) = in_meeting(false);
    member.handle_meeting(MeetingEvent::Alert {
        kind: AlertKind::Commit(CommitViolation::NotCommitter),
        peer_id: carol,
        epoch: 2,
    });
    let name = member.members[&carol].clone();
    assert!(!shows(
        &member,
        &verified,
        format!("Remove {name} from the meeting")
    ));
}

#[test]
fn after_a_kick_copy_invite_gives_the_new_invite_and_says_the_old_ones_stopped_working() {
    let verified = BTreeSet::new();
    let (mut state, _bob) = in_meeting(false);
    let invite = conclave_core::Invite {
        meeting_id: MeetingId([7; 16]),
        secret: conclave_core::invite::MeetingSecret::from_bytes([9; 32]),
        host: None,
        relays: vec![],
        lobby: false,
    };
    state.handle_meeting(MeetingEvent::InviteChanged {
        invite: invite.clone(),
    });
    assert!(shows(
        &state,
        &verified,
        "A member was removed, so the invite changed: invites sent before no longer work. Copy invite gives the new one."
    ));
    let actions = click(&mut state, &verified, "Copy invite");
    assert_eq!(actions, vec![Action::Copy(invite.to_uri())]);
}

#[test]
fn a_dropped_network_shows_reconnecting_until_back_in() {
    let verified = BTreeSet::new();
    let (mut state, bob) = in_meeting(false);
    state.handle_meeting(MeetingEvent::Reconnecting);
    assert!(shows(&state, &verified, "Connection lost — reconnecting…"));
    // Back in with a new leaf: the same meeting, the chat on screen is kept as it is.
    let id = MeetingId([7; 16]);
    let action = state.handle_meeting(MeetingEvent::Joined {
        meeting_id: id,
        epoch: 3,
        security_code: code(3),
    });
    assert_eq!(action, None, "the history was loaded again");
    state.handle_meeting(MeetingEvent::Reconnected);
    assert!(!shows(&state, &verified, "Connection lost — reconnecting…"));
    assert!(state.members.contains_key(&bob));
    assert_eq!(state.phase, Phase::In);
}

#[test]
fn after_a_lag_the_roster_and_chat_are_read_again() {
    let verified = BTreeSet::new();
    let (mut state, bob) = in_meeting(false);
    let carol = PeerId::random();
    let record = |from: &PeerId, name: &str, text: &str| ChatRecord {
        from: from.to_base58(),
        name: name.into(),
        text: text.into(),
        unix_ms: 1,
    };
    // Bob left and Carol came while the window was not reading; two lines were missed.
    state.resync(
        vec![(carol, "Carol".into())],
        vec![
            record(&bob, "Bob", "bye all"),
            record(&carol, "Carol", "hello"),
        ],
    );
    assert!(!state.members.contains_key(&bob));
    assert_eq!(state.members.get(&carol).map(String::as_str), Some("Carol"));
    assert!(shows(&state, &verified, "Bob: bye all"));
    assert!(shows(&state, &verified, "Carol: hello"));
}

#[test]
fn a_refused_join_says_why() {
    let verified = BTreeSet::new();
    let mut state = joining();
    state.handle_meeting(MeetingEvent::JoinRefused);
    assert!(shows(
        &state,
        &verified,
        "The meeting refused this invite: its secret is wrong or it was altered."
    ));
    let actions = click(&mut state, &verified, "Back to home");
    assert_eq!(actions, vec![Action::Home]);
}

#[test]
fn tiles_badges_and_security_code() {
    let (mut state, bob) = in_meeting(false);
    state.handle_media(MediaEvent::Connection {
        peer_id: bob,
        state: "connected".into(),
        path: "relayed",
        previous_path: None,
        since_join_ms: 900,
        rtt_ms: Some(42.0),
        ice_restarts: 0,
    });
    state.handle_media(MediaEvent::Stats(conclave_core::ReceiveStats {
        peer_id: bob,
        rx_frames: 10,
        lost_frames: 0,
        recovered_frames: 0,
        decrypt_failures: 0,
        jitter_ms: 1.0,
        level_dbfs: -20.0,
        rtt_ms: None,
        send_estimate_kbps: None,
        send_loss: None,
    }));
    let verified: BTreeSet<PeerId> = [bob].into();
    let mut ui = simulator(state.view(&verified, no_video()));
    assert!(state.notices.is_empty());
    assert!(ui.find("Ada (you)").is_ok());
    assert!(ui.find("Bob").is_ok());
    assert!(ui.find("relayed · 42 ms").is_ok());
    assert!(ui.find("speaking").is_ok());
    assert!(ui.find("verified").is_ok());
    assert!(ui.find(format!("Security code {}", code(1))).is_ok());
    drop(ui);
    // The code's explanation is one click away.
    let actions = click(&mut state, &verified, format!("Security code {}", code(1)));
    assert!(actions.is_empty());
    assert!(shows(&state, &verified, CODE_EXPLANATION));
    // A direct path takes over during the call: the badge changes at once.
    state.handle_media(MediaEvent::Connection {
        peer_id: bob,
        state: "connected".into(),
        path: "direct",
        previous_path: Some("relayed"),
        since_join_ms: 2_400,
        rtt_ms: Some(12.0),
        ice_restarts: 0,
    });
    assert!(shows(&state, &verified, "direct · 12 ms"));
    assert!(!shows(&state, &verified, "relayed · 42 ms"));
    // A broken media path is announced (the badge says it too).
    state.handle_media(MediaEvent::Connection {
        peer_id: bob,
        state: "failed".into(),
        path: "relayed",
        previous_path: None,
        since_join_ms: 0,
        rtt_ms: None,
        ice_restarts: 0,
    });
    let mut ui = simulator(state.view(&verified, no_video()));
    assert!(
        ui.find("Lost the audio connection to Bob; trying to repair it.")
            .is_ok()
    );
    assert!(ui.find("no media connection").is_ok());
}

#[test]
fn mute_toggles_and_shows() {
    let (mut state, _) = in_meeting(false);
    let verified = BTreeSet::new();
    let actions = click(&mut state, &verified, "Mute");
    assert_eq!(actions, vec![Action::Mute(true)]);
    let mut ui = simulator(state.view(&verified, no_video()));
    assert!(ui.find("Unmute").is_ok());
    assert!(ui.find("muted").is_ok());
}

#[test]
fn sharing_the_screen_shows_who_sees_it_and_stops_in_one_click() {
    let (mut state, _) = in_meeting(false);
    let verified = BTreeSet::new();
    assert_eq!(
        click(&mut state, &verified, "Share screen"),
        vec![Action::Share(true)]
    );
    assert!(shows(&state, &verified, "Starting to share your screen…"));
    state.handle_media(MediaEvent::ScreenShared {
        monitor: 0,
        width: 1280,
        height: 800,
    });
    assert!(shows(
        &state,
        &verified,
        "You are sharing your screen (1280×800): everyone in the meeting sees it."
    ));
    // Either stop button ends it: the strip's, or the controls'.
    assert_eq!(
        click(&mut state, &verified, "Stop sharing"),
        vec![Action::Share(false)]
    );
    state.handle_media(MediaEvent::ScreenShareStopped { error: None });
    assert!(!shows(&state, &verified, "Stop sharing"));
    assert!(shows(&state, &verified, "Share screen"));
}

#[test]
fn a_screen_that_cannot_be_shared_says_why() {
    let (mut state, _) = in_meeting(false);
    let verified = BTreeSet::new();
    click(&mut state, &verified, "Share screen");
    state.handle_media(MediaEvent::ScreenShareStopped {
        error: Some("screen sharing: no display to share (DISPLAY is not set)".into()),
    });
    assert!(state.sharing.is_none());
    assert!(shows(
        &state,
        &verified,
        "Your screen is not shared: screen sharing: no display to share (DISPLAY is not set)"
    ));
}

#[test]
fn a_member_sharing_their_screen_is_announced_until_it_ends() {
    let (mut state, bob) = in_meeting(false);
    let verified = BTreeSet::new();
    state.handle_media(MediaEvent::VideoStarted {
        peer_id: bob,
        kind: conclave_core::VideoKind::Screen,
        width: 1280,
        height: 720,
    });
    assert!(state.sharing_members.contains(&bob));
    assert!(shows(&state, &verified, "Bob is sharing their screen."));
    state.handle_media(MediaEvent::VideoStopped {
        peer_id: bob,
        kind: conclave_core::VideoKind::Screen,
    });
    assert!(state.sharing_members.is_empty());
    assert!(shows(
        &state,
        &verified,
        "Bob stopped sharing their screen."
    ));
}

#[test]
fn another_members_mute_shows_on_their_tile() {
    let (mut state, bob) = in_meeting(false);
    let verified = BTreeSet::new();
    state.handle_media(MediaEvent::Stats(conclave_core::ReceiveStats {
        peer_id: bob,
        rx_frames: 10,
        lost_frames: 0,
        recovered_frames: 0,
        decrypt_failures: 0,
        jitter_ms: 1.0,
        level_dbfs: -20.0,
        rtt_ms: None,
        send_estimate_kbps: None,
        send_loss: None,
    }));
    let mut ui = simulator(state.view(&verified, no_video()));
    assert!(ui.find("muted").is_err(), "nobody is muted yet");
    assert!(ui.find("speaking").is_ok());
    drop(ui);
    state.handle_meeting(MeetingEvent::MemberMuted {
        peer_id: bob,
        muted: true,
    });
    let tiles = state.tiles(&verified);
    let bob_tile = tiles.iter().find(|t| t.name == "Bob").unwrap();
    assert_eq!(bob_tile.muted, Some(true));
    assert_eq!(tiles[0].muted, Some(false), "we are not muted");
    let mut ui = simulator(state.view(&verified, no_video()));
    assert!(ui.find("muted").is_ok());
    assert!(
        ui.find("speaking").is_err(),
        "a muted member is not speaking"
    );
    assert!(ui.find("Mute").is_ok(), "our own button is unchanged");
    drop(ui);
    state.handle_meeting(MeetingEvent::MemberMuted {
        peer_id: bob,
        muted: false,
    });
    let mut ui = simulator(state.view(&verified, no_video()));
    assert!(ui.find("muted").is_err());
    drop(ui);
    // A member who leaves takes the state along.
    state.handle_meeting(MeetingEvent::MemberMuted {
        peer_id: bob,
        muted: true,
    });
    state.handle_meeting(MeetingEvent::MemberLeft {
        peer_id: bob,
        name: "Bob".into(),
        reason: LeaveReason::Left,
    });
    assert!(state.muted_members.is_empty());
}

#[test]
fn chat_sends_and_counts_unread() {
    let (mut state, bob) = in_meeting(false);
    let verified = BTreeSet::new();
    let actions = interact(&mut state, &verified, |ui| {
        ui.click(selector::id(CHAT_INPUT)).unwrap();
        ui.typewrite("hello all");
    });
    assert!(actions.is_empty());
    let actions = click(&mut state, &verified, "Send");
    assert_eq!(actions, vec![Action::Chat("hello all".into())]);
    assert!(state.chat_input.is_empty());
    // The core reports it on its way, then delivered; a failed line offers a resend.
    state.handle_meeting(MeetingEvent::ChatSent {
        seq: 1,
        text: "hello all".into(),
        unix_ms: 1,
        id: 7,
        resumed: false,
    });
    assert!(shows(&state, &verified, "Ada (you): hello all"));
    assert!(shows(&state, &verified, "sending…"));
    state.handle_meeting(MeetingEvent::ChatDelivered { seq: 1 });
    assert!(shows(&state, &verified, "delivered ✓"));
    state.handle_meeting(MeetingEvent::ChatSent {
        seq: 2,
        text: "are you there".into(),
        unix_ms: 2,
        id: 7,
        resumed: false,
    });
    state.handle_meeting(MeetingEvent::ChatFailed {
        seq: 2,
        peers: vec![bob],
    });
    assert!(shows(&state, &verified, "not delivered to 1 member(s)"));
    let actions = click(&mut state, &verified, "Resend");
    assert_eq!(actions, vec![Action::ResendChat(2)]);
    assert!(shows(&state, &verified, "sending…"));
    // Hide the chat, receive a line: it counts as unread.
    click(&mut state, &verified, "Chat");
    assert_eq!(state.panel, Panel::Hidden);
    state.handle_meeting(MeetingEvent::Chat {
        from: bob,
        name: "Bob".into(),
        text: "hi Ada".into(),
        unix_ms: 1,
    });
    assert!(shows(&state, &verified, "Chat (1 new)"));
    click(&mut state, &verified, "Chat (1 new)");
    assert_eq!(state.unread, 0);
    let mut ui = simulator(state.view(&verified, no_video()));
    assert!(ui.find("Bob: hi Ada").is_ok());
}

#[test]
fn participants_verify_and_host_controls() {
    let (mut state, bob) = in_meeting(true);
    let verified = BTreeSet::new();
    click(&mut state, &verified, "Participants");
    assert!(shows(
        &state,
        &verified,
        format!("Safety number {}", safety_number_of(&bob))
    ));
    let actions = click(&mut state, &verified, "Mark Bob verified");
    assert_eq!(actions, vec![Action::SetVerified(bob, true)]);
    let actions = click(&mut state, &verified, "Remove Bob");
    assert_eq!(actions, vec![Action::Kick(bob)]);
    // A joiner knocks: the host lets them in.
    let carol = PeerId::random();
    state.handle_meeting(MeetingEvent::Knocking {
        peer_id: carol,
        name: "Carol".into(),
    });
    let mut ui = simulator(state.view(&verified, no_video()));
    assert!(ui.find("1 waiting in the lobby").is_ok());
    assert!(ui.find("Let Carol in").is_ok());
    drop(ui);
    let actions = click(&mut state, &verified, "Let in");
    assert_eq!(actions, vec![Action::Approve(carol)]);
}

#[test]
fn a_joiner_that_leaves_the_lobby_disappears_from_it() {
    let (mut state, _bob) = in_meeting(true);
    let verified = BTreeSet::new();
    let (carol, dave) = (PeerId::random(), PeerId::random());
    for (peer_id, name) in [(carol, "Carol"), (dave, "Dave")] {
        state.handle_meeting(MeetingEvent::Knocking {
            peer_id,
            name: name.into(),
        });
    }
    assert!(shows(&state, &verified, "2 waiting in the lobby"));
    state.handle_meeting(MeetingEvent::LobbyLeft {
        peer_id: carol,
        name: "Carol".into(),
    });
    let mut ui = simulator(state.view(&verified, no_video()));
    assert!(ui.find("1 waiting in the lobby").is_ok());
    assert!(ui.find("Let Carol in").is_err(), "Carol is gone");
    assert!(ui.find("Let Dave in").is_ok());
    assert!(ui.find("Carol left the lobby.").is_ok());
}

#[test]
fn membership_changes_and_key_rotation_are_announced() {
    let (mut state, bob) = in_meeting(false);
    let verified = BTreeSet::new();
    state.handle_meeting(MeetingEvent::Epoch {
        epoch: 2,
        security_code: code(2),
        members: vec![state.me],
    });
    state.handle_meeting(MeetingEvent::MemberLeft {
        peer_id: bob,
        name: "Bob".into(),
        reason: LeaveReason::TimedOut,
    });
    let mut ui = simulator(state.view(&verified, no_video()));
    assert!(ui.find("Bob lost connection.").is_ok());
    assert!(
        ui.find(format!(
            "Membership changed: new keys are in use (the security code is now {}).",
            code(2)
        ))
        .is_ok()
    );
    assert!(ui.find(format!("Security code {}", code(2))).is_ok());
    drop(ui);
    assert_eq!(state.tiles(&verified).len(), 1);
    // Someone new arrives after us: announced.
    state.handle_meeting(MeetingEvent::MemberJoined {
        peer_id: PeerId::random(),
        name: "Dan".into(),
    });
    assert!(state.notices.iter().any(|n| n == "Dan joined."));
    assert!(
        !state.notices.iter().any(|n| n == "Bob joined."),
        "members already there when we arrived are not announced"
    );
    let actions = click(&mut state, &verified, "Leave");
    assert_eq!(actions, vec![Action::Leave]);
}

#[test]
fn a_line_resumed_after_a_restart_is_shown_once_with_its_delivery() {
    let (mut state, _bob) = in_meeting(false);
    let verified = BTreeSet::new();
    // The core sends our unacknowledged line again before the history has loaded...
    state.handle_meeting(MeetingEvent::ChatSent {
        seq: 1,
        id: 99,
        text: "the plan".into(),
        unix_ms: 5,
        resumed: true,
    });
    // ...and the history, which has it already, arrives afterwards.
    let record = |text: &str| conclave_core::ChatRecord {
        from: "me".into(),
        name: "Ada".into(),
        text: text.into(),
        unix_ms: 5,
    };
    state.history(vec![record("earlier words"), record("the plan")]);
    let plans = state.chat.iter().filter(|l| l.text == "the plan").count();
    assert_eq!(plans, 1, "shown once: {:?}", state.chat);
    assert!(shows(&state, &verified, "sending…"));
    state.handle_meeting(MeetingEvent::ChatDelivered { seq: 1 });
    assert!(shows(&state, &verified, "delivered ✓"));

    // A resumed line whose history is already on screen gets the state, not a copy.
    state.handle_meeting(MeetingEvent::ChatSent {
        seq: 2,
        id: 100,
        text: "earlier words".into(),
        unix_ms: 4,
        resumed: true,
    });
    let words = state
        .chat
        .iter()
        .filter(|l| l.text == "earlier words")
        .count();
    assert_eq!(words, 1);
    assert_eq!(state.chat.len(), 2);
}

/// Receive statistics of `peer` at `level_dbfs`.
fn level(peer: PeerId, level_dbfs: f32) -> MediaEvent {
    MediaEvent::Stats(conclave_core::ReceiveStats {
        peer_id: peer,
        rx_frames: 10,
        lost_frames: 0,
        recovered_frames: 0,
        decrypt_failures: 0,
        jitter_ms: 1.0,
        level_dbfs,
        rtt_ms: None,
        send_estimate_kbps: None,
        send_loss: None,
    })
}

#[test]
fn the_stage_shows_the_pinned_member_a_shared_screen_or_the_active_speaker() {
    let (mut state, bob) = in_meeting(false);
    let verified = BTreeSet::new();
    let carol = PeerId::random();
    state.handle_meeting(MeetingEvent::MemberJoined {
        peer_id: carol,
        name: "Carol".into(),
    });
    assert_eq!(state.staged(), None, "a grid at first");

    // The speaker layout: whoever speaks is on the stage, and stays there through silence
    // until someone else speaks.
    assert!(click(&mut state, &verified, "Speaker view").is_empty());
    assert_eq!(state.layout, Layout::Speaker);
    state.handle_media(level(carol, -20.0));
    assert_eq!(state.staged(), Some(Staged::Camera(carol)));
    state.handle_media(level(bob, -15.0));
    assert_eq!(
        state.staged(),
        Some(Staged::Camera(carol)),
        "Carol still speaks: she keeps the stage"
    );
    state.handle_media(level(carol, -70.0));
    state.handle_media(level(bob, -15.0));
    assert_eq!(state.staged(), Some(Staged::Camera(bob)));
    state.handle_media(level(bob, -70.0));
    assert_eq!(
        state.staged(),
        Some(Staged::Camera(bob)),
        "silence keeps it"
    );

    // A shared screen takes the stage, whatever the layout.
    state.handle_media(MediaEvent::VideoStarted {
        peer_id: carol,
        kind: conclave_core::VideoKind::Screen,
        width: 1280,
        height: 720,
    });
    assert_eq!(state.staged(), Some(Staged::Screen(carol)));
    assert!(shows(&state, &verified, "Carol's screen"));
    assert!(shows(&state, &verified, "Waiting for Carol's screen…"));

    // A pin wins; pinning the sharer shows its screen; a second press unpins.
    state.update(Message::Pin(bob));
    assert_eq!(state.staged(), Some(Staged::Camera(bob)));
    assert!(shows(&state, &verified, "pinned"));
    state.update(Message::Pin(carol));
    assert_eq!(state.staged(), Some(Staged::Screen(carol)));
    state.update(Message::Pin(carol));
    assert_eq!(state.pinned, None);

    // No incoming video: the stage says so instead of waiting.
    let actions = click(&mut state, &verified, "Stop incoming video");
    assert_eq!(actions, vec![Action::IncomingVideo(false)]);
    assert!(shows(
        &state,
        &verified,
        "Incoming video is off. Turn it on to see the shared screen."
    ));
    let actions = click(&mut state, &verified, "Show incoming video");
    assert_eq!(actions, vec![Action::IncomingVideo(true)]);

    // A member who leaves takes its pin and the stage along.
    state.update(Message::Pin(carol));
    state.handle_meeting(MeetingEvent::MemberLeft {
        peer_id: carol,
        name: "Carol".into(),
        reason: LeaveReason::Left,
    });
    assert_eq!(state.pinned, None);
    assert_eq!(state.staged(), Some(Staged::Camera(bob)));
    assert!(click(&mut state, &verified, "Grid view").is_empty());
    assert_eq!(state.staged(), None);
}

#[test]
fn the_camera_button_turns_it_off_and_on_and_is_off_without_a_camera() {
    let (state, _bob) = in_meeting(false);
    let verified = BTreeSet::new();
    let mut state = state.with_camera(Some(true));
    assert_eq!(
        click(&mut state, &verified, "Stop camera"),
        vec![Action::Camera(false)]
    );
    assert_eq!(
        click(&mut state, &verified, "Start camera"),
        vec![Action::Camera(true)]
    );
    let mut none = state.with_camera(None);
    assert!(shows(&none, &verified, "No camera"));
    assert_eq!(none.update(Message::ToggleCamera), None);
}

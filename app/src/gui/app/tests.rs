//! Tests of the application: screens, shortcuts, the client configuration, leaving and
//! closing, driven through `update` without a window.

use super::*;
use conclave_core::{Event as CoreEvent, MeetingEvent};
use iced::keyboard::{Location, Modifiers, key};
use iced_test::simulator;

fn options(dir: &std::path::Path) -> Options {
    Options {
        data_dir: dir.to_owned(),
        name: Some("Ada".into()),
        listen: Vec::new(),
        mdns: false,
        audio_in: Some("silence".into()),
        audio_out: Some("null".into()),
        media_bind: Vec::new(),
        noise_suppression: None,
        relay_only: false,
        video_in: None,
        started: Instant::now(),
        store_key: KeySource::InsecureKeyFile,
    }
}

fn started(app: &mut App) -> PeerId {
    let peer_id = PeerId::random();
    let _ = app.update(Message::Bridge(bridge::Event::Started {
        me: Me {
            peer_id,
            safety_number: "11111 22222".into(),
            name: "Ada".into(),
        },
        verified: Vec::new(),
        recent: Vec::new(),
    }));
    peer_id
}

fn press(key: Key, modifiers: Modifiers) -> keyboard::Event {
    keyboard::Event::KeyPressed {
        key: key.clone(),
        modified_key: key,
        physical_key: key::Physical::Unidentified(key::NativeCode::Unidentified),
        location: Location::Standard,
        modifiers,
        text: None,
        repeat: false,
    }
}

#[test]
fn shortcuts() {
    assert_eq!(
        shortcut(press(Key::Named(Named::Tab), Modifiers::empty())),
        Some(Shortcut::FocusNext)
    );
    assert_eq!(
        shortcut(press(Key::Named(Named::Tab), Modifiers::SHIFT)),
        Some(Shortcut::FocusPrevious)
    );
    assert_eq!(
        shortcut(press(Key::Character("d".into()), Modifiers::CTRL)),
        Some(Shortcut::ToggleMute)
    );
    assert_eq!(
        shortcut(press(Key::Character("e".into()), Modifiers::CTRL)),
        Some(Shortcut::ToggleCamera)
    );
    assert_eq!(
        shortcut(press(
            Key::Character("E".into()),
            Modifiers::CTRL | Modifiers::SHIFT
        )),
        Some(Shortcut::ToggleShare)
    );
    assert_eq!(
        shortcut(press(Key::Character("d".into()), Modifiers::empty())),
        None
    );
    assert_eq!(
        shortcut(press(Key::Character(",".into()), Modifiers::CTRL)),
        Some(Shortcut::Settings)
    );
}

#[test]
fn config_follows_flags_and_saved_relays() {
    let dir = crate::gui::private_tempdir();
    let relay = format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", PeerId::random());
    let prefs = Prefs {
        relays: vec![relay.clone(), "garbage".into()],
        ..Prefs::default()
    };
    let app = App::with_prefs(options(dir.path()), prefs);
    let config = app.config();
    assert_eq!(config.relays.len(), 1);
    assert_eq!(config.relays[0].to_string(), relay);
    let media = config.media.unwrap();
    assert_eq!(media.audio_in, "silence");
    assert_eq!(media.audio_out, None);
    assert_eq!(config.name.as_deref(), Some("Ada"));
    assert!(media.noise_suppression, "the saved default is on");
    assert!(!media.relay_only);
    // Without flags, the devices chosen in Settings.
    let prefs = Prefs {
        audio_input: Some("USB mic".into()),
        ..Prefs::default()
    };
    let mut options = options(dir.path());
    options.audio_in = None;
    options.audio_out = None;
    let media = App::with_prefs(options, prefs).config().media.unwrap();
    assert_eq!(media.audio_in, "device:USB mic");
    assert_eq!(media.audio_out, Some(PathBuf::from("device")));
}

#[test]
fn a_relay_only_meeting_restarts_the_client_with_the_relay_only_policy() {
    let dir = crate::gui::private_tempdir();
    let mut app = App::with_prefs(options(dir.path()), Prefs::default());
    started(&mut app);
    let _ = app.update(Message::Home(home::Message::RelayOnlyToggled(true)));
    let _ = app.update(Message::Home(home::Message::NewMeeting));
    assert!(app.relay_only_active);
    assert!(app.config().media.unwrap().relay_only);
    assert_eq!(app.screen, Screen::Meeting);
}

#[test]
fn home_then_meeting_then_home() {
    let dir = crate::gui::private_tempdir();
    let mut app = App::with_prefs(options(dir.path()), Prefs::default());
    let mut ui = simulator(app.view());
    assert!(ui.find("Starting Conclave…").is_ok());
    drop(ui);
    let me = started(&mut app);
    let mut ui = simulator(app.view());
    assert!(ui.find("Safety number: 11111 22222").is_ok());
    let messages: Vec<Message> = {
        ui.click("New meeting").unwrap();
        ui.into_messages().collect()
    };
    for message in messages {
        let _ = app.update(message);
    }
    assert_eq!(app.screen, Screen::Meeting);
    let mut ui = simulator(app.view());
    assert!(ui.find("Creating the meeting…").is_ok());
    drop(ui);
    let _ = app.update(Message::Bridge(bridge::Event::Created(bridge::Redacted(
        "conclave:v1".into(),
    ))));
    let _ = app.update(Message::Bridge(bridge::Event::Core(CoreEvent::Meeting(
        MeetingEvent::Joined {
            meeting_id: conclave_core::MeetingId([1; 16]),
            epoch: 1,
            security_code: conclave_core::SecurityCode::from_authenticator(&[1; 32]),
        },
    ))));
    assert_eq!(app.title(), "Conclave — meeting (1 people)");
    let meeting = app.meeting.as_ref().unwrap();
    assert_eq!(meeting.me, me);
    assert_eq!(meeting.phase, meeting::Phase::In);
    // A missing microphone is a banner, not a crash.
    let _ = app.update(Message::Bridge(bridge::Event::Core(CoreEvent::Warning {
        message: "no microphone found; you are listen-only".into(),
    })));
    let mut ui = simulator(app.view());
    assert!(ui.find("no microphone found; you are listen-only").is_ok());
    drop(ui);
    let _ = app.update(Message::Bridge(bridge::Event::Core(CoreEvent::Meeting(
        MeetingEvent::Left,
    ))));
    assert_eq!(app.screen, Screen::Home);
    assert!(app.meeting.is_none());
}

#[test]
fn leaving_goes_home_even_without_the_confirmation() {
    let dir = crate::gui::private_tempdir();
    let mut app = App::with_prefs(options(dir.path()), Prefs::default());
    started(&mut app);
    let _ = app.update(Message::Home(home::Message::NewMeeting));
    let _ = app.update(Message::Bridge(bridge::Event::Core(CoreEvent::Meeting(
        MeetingEvent::Joined {
            meeting_id: conclave_core::MeetingId([1; 16]),
            epoch: 1,
            security_code: conclave_core::SecurityCode::from_authenticator(&[1; 32]),
        },
    ))));
    let _ = app.update(Message::Shortcut(Shortcut::Leave));
    assert!(app.leaving);
    assert_eq!(app.screen, Screen::Meeting, "waits for the goodbye first");
    let _ = app.update(Message::LeaveGraceOver);
    assert_eq!(app.screen, Screen::Home);
    assert!(!app.leaving);
}

#[test]
fn settings_open_and_close_with_the_keyboard() {
    let dir = crate::gui::private_tempdir();
    let mut app = App::with_prefs(options(dir.path()), Prefs::default());
    let _ = app.update(Message::Shortcut(Shortcut::Settings));
    assert_eq!(app.screen, Screen::Settings);
    let mut ui = simulator(app.view());
    assert!(ui.find("Identity backup").is_ok());
    drop(ui);
    let _ = app.update(Message::Shortcut(Shortcut::Back));
    assert_eq!(app.screen, Screen::Home);
    // Leaving settings saved the settings file.
    assert!(dir.path().join(crate::gui::prefs::FILE_NAME).exists());
}

#[test]
fn a_failed_start_is_a_banner() {
    let dir = crate::gui::private_tempdir();
    let mut app = App::with_prefs(options(dir.path()), Prefs::default());
    let _ = app.update(Message::Bridge(bridge::Event::StartFailed(
        "Conclave could not start: the data directory is in use".into(),
    )));
    let mut ui = simulator(app.view());
    assert!(
        ui.find("Conclave could not start: the data directory is in use")
            .is_ok()
    );
}

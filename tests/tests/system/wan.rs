//! WAN emulation (`conclave_tests::wan`): impaired uplinks add the delay and loss their
//! profile promises, measured with `ping` across the emulated internet.
//!
//! Hosts behind NAT cannot be pinged, so home ↔ home round trips are measured from home 1's
//! host to home 2's router: the echo request leaves through home 1's uplink, the reply
//! through home 2's.

use std::process::Command;
use std::time::Duration;

use conclave_tests::nat::{Home, Internet, NatKind, RELAY_ADDR};
use conclave_tests::netns::available;
use conclave_tests::wan::Profile;

/// What `ping` reported.
#[derive(Debug)]
struct Pings {
    sent: u32,
    received: u32,
    avg_ms: f64,
    mdev_ms: f64,
}

/// Pings `target` from `home`'s host `count` times, `interval` apart.
fn ping(home: &Home, target: &str, count: u32, interval: Duration) -> Pings {
    let output = Command::new("ip")
        .args(["netns", "exec", &home.host, "ping", "-n", "-q", "-W", "2"])
        .args(["-c", &count.to_string()])
        .args(["-i", &format!("{}", interval.as_secs_f64())])
        .arg(target)
        .output()
        .expect("run ping (package iputils-ping)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    // "500 packets transmitted, 495 received, 1% packet loss, time 2601ms"
    let counts: Vec<u32> = text
        .lines()
        .find(|l| l.contains(" transmitted, "))
        .map(|l| {
            l.split(", ")
                .take(2)
                .filter_map(|part| part.split(' ').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(counts.len(), 2, "ping's output: {text}");
    let (sent, received) = (counts[0], counts[1]);
    // "rtt min/avg/max/mdev = 50.1/50.4/50.9/0.3 ms, pipe 2"
    let stats: Vec<f64> = text
        .lines()
        .find(|l| l.starts_with("rtt"))
        .and_then(|l| l.split(" = ").nth(1))
        .map(|v| {
            v.split(" ms")
                .next()
                .unwrap_or_default()
                .split('/')
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(stats.len(), 4, "ping's output: {text}");
    Pings {
        sent,
        received,
        avg_ms: stats[1],
        mdev_ms: stats[3],
    }
}

/// Asserts that a measured average RTT is the expected one within [0.8×, 1.5×] (+ 3 ms for
/// the namespaces and the delayer's polling).
fn assert_rtt(what: &str, pings: &Pings, expected: Duration) {
    let expected_ms = expected.as_secs_f64() * 1000.0;
    eprintln!("{what}: {pings:?}, expected {expected_ms} ms");
    assert!(
        pings.avg_ms >= 0.8 * expected_ms && pings.avg_ms <= 1.5 * expected_ms + 3.0,
        "{what}: average RTT {} ms, expected ≈ {expected_ms} ms",
        pings.avg_ms
    );
}

/// Two port-restricted homes on `continental` (50 ms per uplink): RTT ≈ 50 ms to the relay
/// and ≈ 100 ms to the other home; taking the impairment off restores a fast link.
#[test]
fn continental_uplinks_delay_round_trips() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let profile = Profile::CONTINENTAL;
    let mut internet = Internet::new("wd").unwrap();
    let home_1 = internet
        .add_home_with(NatKind::PortRestricted, Some(&profile))
        .unwrap();
    let home_2 = internet
        .add_home_with(NatKind::PortRestricted, Some(&profile))
        .unwrap();
    assert_eq!(internet.impairment(&home_1), Some(&profile));

    let interval = Duration::from_millis(200);
    let to_relay = ping(&home_1, RELAY_ADDR, 5, interval);
    assert_eq!(to_relay.received, to_relay.sent, "{to_relay:?}");
    assert_rtt("home 1 → relay", &to_relay, profile.home_to_relay_rtt());

    let to_home = ping(&home_1, &home_2.public_addr, 5, interval);
    assert_eq!(to_home.received, to_home.sent, "{to_home:?}");
    assert_rtt("home 1 → home 2", &to_home, profile.home_to_home_rtt());

    // Off again: only the veths and the bridge are left.
    internet.impair(&home_1, None).unwrap();
    internet.impair(&home_2, None).unwrap();
    assert_eq!(internet.impairment(&home_1), None);
    let direct = ping(&home_1, &home_2.public_addr, 3, interval);
    assert_eq!(direct.received, direct.sent, "{direct:?}");
    assert!(direct.avg_ms < 5.0, "unimpaired RTT {direct:?}");
}

/// `intercontinental` (125 ms ± 10 ms, 1 % loss per uplink): 500 pings 5 ms apart from a
/// home to the relay lose a few at most and average ≈ 125 ms.
#[test]
fn intercontinental_uplink_loses_about_one_percent() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let profile = Profile::INTERCONTINENTAL;
    let mut internet = Internet::new("wl").unwrap();
    let home = internet
        .add_home_with(NatKind::PortRestricted, Some(&profile))
        .unwrap();

    let pings = ping(&home, RELAY_ADDR, 500, Duration::from_millis(5));
    let lost = pings.sent - pings.received;
    let lost_pct = 100.0 * f64::from(lost) / f64::from(pings.sent);
    eprintln!("intercontinental: {pings:?}, {lost_pct:.1} % lost");
    assert_eq!(pings.sent, 500, "{pings:?}");
    assert!(lost_pct <= 5.0, "{lost_pct} % lost: {pings:?}");
    assert_rtt("home → relay", &pings, profile.home_to_relay_rtt());
    // Jitter shows (uniform ± 10 ms has a deviation of 5.8 ms; holding packets in order
    // narrows it), but stays within the jitter.
    assert!(
        pings.mdev_ms > 0.5 && pings.mdev_ms < 10.0,
        "RTT deviation {} ms",
        pings.mdev_ms
    );
}

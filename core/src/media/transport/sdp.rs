//! Holding back an offer's reflexive candidates, so that both ends' first packets cross.
//!
//! Two homes behind port-restricted NATs open a direct path only if each one's first packet
//! to the other leaves its own NAT before the other's first packet arrives there. A packet
//! that arrives first finds no mapping: the router takes it for itself, and on a Linux
//! router without an input firewall its connection-tracking entry then occupies the very
//! port pair the home's own reply would use, so masquerade maps the reply to another port,
//! which the other NAT filters out. Each side's packets then die at the other's router for as
//! long as they keep coming (`docs/architecture.md`, "NAT traversal").
//!
//! The answering side learns the offerer's addresses one signalling trip before the offerer
//! learns the answerer's, and its ICE agent starts checking at once, so its packets always
//! arrive first. It therefore applies the offer without the offerer's reflexive candidates
//! (`srflx`, `prflx`: the addresses behind a NAT) and adds them once its answer has had time
//! to arrive, about half a round trip after sending it: both ends then start checking those
//! paths at the same moment, give or take the one-way delay, which is what a crossing needs.
//! This is the synchronisation libp2p's DCUtR uses for a simultaneous open, applied to ICE.
//! Host and relayed candidates are applied at once: a host pair on a LAN needs no crossing,
//! and a relay accepts packets from anyone with a permission.

/// A candidate line taken out of a session description, to be added later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCandidate {
    /// The candidate attribute without its `a=` (`candidate:…`).
    pub candidate: String,
    /// The `a=mid` of its media section, if it has one.
    pub mid: Option<String>,
    /// The index of its media section.
    pub mline_index: u16,
}

/// Whether a candidate attribute (`candidate:foundation component transport priority
/// address port typ TYPE …`, RFC 8839 §5.1) names a reflexive address (`srflx`, `prflx`).
fn is_reflexive(candidate: &str) -> bool {
    let mut fields = candidate.split_ascii_whitespace().skip(6);
    fields.next() == Some("typ") && matches!(fields.next(), Some("srflx" | "prflx"))
}

/// Splits `sdp` into the description without its reflexive candidates, and those candidates
/// (with the media section each belongs to). A description without any is returned as it is.
pub fn hold_back_reflexive(sdp: &str) -> (String, Vec<HeldCandidate>) {
    let mut kept = String::with_capacity(sdp.len());
    let mut held: Vec<HeldCandidate> = Vec::new();
    // Candidates of a section may come before its `a=mid`: they get it once it is known.
    let mut section_start = 0;
    let mut mline_index: Option<u16> = None;
    let mut mid: Option<String> = None;
    for line in sdp.split_inclusive('\n') {
        let text = line.trim_end_matches(['\r', '\n']);
        if text.starts_with("m=") {
            mline_index = Some(mline_index.map_or(0, |i| i.saturating_add(1)));
            mid = None;
            section_start = held.len();
        } else if let Some(value) = text.strip_prefix("a=mid:") {
            mid = Some(value.to_owned());
            for candidate in &mut held[section_start..] {
                candidate.mid = mid.clone();
            }
        } else if let (Some(candidate), Some(index)) = (text.strip_prefix("a="), mline_index)
            && candidate.starts_with("candidate:")
            && is_reflexive(candidate)
        {
            held.push(HeldCandidate {
                candidate: candidate.to_owned(),
                mid: mid.clone(),
                mline_index: index,
            });
            continue;
        }
        kept.push_str(line);
    }
    (kept, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
o=- 1 1 IN IP4 0.0.0.0\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=candidate:1 1 udp 2130706431 192.168.1.2 40000 typ host\r\n\
a=candidate:2 1 udp 1694498815 198.51.100.11 40000 typ srflx raddr 0.0.0.0 rport 40000\r\n\
a=mid:0\r\n\
a=candidate:3 1 udp 16777215 198.51.100.1 50000 typ relay raddr 198.51.100.11 rport 40001\r\n\
a=candidate:4 1 udp 1845501695 198.51.100.11 40002 typ prflx raddr 0.0.0.0 rport 40002\r\n\
a=end-of-candidates\r\n";

    #[test]
    fn reflexive_candidates_are_held_back_with_their_section_and_the_rest_is_kept() {
        let (kept, held) = hold_back_reflexive(OFFER);
        assert!(kept.contains("typ host"));
        assert!(kept.contains("typ relay"));
        assert!(!kept.contains("typ srflx"));
        assert!(!kept.contains("typ prflx"));
        assert!(kept.contains("a=mid:0\r\n") && kept.ends_with("a=end-of-candidates\r\n"));
        assert_eq!(kept.lines().count(), OFFER.lines().count() - 2);
        assert_eq!(
            held,
            vec![
                HeldCandidate {
                    candidate: "candidate:2 1 udp 1694498815 198.51.100.11 40000 typ srflx raddr 0.0.0.0 rport 40000".into(),
                    mid: Some("0".into()),
                    mline_index: 0,
                },
                HeldCandidate {
                    candidate: "candidate:4 1 udp 1845501695 198.51.100.11 40002 typ prflx raddr 0.0.0.0 rport 40002".into(),
                    mid: Some("0".into()),
                    mline_index: 0,
                },
            ]
        );
    }

    #[test]
    fn a_description_without_reflexive_candidates_is_unchanged() {
        let relay_only = OFFER
            .lines()
            .filter(|l| !l.contains("typ srflx") && !l.contains("typ prflx"))
            .map(|l| format!("{l}\r\n"))
            .collect::<String>();
        let (kept, held) = hold_back_reflexive(&relay_only);
        assert_eq!(kept, relay_only);
        assert!(held.is_empty());
    }

    #[test]
    fn candidates_in_a_later_section_get_its_index_and_only_the_type_field_counts() {
        let sdp = "v=0\r\nm=audio 9 X 0\r\na=mid:a\r\nm=video 9 X 0\r\na=mid:v\r\n\
a=candidate:9 1 udp 1 10.0.0.1 1 typ srflx\r\na=candidate:8 1 udp 1 typ 1 typ host\r\n";
        let (kept, held) = hold_back_reflexive(sdp);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].mline_index, 1);
        assert_eq!(held[0].mid.as_deref(), Some("v"));
        assert!(kept.contains("typ host"));
    }
}

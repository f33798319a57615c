//! Small coloured labels on tiles and in lists: connection path, verified, muted, host.
//!
//! Colours are chosen for contrast (WCAG AA, ≥ 4.5:1) of white text on the badge
//! background; every badge also carries words, never colour alone.

use iced::widget::{container, text};
use iced::{Border, Color, Element};

/// Badge background colours (all ≥ 4.5:1 against white text).
pub(crate) mod colour {
    use iced::Color;
    /// Direct path / verified: dark green.
    pub(crate) const GOOD: Color = Color::from_rgb(0.11, 0.42, 0.20);
    /// Relayed path: dark amber-brown.
    pub(crate) const CAUTION: Color = Color::from_rgb(0.55, 0.32, 0.0);
    /// Failure / muted: dark red.
    pub(crate) const BAD: Color = Color::from_rgb(0.66, 0.11, 0.11);
    /// Neutral information: slate.
    pub(crate) const NEUTRAL: Color = Color::from_rgb(0.25, 0.29, 0.36);
}

/// A rounded label with white text on `background`.
pub(crate) fn badge<'a, Message: 'a>(label: String, background: Color) -> Element<'a, Message> {
    container(text(label).size(13).color(Color::WHITE))
        .padding([2, 8])
        .style(move |_theme: &iced::Theme| container::Style {
            background: Some(background.into()),
            border: Border {
                radius: 8.0.into(),
                ..Border::default()
            },
            ..container::Style::default()
        })
        .into()
}

/// The media path to a member as words: "direct · 12 ms", "relayed · 80 ms",
/// "connecting…".
pub(crate) fn connection_label(path: Option<&str>, state: &str, rtt_ms: Option<f64>) -> String {
    let rtt = rtt_ms
        .map(|rtt| format!(" · {rtt:.0} ms"))
        .unwrap_or_default();
    match (state, path) {
        ("connected", Some(path)) => format!("{path}{rtt}"),
        ("failed", _) => "no media connection".to_owned(),
        ("disconnected", _) => "reconnecting…".to_owned(),
        _ => "connecting…".to_owned(),
    }
}

/// The connection badge of a member.
pub(crate) fn connection<'a, Message: 'a>(
    path: Option<&str>,
    state: &str,
    rtt_ms: Option<f64>,
) -> Element<'a, Message> {
    let colour = match (state, path) {
        ("connected", Some("direct")) => colour::GOOD,
        ("connected", _) => colour::CAUTION,
        ("failed", _) => colour::BAD,
        _ => colour::NEUTRAL,
    };
    badge(connection_label(path, state, rtt_ms), colour)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_labels_say_the_path_and_rtt() {
        assert_eq!(
            connection_label(Some("direct"), "connected", Some(12.4)),
            "direct · 12 ms"
        );
        assert_eq!(
            connection_label(Some("relayed"), "connected", None),
            "relayed"
        );
        assert_eq!(connection_label(None, "new", None), "connecting…");
        assert_eq!(
            connection_label(Some("direct"), "failed", None),
            "no media connection"
        );
    }
}

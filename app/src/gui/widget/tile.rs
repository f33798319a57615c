//! One participant's tile in the meeting grid: initials avatar, name, speaking ring, and
//! badges (you, host, muted, verified, connection path with RTT).

use iced::widget::{Row, column, container, text};
use iced::{Alignment, Border, Color, Element, Length};

use super::badge::{self, colour};

/// Level (dBFS) above which a member counts as speaking.
pub(crate) const SPEAKING_DBFS: f32 = -45.0;

/// What a tile shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TileInfo {
    /// Display name (may be empty until the member told us).
    pub(crate) name: String,
    /// Short peer id, shown when the name is empty.
    pub(crate) short_id: String,
    /// This tile is us.
    pub(crate) is_me: bool,
    /// Muted, when known.
    pub(crate) muted: Option<bool>,
    /// Safety number confirmed by the user.
    pub(crate) verified: bool,
    /// Current speaking level (dBFS), when audio flows.
    pub(crate) level_dbfs: Option<f32>,
    /// Media connection: (state, path, rtt).
    pub(crate) connection: Option<(String, Option<String>, Option<f64>)>,
}

impl TileInfo {
    /// Whether the speaking ring is lit.
    pub(crate) fn speaking(&self) -> bool {
        self.muted != Some(true) && self.level_dbfs.is_some_and(|l| l > SPEAKING_DBFS)
    }

    /// The name to show.
    pub(crate) fn label(&self) -> String {
        let name = if self.name.is_empty() {
            self.short_id.clone()
        } else {
            self.name.clone()
        };
        if self.is_me {
            format!("{name} (you)")
        } else {
            name
        }
    }
}

/// Up to two initials of a name ("Ada Lovelace" → "AL"; "" → "?").
pub(crate) fn initials(name: &str) -> String {
    let letters: String = name
        .split_whitespace()
        .filter_map(|word| word.chars().find(|c| c.is_alphanumeric()))
        .take(2)
        .flat_map(char::to_uppercase)
        .collect();
    if letters.is_empty() {
        "?".to_owned()
    } else {
        letters
    }
}

/// Avatar background colour, stable per name.
fn avatar_colour(name: &str) -> Color {
    const COLOURS: [Color; 6] = [
        Color::from_rgb(0.16, 0.32, 0.55),
        Color::from_rgb(0.42, 0.20, 0.52),
        Color::from_rgb(0.10, 0.40, 0.38),
        Color::from_rgb(0.50, 0.25, 0.12),
        Color::from_rgb(0.30, 0.34, 0.12),
        Color::from_rgb(0.45, 0.14, 0.28),
    ];
    let sum: usize = name.bytes().map(usize::from).sum();
    COLOURS[sum % COLOURS.len()]
}

/// Draws a tile.
pub(crate) fn tile<'a, Message: 'a>(info: &TileInfo) -> Element<'a, Message> {
    let speaking = info.speaking();
    let avatar = container(text(initials(&info.name)).size(30).color(Color::WHITE))
        .center(84)
        .style({
            let background = avatar_colour(&info.name);
            move |_theme: &iced::Theme| container::Style {
                background: Some(background.into()),
                border: Border {
                    radius: 42.0.into(),
                    width: if speaking { 4.0 } else { 0.0 },
                    color: Color::from_rgb(0.30, 0.85, 0.45),
                },
                ..container::Style::default()
            }
        });
    let mut badges = Row::new().spacing(6);
    if info.muted == Some(true) {
        badges = badges.push(badge::badge("muted".to_owned(), colour::BAD));
    }
    if speaking {
        badges = badges.push(badge::badge("speaking".to_owned(), colour::GOOD));
    }
    if info.verified {
        badges = badges.push(badge::badge("verified".to_owned(), colour::GOOD));
    }
    if let Some((state, path, rtt)) = &info.connection {
        badges = badges.push(badge::connection(path.as_deref(), state, *rtt));
    }
    container(
        column![
            avatar,
            text(info.label()).size(18),
            badges.wrap().vertical_spacing(4).align_x(Alignment::Center)
        ]
        .spacing(10)
        .align_x(Alignment::Center),
    )
    .padding(16)
    .width(Length::Fixed(220.0))
    .height(Length::Fixed(200.0))
    .align_x(Alignment::Center)
    .align_y(Alignment::Center)
    .style(move |theme: &iced::Theme| {
        let palette = theme.extended_palette();
        container::Style {
            background: Some(palette.background.weak.color.into()),
            border: Border {
                radius: 12.0.into(),
                width: if speaking { 2.0 } else { 1.0 },
                color: if speaking {
                    Color::from_rgb(0.30, 0.85, 0.45)
                } else {
                    palette.background.strong.color
                },
            },
            ..container::Style::default()
        }
    })
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_take_the_first_letters_of_two_words() {
        assert_eq!(initials("Ada Lovelace"), "AL");
        assert_eq!(initials("grace"), "G");
        assert_eq!(initials("  "), "?");
        assert_eq!(initials("émile zola brown"), "ÉZ");
    }

    #[test]
    fn a_muted_member_is_never_speaking() {
        let mut info = TileInfo {
            name: "Ada".into(),
            short_id: "12D3".into(),
            is_me: false,
            muted: None,
            verified: false,
            level_dbfs: Some(-20.0),
            connection: None,
        };
        assert!(info.speaking());
        info.muted = Some(true);
        assert!(!info.speaking());
        info.muted = Some(false);
        info.level_dbfs = Some(-70.0);
        assert!(!info.speaking());
    }
}

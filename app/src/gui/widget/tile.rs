//! One participant's tile (in the grid, in the strip beside the stage, or on the stage):
//! its camera's picture or the initials avatar when the camera is off, the name, the
//! speaking ring, and badges (pinned, muted, speaking, verified, connection path with RTT).

use iced::widget::{Row, column, container, image, mouse_area, stack, text};
use iced::{Alignment, Border, Color, ContentFit, Element, Length};

use super::badge::{self, colour};
use crate::gui::video::Shown;

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
    /// The member (`None`: us).
    pub(crate) peer: Option<conclave_core::PeerId>,
    /// Pinned to the stage.
    pub(crate) pinned: bool,
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

/// How large a tile is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum TileSize {
    /// In the grid: as large as the grid's room allows ([`grid_tile`]).
    Grid { width: f32, height: f32 },
    /// In the strip of faces under the stage.
    Strip,
    /// On the stage: all the room there is (this much).
    Stage { width: f32, height: f32 },
}

/// Width and height of a tile in the strip under the stage.
const STRIP_TILE: (f32, f32) = (192.0, 108.0);
/// Smallest tile of the grid; below it, the grid scrolls.
const MIN_GRID_WIDTH: f32 = 208.0;

impl TileSize {
    /// Width and height.
    pub(crate) fn dimensions(self) -> (f32, f32) {
        match self {
            TileSize::Grid { width, height } | TileSize::Stage { width, height } => (width, height),
            TileSize::Strip => STRIP_TILE,
        }
    }

    fn avatar(self) -> f32 {
        match self {
            TileSize::Grid { height, .. } => (height * 0.4).clamp(40.0, 140.0),
            TileSize::Strip => 44.0,
            TileSize::Stage { .. } => 140.0,
        }
    }

    fn compact(self) -> bool {
        match self {
            TileSize::Strip => true,
            TileSize::Grid { width, .. } => width < 280.0,
            TileSize::Stage { .. } => false,
        }
    }
}

/// The largest 16:9 tile with which `count` tiles, `gap` apart, fit in `width × height`
/// (columns chosen to make them largest), and the number of columns; never smaller than
/// [`MIN_GRID_WIDTH`] (the grid scrolls then).
pub(crate) fn grid_tile(count: usize, width: f32, height: f32, gap: f32) -> (TileSize, usize) {
    let count = count.max(1);
    let mut best = (0.0f32, 1usize);
    for columns in 1..=count {
        let rows = count.div_ceil(columns);
        let across = (width - gap * (columns - 1) as f32) / columns as f32;
        let down = (height - gap * (rows - 1) as f32) / rows as f32;
        let tile_width = across.min(down * 16.0 / 9.0);
        if tile_width > best.0 {
            best = (tile_width, columns);
        }
    }
    // A multiple of 16 wide, so that a 16:9 picture made this size has whole pixels.
    let tile_width = ((best.0 / 16.0).floor() * 16.0).max(MIN_GRID_WIDTH);
    (
        TileSize::Grid {
            width: tile_width,
            height: tile_width * 9.0 / 16.0,
        },
        best.1,
    )
}

/// The green of the speaking ring.
const SPEAKING: Color = Color::from_rgb(0.30, 0.85, 0.45);

/// Draws a tile of `size`: `video` filling it (cropped to its shape) when the member's
/// camera sends one, else the initials avatar; the name and badges along the bottom.
/// Pressing it sends `on_press` (pin or unpin).
pub(crate) fn tile<'a, Message: Clone + 'a>(
    info: &TileInfo,
    video: Option<&Shown>,
    size: TileSize,
    on_press: Option<Message>,
) -> Element<'a, Message> {
    let speaking = info.speaking();
    let (width, height) = size.dimensions();
    let picture: Element<'a, Message> = match video {
        Some(shown) => image(shown.handle.clone())
            .content_fit(ContentFit::Cover)
            .filter_method(shown.filter_in(width, height))
            .width(Length::Fill)
            .height(Length::Fill)
            .into(),
        None => container(avatar(&info.name, size.avatar(), speaking))
            .center(Length::Fill)
            .into(),
    };
    let mut badges = Row::new().spacing(6).align_y(Alignment::Center);
    let compact = size.compact();
    badges = badges.push(
        text(info.label())
            .size(if compact { 13 } else { 15 })
            .color(Color::WHITE),
    );
    if info.pinned {
        badges = badges.push(badge::badge("pinned".to_owned(), colour::NEUTRAL));
    }
    if info.muted == Some(true) {
        badges = badges.push(badge::badge("muted".to_owned(), colour::BAD));
    }
    if speaking && !compact {
        badges = badges.push(badge::badge("speaking".to_owned(), colour::GOOD));
    }
    if info.verified && !compact {
        badges = badges.push(badge::badge("verified".to_owned(), colour::GOOD));
    }
    if let Some((state, path, rtt)) = &info.connection
        && !compact
    {
        badges = badges.push(badge::connection(path.as_deref(), state, *rtt));
    }
    let caption = container(badges.wrap().vertical_spacing(4))
        .padding([4, 8])
        .width(Length::Fill)
        .style(|_theme: &iced::Theme| container::Style {
            background: Some(Color::from_rgba(0.0, 0.0, 0.0, 0.55).into()),
            ..container::Style::default()
        });
    let layers = stack![
        picture,
        column![iced::widget::space().height(Length::Fill), caption]
    ];
    let framed = container(layers)
        .width(Length::Fixed(width))
        .height(Length::Fixed(height))
        .clip(true)
        .style(move |theme: &iced::Theme| {
            let palette = theme.extended_palette();
            container::Style {
                background: Some(palette.background.weak.color.into()),
                border: Border {
                    radius: 10.0.into(),
                    width: if speaking { 3.0 } else { 1.0 },
                    color: if speaking {
                        SPEAKING
                    } else {
                        palette.background.strong.color
                    },
                },
                ..container::Style::default()
            }
        });
    match on_press {
        Some(message) => mouse_area(framed).on_press(message).into(),
        None => framed.into(),
    }
}

/// The initials on a disc of the name's colour, ringed while speaking.
fn avatar<'a, Message: 'a>(name: &str, diameter: f32, speaking: bool) -> Element<'a, Message> {
    container(
        text(initials(name))
            .size(diameter * 0.4)
            .color(Color::WHITE),
    )
    .center(diameter)
    .style({
        let background = avatar_colour(name);
        move |_theme: &iced::Theme| container::Style {
            background: Some(background.into()),
            border: Border {
                radius: (diameter / 2.0).into(),
                width: if speaking { 4.0 } else { 0.0 },
                color: SPEAKING,
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
    fn the_grid_makes_its_tiles_as_large_as_its_room_allows() {
        let size = |(tile, _): (TileSize, usize)| match tile {
            TileSize::Grid { width, height } => (width, height),
            other => panic!("{other:?}"),
        };
        // Four people in a wide room: two by two.
        let (tile, columns) = grid_tile(4, 1000.0, 600.0, 10.0);
        assert_eq!(columns, 2);
        assert_eq!(size((tile, columns)), (480.0, 270.0));
        // Two people side by side in a wide room, one above the other in a tall one.
        assert_eq!(grid_tile(2, 1000.0, 300.0, 10.0).1, 2);
        assert_eq!(grid_tile(2, 400.0, 800.0, 10.0).1, 1);
        // Many people in a small room: the smallest tile, and the grid scrolls.
        assert_eq!(size(grid_tile(30, 600.0, 300.0, 10.0)).0, MIN_GRID_WIDTH);
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
            peer: None,
            pinned: false,
        };
        assert!(info.speaking());
        info.muted = Some(true);
        assert!(!info.speaking());
        info.muted = Some(false);
        info.level_dbfs = Some(-70.0);
        assert!(!info.speaking());
    }
}

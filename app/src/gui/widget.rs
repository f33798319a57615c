//! Reusable view pieces: participant tiles, badges, and the keyboard focus wrapper.

pub(crate) mod badge;
pub(crate) mod focus;
pub(crate) mod tile;

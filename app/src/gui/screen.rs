//! The three screens; each has its own `State`, `Message`, `Action`, `update` and `view`.

pub(crate) mod home;
pub(crate) mod meeting;
pub(crate) mod settings;

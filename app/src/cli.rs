//! The headless CLI: `id`, `new`, `join`, `history`, `demo` (contract in `docs/architecture.md`).

pub(crate) mod demo;
pub(crate) mod history;
pub(crate) mod id;
pub(crate) mod meeting;
pub(crate) mod output;
pub(crate) mod passphrase;

/// Exit code: normal end.
pub(crate) const EXIT_OK: i32 = 0;
/// Exit code: anything else went wrong.
pub(crate) const EXIT_FAILURE: i32 = 1;
/// Exit code: bad usage or malformed invite.
pub(crate) const EXIT_USAGE: i32 = 2;
/// Exit code: join refused (wrong secret, not approved, not allowed).
pub(crate) const EXIT_REFUSED: i32 = 3;

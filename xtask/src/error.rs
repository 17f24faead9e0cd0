//! Bad input from the user, told apart from every other failure: [`InputError`] makes xtask
//! exit 2 (see `exit_code` in `lib.rs`), an undecided regress run ([`Inconclusive`]) 3, anything
//! else 1. The bottom of the crate: imports nothing.

/// Bad input from the user (unknown strategy, malformed flag value, …): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Builds an [`InputError`] wrapped in `anyhow`.
pub fn input_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(message.into()))
}

/// The exit code of a regress run that could not decide (see [`Inconclusive`]).
pub const INCONCLUSIVE_EXIT_CODE: i32 = 3;

/// `regress` ran out of pairs or time before its interval could decide: neither a pass nor a
/// failure, exit code [`INCONCLUSIVE_EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Inconclusive(pub String);

//! The subcommands.

pub(crate) mod demo;
pub(crate) mod node;
pub(crate) mod sim;
pub(crate) mod tail;

use std::process::ExitCode;

use twilight_model::gateway::Intents;

/// Prints a one-line error and returns `code`.
pub(crate) fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("shardwire: {message}");
    ExitCode::from(code)
}

/// Every intent Discord defines except the privileged ones (GUILD_MEMBERS,
/// GUILD_PRESENCES, MESSAGE_CONTENT), which need switching on in the
/// Developer Portal.
pub(crate) fn non_privileged_intents() -> Intents {
    Intents::all() - Intents::GUILD_MEMBERS - Intents::GUILD_PRESENCES - Intents::MESSAGE_CONTENT
}

//! The `shardwire` command: `tail` streams dispatches as JSON lines, `demo`
//! runs a cluster against the embedded simulator, `sim` runs the simulator
//! on its own, `node` runs one gateway node of a cluster on NATS, and
//! `reshard` asks those nodes to reshard.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: stdout carries its output, stderr its errors"
)]

mod args;
mod demo;
mod metrics;
mod node;
mod reshard;
mod sim;
mod tail;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use twilight_model::gateway::Intents;

/// Keeps Discord bots connected to the Discord Gateway.
#[derive(Debug, Parser)]
#[command(name = "shardwire", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Tail(tail::Args),
    Demo(demo::Args),
    Sim(sim::Args),
    Node(node::Args),
    Reshard(reshard::Args),
}

/// Prints a one-line error and returns `code`.
fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("shardwire: {message}");
    ExitCode::from(code)
}

/// Every intent Discord defines except the privileged ones (GUILD_MEMBERS,
/// GUILD_PRESENCES, MESSAGE_CONTENT), which need switching on in the
/// Developer Portal.
fn non_privileged_intents() -> Intents {
    Intents::all() - Intents::GUILD_MEMBERS - Intents::GUILD_PRESENCES - Intents::MESSAGE_CONTENT
}

/// Colour only for a person at a terminal: never on a pipe or in a file,
/// and never when `NO_COLOR` is set and not empty (no-color.org).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Waits for Ctrl-C or SIGTERM (Ctrl-C alone where there is no SIGTERM).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "SIGTERM cannot be handled; Ctrl-C can");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The logs without RUST_LOG: info of the shardwire crates (each shard's
/// lifecycle), warnings and errors of the others.
const DEFAULT_LOG_FILTER: &str = "warn,shardwire=info";
/// The demo's: its screen shows each shard's state, and lifecycle lines on
/// the same terminal would break its redraw.
const DEMO_LOG_FILTER: &str = "warn,shardwire=info,shardwire_shard=warn";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // RUST_LOG, when set and valid, decides alone.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(match cli.command {
            Command::Demo(_) => DEMO_LOG_FILTER,
            _ => DEFAULT_LOG_FILTER,
        })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .init();
    // The simulator runs on one core, so a client measured beside it has
    // the other.
    let mut builder = match cli.command {
        Command::Sim(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shardwire: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Tail(args) => tail::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Sim(args) => sim::run(args).await,
            Command::Node(args) => node::run(args).await,
            Command::Reshard(args) => reshard::run(args).await,
        }
    })
}

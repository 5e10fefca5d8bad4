//! `shardwire tail`: dispatches as JSON lines on stdout.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use shardwire_cluster::{
    Cluster, ClusterConfig, ClusterError, FileSessionStore, GatewayError, ShardSpec,
};
use shardwire_codec::{CodecError, EventFilter, Payload};
use shardwire_shard::{FatalError, ShardEvent};
use twilight_model::gateway::event::EventType;

use super::args::{BotArgs, EXIT_USAGE, parse_shard_count};
use super::metrics::MetricsArgs;
use super::{fail, stop_signal};

/// Exit code for a refused token (HTTP 401 or close 4004).
pub(super) const EXIT_TOKEN: u8 = 3;
/// Exit code for another fatal close (4010 to 4014).
pub(super) const EXIT_FATAL: u8 = 4;
/// How long Ctrl-C or SIGTERM waits for the shards' closes.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Stream dispatches as JSON lines on stdout
///
/// Each line is one dispatch: {"shard":0,"seq":12,"t":"MESSAGE_CREATE","d":{...}}
/// with `d` exactly as received (minified when it holds line breaks),
/// flushed per line. Logs go to stderr: each shard's identify, READY,
/// resumes, closes and reconnects, and warnings (RUST_LOG sets the level).
///
/// Ctrl-C or SIGTERM closes every shard with a resumable close code and
/// prints the dispatches that were still on their way. With --sessions, the
/// sessions are saved to a file then (and as they change), and the next
/// tail with the same file resumes them instead of identifying.
///
/// Exit codes: 0 after Ctrl-C or SIGTERM or when stdout closes; 1 when the
/// gateway cannot be reached; 2 for invalid arguments; 3 when the token is
/// refused (HTTP 401 or close 4004); 4 for another fatal close (4010 to
/// 4014), with a one-line error naming the cause and the fix, and no
/// reconnect loop.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    #[command(flatten)]
    bot: BotArgs,
    /// Run shards 0 to N-1 of N (default: the count Discord recommends).
    #[arg(long, value_name = "N", value_parser = parse_shard_count)]
    shards: Option<u32>,
    /// Run only these shard ids (comma-separated), with --shard-count.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    shard_ids: Option<Vec<u32>>,
    /// The bot's total shard count, with --shard-ids.
    #[arg(long, value_name = "N", value_parser = parse_shard_count)]
    shard_count: Option<u32>,
    /// Only these dispatch types (comma-separated, like MESSAGE_CREATE).
    #[arg(long, value_name = "TYPES", value_delimiter = ',', value_parser = parse_event_type)]
    events: Option<Vec<EventType>>,
    /// Keep the sessions in this JSON file: shards with one there resume
    #[arg(long, value_name = "FILE")]
    sessions: Option<PathBuf>,
    /// Reshard without stopping, nothing lost or printed twice, when Discord
    /// asks for more shards (a close 4011, a READY with over 2,000 guilds,
    /// or a higher count from GET /gateway/bot, checked every 15 minutes)
    #[arg(long, conflicts_with = "shard_ids")]
    auto_reshard: bool,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// How often `--auto-reshard` asks `/gateway/bot` for its recommendation.
const RESHARD_CHECK: Duration = Duration::from_secs(15 * 60);

/// The shards the flags name, or what to change when they make no sense.
fn shard_spec(
    shards: Option<u32>,
    ids: Option<Vec<u32>>,
    count: Option<u32>,
) -> Result<ShardSpec, String> {
    match (shards, ids, count) {
        (Some(_), None, None) | (None, None, None) => {
            Ok(shards.map_or(ShardSpec::Recommended, ShardSpec::Count))
        }
        (Some(_), _, _) => Err(
            "--shards cannot be combined with --shard-ids or --shard-count: pass --shards N alone to run all N shards, or --shard-ids with --shard-count to run some".into(),
        ),
        (None, Some(_), None) => Err(
            "--shard-ids needs --shard-count, the bot's total shard count (like --shard-ids 0,1 --shard-count 4)".into(),
        ),
        (None, None, Some(count)) => Err(format!(
            "--shard-count needs --shard-ids, the shards to run out of it (like --shard-ids 0 --shard-count {count}); to run all of them, pass --shards {count}"
        )),
        (None, Some(ids), Some(total)) => {
            if let Some(id) = ids.iter().find(|id| **id >= total) {
                return Err(format!(
                    "shard id {id} is out of range for --shard-count {total}: ids go from 0 to {}",
                    total - 1
                ));
            }
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(format!(
                    "shard id {} is listed twice in --shard-ids: list each once",
                    pair[0]
                ));
            }
            Ok(ShardSpec::Ids { ids, total })
        }
    }
}

fn parse_event_type(value: &str) -> Result<EventType, String> {
    let name = value.trim().to_ascii_uppercase();
    EventType::try_from(name.as_str())
        .map_err(|_| format!("`{value}` is not a gateway dispatch type (like MESSAGE_CREATE)"))
}

/// One JSON line for a dispatch: `d` as received, or minified when it
/// holds line breaks (pretty-printed JSON), so that a line is a dispatch.
/// `d` is checked in full first: what is printed is JSON.
fn line(shard: u32, seq: u64, event_type: &str, json: &str) -> Result<String, CodecError> {
    let payload = Payload::scan_strict(json.as_bytes())?;
    let d = payload.data();
    let d = if d.contains(['\n', '\r']) {
        Cow::Owned(minify(d))
    } else {
        Cow::Borrowed(d)
    };
    let t = serde_json::Value::from(event_type);
    Ok(format!(
        r#"{{"shard":{shard},"seq":{seq},"t":{t},"d":{d}}}"#
    ))
}

/// `json` without its insignificant white space; nothing else changes.
/// `json` must be valid JSON: then every white space byte outside a string
/// is insignificant, and strings hold no raw line breaks.
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for ch in json.chars() {
        if in_string {
            out.push(ch);
            match ch {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !matches!(ch, ' ' | '\t' | '\n' | '\r') {
            in_string = ch == '"';
            out.push(ch);
        }
    }
    out
}

pub(super) fn fatal_exit(shard: u32, error: &FatalError) -> ExitCode {
    let code = if matches!(error, FatalError::AuthenticationFailed) {
        EXIT_TOKEN
    } else {
        EXIT_FATAL
    };
    fail(code, format_args!("shard {shard}: {error}"))
}

/// Prints a dispatch; returns the exit code when the stream must end.
/// The new generation's READY and GUILD_CREATEs of a reshard are not
/// printed: they repeat what the bot already has.
fn handle(
    out: &mut impl Write,
    auto_reshard: bool,
    shard: u32,
    event: ShardEvent,
) -> Option<ExitCode> {
    match event {
        ShardEvent::Dispatch {
            seq,
            event_type,
            json,
            ..
        } => {
            let line = match line(shard, seq, &event_type, &json) {
                Ok(line) => line,
                Err(error) => {
                    // Nothing a resume could fix: the gateway would send
                    // the same bytes again.
                    tracing::warn!(
                        shard,
                        seq,
                        %error,
                        "a dispatch whose JSON is invalid was not printed"
                    );
                    return None;
                }
            };
            // A reader that went away (`| head`) ends the stream.
            writeln!(out, "{line}")
                .and_then(|()| out.flush())
                .is_err()
                .then_some(ExitCode::SUCCESS)
        }
        // With --auto-reshard, a 4011 starts a reshard instead.
        ShardEvent::Fatal(FatalError::ShardingRequired) if auto_reshard => None,
        ShardEvent::Fatal(error) => Some(fatal_exit(shard, &error)),
        ShardEvent::Resharding { from, to } => {
            tracing::info!(
                from,
                to,
                "resharding: {to} new shards identify beside the {from} running"
            );
            None
        }
        ShardEvent::Resharded { from, to, took } => {
            tracing::info!(
                from,
                to,
                ?took,
                "resharded: events now come from the {to} new shards"
            );
            None
        }
        ShardEvent::ReshardAbandoned { from, to, reason } => {
            tracing::warn!(
                from,
                to,
                %reason,
                "the reshard to {to} is given up: the {from} running shards go on"
            );
            None
        }
        _ => None,
    }
}

pub(crate) async fn run(args: Args) -> ExitCode {
    let bot = match args.bot.check() {
        Ok(bot) => bot,
        Err(code) => return code,
    };
    let shards = match shard_spec(args.shards, args.shard_ids, args.shard_count) {
        Ok(shards) => shards,
        Err(message) => return fail(EXIT_USAGE, message),
    };
    if let Err(code) = args.metrics.start().await {
        return code;
    }
    let mut config = ClusterConfig::new(bot.token, bot.intents);
    config.api_base = bot.api_base;
    config.compression = bot.compression;
    config.shards = shards;
    if let Some(types) = args.events {
        config.events = EventFilter::only(types);
    }
    if let Some(path) = args.sessions {
        config.session_store = Some(Arc::new(FileSessionStore::new(path)));
    }
    if args.auto_reshard {
        config.auto_reshard = true;
        config.reshard_check_interval = Some(RESHARD_CHECK);
    }
    let auto_reshard = args.auto_reshard;
    let stop = stop_signal();
    tokio::pin!(stop);
    let started = tokio::select! {
        () = &mut stop => return ExitCode::SUCCESS,
        started = Cluster::start(config) => started,
    };
    let mut cluster = match started {
        Ok(cluster) => cluster,
        Err(ClusterError::Gateway(GatewayError::Unauthorized)) => {
            return fail(EXIT_TOKEN, GatewayError::Unauthorized);
        }
        Err(error @ ClusterError::InvalidShards(_)) => return fail(EXIT_USAGE, error),
        Err(error) => return fail(1, error),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let ended = loop {
        let next = tokio::select! {
            () = &mut stop => break None,
            next = cluster.next_event() => next,
        };
        let Some((shard, event)) = next else {
            return fail(1, "the event stream ended");
        };
        if let Some(code) = handle(&mut out, auto_reshard, shard, event) {
            break Some(code);
        }
    };
    // Every shard closes resumably (its session saved with --sessions);
    // after Ctrl-C or SIGTERM, what was still on its way is printed: the
    // saved sessions count it as handled.
    let shutdown = cluster.shutdown(SHUTDOWN_TIMEOUT).await;
    if let Some(error) = &shutdown.store_error {
        tracing::error!(%error, "the sessions were not saved; the next start identifies");
    }
    if let Some(code) = ended {
        return code;
    }
    for (shard, event) in shutdown.events {
        if matches!(event, ShardEvent::Dispatch { .. })
            && let Some(code) = handle(&mut out, auto_reshard, shard, event)
        {
            return code;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_dispatch_whatever_the_spacing() {
        let json = "{\"t\":\"X\",\"s\":4,\"op\":0,\"d\":{\r\n\t\"a\" : [ 1,\n2 ],\r\n\t\"b\": \"x \\\" \\n y\"\r\n}}";
        let printed = line(3, 4, "X", json).unwrap();
        assert_eq!(
            printed,
            r#"{"shard":3,"seq":4,"t":"X","d":{"a":[1,2],"b":"x \" \n y"}}"#
        );
        // Without line breaks, `d` is as received, spaces and all.
        let json = r#"{"t":"X","s":4,"op":0,"d":{ "a" : 1 }}"#;
        assert_eq!(
            line(3, 4, "X", json).unwrap(),
            r#"{"shard":3,"seq":4,"t":"X","d":{ "a" : 1 }}"#
        );
    }

    #[test]
    fn shard_flags_make_one_spec_or_name_the_fix() {
        assert_eq!(shard_spec(None, None, None), Ok(ShardSpec::Recommended));
        assert_eq!(shard_spec(Some(3), None, None), Ok(ShardSpec::Count(3)));
        assert_eq!(
            shard_spec(None, Some(vec![3, 1]), Some(4)),
            Ok(ShardSpec::Ids {
                ids: vec![3, 1],
                total: 4
            })
        );
        for (shards, ids, count, fix) in [
            (Some(2), Some(vec![1]), Some(2), "pass --shards N alone"),
            (Some(2), None, Some(2), "pass --shards N alone"),
            (None, Some(vec![0]), None, "needs --shard-count"),
            (None, None, Some(4), "pass --shards 4"),
            (None, Some(vec![0, 4]), Some(4), "ids go from 0 to 3"),
            (None, Some(vec![1, 0, 1]), Some(4), "listed twice"),
        ] {
            let error = shard_spec(shards, ids, count).unwrap_err();
            assert!(error.contains(fix), "{error}");
        }
    }

    #[test]
    fn invalid_data_is_never_printed() {
        for json in [
            r#"{"t":"X","s":4,"op":0,"d":{"a":}}"#.to_owned(),
            format!(
                r#"{{"t":"X","s":4,"op":0,"d":{}{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
        ] {
            assert!(line(0, 4, "X", &json).is_err(), "{json}");
        }
    }
}

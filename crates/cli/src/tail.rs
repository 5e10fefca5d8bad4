//! `shardwire tail`: dispatches as JSON lines on stdout.

use std::borrow::Cow;
use std::io::Write;
use std::process::ExitCode;

use shardwire_cluster::{
    Cluster, ClusterConfig, ClusterError, DEFAULT_API_BASE, GatewayError, ShardSpec,
};
use shardwire_codec::{CodecError, Compression, EventFilter, Payload, Token};
use shardwire_shard::{FatalError, ShardEvent};
use twilight_model::gateway::Intents;
use twilight_model::gateway::event::EventType;

use super::{fail, non_privileged_intents};

/// Exit code for a refused token (HTTP 401 or close 4004).
pub(super) const EXIT_TOKEN: u8 = 3;
/// Exit code for another fatal close (4010 to 4014).
pub(super) const EXIT_FATAL: u8 = 4;

/// Stream dispatches as JSON lines on stdout.
///
/// Each line is one dispatch: {"shard":0,"seq":12,"t":"MESSAGE_CREATE","d":{...}}
/// with `d` exactly as received (minified when it holds line breaks),
/// flushed per line. Logs go to stderr (RUST_LOG sets their level).
///
/// Exit codes: 0 after Ctrl-C or when stdout closes; 1 when the gateway
/// cannot be reached; 2 for invalid arguments; 3 when the token is refused
/// (HTTP 401 or close 4004); 4 for another fatal close (4010 to 4014), with a
/// one-line error naming the cause and the fix, and no reconnect loop.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The bot token.
    #[arg(long, env = "DISCORD_TOKEN", hide_env_values = true, value_parser = parse_token)]
    token: Token,
    /// The API base; /gateway/bot is appended to it.
    #[arg(long, default_value = DEFAULT_API_BASE, value_name = "URL")]
    api_base: String,
    /// Run this many shards, 0 to N-1 (default: the recommended count).
    #[arg(long, value_name = "N", conflicts_with_all = ["shard_ids", "shard_count"])]
    shards: Option<u32>,
    /// Run these shard ids (comma-separated) out of --shard-count.
    #[arg(
        long,
        value_name = "IDS",
        value_delimiter = ',',
        requires = "shard_count"
    )]
    shard_ids: Option<Vec<u32>>,
    /// The bot's total shard count, with --shard-ids.
    #[arg(long, value_name = "N", requires = "shard_ids")]
    shard_count: Option<u32>,
    /// Transport compression: zlib-stream, zstd-stream or none.
    #[arg(long, default_value = "zlib-stream", value_parser = parse_compression)]
    compression: Compression,
    /// Gateway intents as a number (decimal or 0x hex); default: every
    /// non-privileged intent.
    #[arg(long, value_name = "BITS", value_parser = parse_intents)]
    intents: Option<Intents>,
    /// Only these dispatch types (comma-separated, like MESSAGE_CREATE).
    #[arg(long, value_name = "T1,T2", value_delimiter = ',', value_parser = parse_event_type)]
    events: Option<Vec<EventType>>,
}

/// A token, trimmed; `Token` keeps it out of `Debug` output.
pub(super) fn parse_token(value: &str) -> Result<Token, String> {
    let token = Token::new(value.trim());
    if token.is_empty() {
        return Err("no token: pass --token or set DISCORD_TOKEN".into());
    }
    Ok(token)
}

pub(super) fn parse_compression(value: &str) -> Result<Compression, String> {
    match value {
        "zlib-stream" => Ok(Compression::ZlibStream),
        "zstd-stream" => Ok(Compression::ZstdStream),
        "none" => Ok(Compression::None),
        other => Err(format!(
            "`{other}` is not one of zlib-stream, zstd-stream, none"
        )),
    }
}

pub(super) fn parse_intents(value: &str) -> Result<Intents, String> {
    let bits = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    }
    .map_err(|_| format!("`{value}` is not a number of intent bits"))?;
    Ok(Intents::from_bits_retain(bits))
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

pub(crate) async fn run(args: Args) -> ExitCode {
    let mut config = ClusterConfig::new(
        args.token,
        args.intents.unwrap_or_else(non_privileged_intents),
    );
    config.api_base = args.api_base;
    config.compression = args.compression;
    config.shards = match (args.shards, args.shard_ids, args.shard_count) {
        (Some(count), _, _) => ShardSpec::Count(count),
        (None, Some(ids), Some(total)) => ShardSpec::Ids { ids, total },
        _ => ShardSpec::Recommended,
    };
    if let Some(types) = args.events {
        config.events = EventFilter::only(types);
    }
    let mut cluster = match Cluster::start(config).await {
        Ok(cluster) => cluster,
        Err(ClusterError::Gateway(GatewayError::Unauthorized)) => {
            return fail(EXIT_TOKEN, GatewayError::Unauthorized);
        }
        Err(error @ ClusterError::InvalidShards(_)) => return fail(2, error),
        Err(error) => return fail(1, error),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let next = tokio::select! {
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            next = cluster.next_event() => next,
        };
        match next {
            Some((
                shard,
                ShardEvent::Dispatch {
                    seq,
                    event_type,
                    json,
                    ..
                },
            )) => {
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
                        continue;
                    }
                };
                // A reader that went away (`| head`) ends the stream.
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return ExitCode::SUCCESS;
                }
            }
            Some((shard, ShardEvent::Fatal(error))) => return fatal_exit(shard, &error),
            Some(_) => {}
            None => return fail(1, "the event stream ended"),
        }
    }
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

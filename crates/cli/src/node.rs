//! `shardwire node`: one gateway process of a cluster of nodes on NATS.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use shardwire_cluster::GatewayError;
use shardwire_nats::{Layout, NatsError, Node, NodeConfig, NodeError};

use super::args::{BotArgs, EXIT_USAGE, parse_shard_count};
use super::metrics::MetricsArgs;
use super::tail::{EXIT_TOKEN, fatal_exit};
use super::{fail, stop_signal};

/// Run one gateway node of a cluster coordinated through NATS JetStream
///
/// The node claims ranges of shards up to --capacity (leases in JetStream
/// KV, renewed every third of --lease-ttl), resumes each shard from the
/// session store, publishes every dispatch to the stream on
/// <prefix>.events.<shard>.<EVENT> (message id <session>:<seq>), and sends
/// the gateway commands published on <prefix>.commands.<shard>. Identifies
/// across all nodes go through one queue in JetStream KV.
///
/// Each time the shards it runs change, it prints one line on stdout:
/// `shards 0,1,2` (`shards -` for none). Ctrl-C or SIGTERM hands its shards
/// over at once; if the process dies, its leases lapse after --lease-ttl
/// and other nodes resume its shards.
///
/// --nats takes one server or a cluster's (repeated, or separated by
/// commas): the node reconnects to another when its server goes away.
/// Streams and KV buckets it creates get --replicas copies (3 in a
/// cluster, 1 on a lone server by default); every node must ask for the
/// same.
///
/// Exit codes: 0 after Ctrl-C or SIGTERM; 1 when NATS or the gateway cannot
/// be reached; 2 for invalid arguments (and settings NATS cannot hold); 3
/// when the token is refused; 4 for another fatal close.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// A NATS server, like nats://127.0.0.1:4222 (for a cluster, repeat the flag or separate URLs with commas).
    #[arg(long, value_name = "URL", required = true, value_delimiter = ',', action = clap::ArgAction::Append)]
    nats: Vec<String>,
    /// Copies JetStream keeps of each stream and KV bucket it creates (default: 3 in a cluster, 1 on a lone server).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: Option<u8>,
    /// The most shards this node runs.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    capacity: u32,
    #[command(flatten)]
    bot: BotArgs,
    /// The bot's shard count (default: the recommended count; the first
    /// node stores it, every node must agree).
    #[arg(long, value_name = "N", value_parser = parse_shard_count)]
    shards: Option<u32>,
    /// Shards per leased range (the same on every node).
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    range_size: u32,
    /// Seconds a lease lives unrenewed: how soon a dead node's shards are
    /// taken over.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_ttl: u64,
    /// The identify window per bucket, in milliseconds (Discord: 5000; at least 100).
    #[arg(long, default_value_t = 5000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    identify_window_ms: u64,
    /// Seconds JetStream drops copies of an event for (at least twice --lease-ttl plus 30).
    #[arg(long, default_value_t = 120, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    dedup_window: u64,
    /// This node's name, unique in the cluster (default: host and pid).
    #[arg(long, value_name = "NAME")]
    node_id: Option<String>,
    /// The prefix of the subjects, stream and KV buckets.
    #[arg(long, default_value = "shardwire", value_name = "PREFIX", value_parser = parse_layout)]
    prefix: Layout,
    #[command(flatten)]
    metrics: MetricsArgs,
}

pub(crate) fn parse_layout(value: &str) -> Result<Layout, String> {
    Layout::new(value).map_err(|error| error.to_string())
}

fn exit_for(error: &NodeError) -> ExitCode {
    match error {
        NodeError::Gateway(GatewayError::Unauthorized) => fail(EXIT_TOKEN, error),
        NodeError::Fatal { shard, error } => fatal_exit(*shard, error),
        NodeError::Invalid(_) | NodeError::Nats(NatsError::Invalid(_)) => fail(EXIT_USAGE, error),
        _ => fail(1, error),
    }
}

pub(crate) async fn run(args: Args) -> ExitCode {
    let bot = match args.bot.check() {
        Ok(bot) => bot,
        Err(code) => return code,
    };
    if let Err(code) = args.metrics.start().await {
        return code;
    }
    let servers: Vec<&str> = args
        .nats
        .iter()
        .map(|url| url.trim())
        .filter(|url| !url.is_empty())
        .collect();
    let mut config = NodeConfig::new(bot.token, bot.intents, servers.join(","));
    config.replicas = args.replicas.map(usize::from);
    config.api_base = bot.api_base;
    config.capacity = args.capacity;
    config.range_size = args.range_size;
    config.shards = args.shards;
    config.lease_ttl = Duration::from_secs(args.lease_ttl);
    config.identify_window = Duration::from_millis(args.identify_window_ms);
    config.dedup_window = Duration::from_secs(args.dedup_window);
    config.layout = args.prefix;
    config.compression = bot.compression;
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    let mut node = match Node::start(config).await {
        Ok(node) => node,
        Err(error) => return exit_for(&error),
    };
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => {
                return match node.shutdown().await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => exit_for(&error),
                };
            }
            running = node.changed() => {
                if !running {
                    return match node.wait().await {
                        Ok(()) => fail(1, "the node stopped"),
                        Err(error) => exit_for(&error),
                    };
                }
                let shards = node.shards();
                let list = if shards.is_empty() {
                    "-".to_owned()
                } else {
                    shards.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "shards {list}").and_then(|()| out.flush());
            }
        }
    }
}

//! `shardwire reshard`: asks a cluster of nodes on NATS to reshard.

use std::process::ExitCode;

use shardwire_nats::{Layout, Nats, NatsError};

use super::args::EXIT_USAGE;
use super::fail;

/// Ask the gateway nodes of a cluster on NATS to reshard, with no downtime
///
/// The reshard is recorded in the sessions bucket and carried out by every
/// node for the ranges it holds: each range runs its new shards beside the
/// old ones, merges each guild's two streams, and closes the old shards
/// once its new ones are READY and the overlap window has passed. The new
/// count must be a multiple of the current one.
///
/// It prints `resharding 4 -> 8` and exits once the reshard is recorded.
/// Exit codes: 0 when recorded; 1 when NATS cannot be reached; 2 for a
/// count that cannot be (not a multiple, too few session starts today, a
/// reshard under way).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The NATS server, like nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL")]
    nats: String,
    /// The new shard count, a multiple of the current one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    to: u32,
    /// The prefix of the subjects, stream and KV buckets.
    #[arg(long, default_value = "shardwire", value_name = "PREFIX", value_parser = super::node::parse_layout)]
    prefix: Layout,
}

pub(crate) async fn run(args: Args) -> ExitCode {
    let asked = async {
        let nats = Nats::connect(&args.nats, args.prefix).await?;
        nats.sessions().await?.request_reshard(args.to).await
    };
    match asked.await {
        Ok(reshard) => {
            println!("resharding {} -> {}", reshard.from, reshard.to);
            ExitCode::SUCCESS
        }
        Err(error @ NatsError::Invalid(_)) => fail(EXIT_USAGE, error),
        Err(error) => fail(1, error),
    }
}

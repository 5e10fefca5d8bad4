//! zstd-stream: what twilight-gateway in this build asks for, and the
//! zstd floor (the flood's messages decompressed and nothing else).
//!
//! twilight-gateway 0.18 picks its compression at build time: zstd-stream
//! with its `zstd` feature, else zlib-stream. `shardwire-bench` is built
//! with `zlib` and `shardwire-bench-zstd` (benches/zstd-peer) with `zstd`;
//! every twilight run first checks that it is in the binary it wants.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use shardwire::Compression;
use tokio::io::AsyncReadExt as _;

use crate::BEFORE_FLOOD;

/// The `compress` query parameter twilight-gateway sends, as it is built
/// into this binary: a shard connects to a listener here, which reads its
/// request line and hangs up.
pub(crate) async fn twilight_compression() -> Result<Compression> {
    use futures_core::Stream as _;
    use twilight_gateway::{Shard, ShardId};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", listener.local_addr()?);
    let config = twilight_gateway::ConfigBuilder::new(
        "probe".to_owned(),
        twilight_model::gateway::Intents::GUILDS,
    )
    .proxy_url(url)
    .build();
    let mut shard = Shard::with_config(ShardId::ONE, config);
    let connecting = tokio::spawn(async move {
        while std::future::poll_fn(|cx| std::pin::Pin::new(&mut shard).poll_next(cx))
            .await
            .is_some()
        {}
    });
    let request = async {
        let (mut socket, _) = listener.accept().await?;
        let mut head = Vec::new();
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let mut chunk = [0; 512];
            let read = socket.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..read]);
        }
        anyhow::Ok(String::from_utf8_lossy(&head).into_owned())
    };
    let request = tokio::time::timeout(Duration::from_secs(10), request).await;
    connecting.abort();
    let request = request.context("twilight-gateway did not connect in 10 s")??;
    let line = request.lines().next().unwrap_or_default();
    let compress = line
        .split(['?', '&', ' '])
        .find_map(|pair| pair.strip_prefix("compress="));
    match compress {
        None => Ok(Compression::None),
        Some(value) => value
            .parse()
            .map_err(|error: String| anyhow::anyhow!("`{line}`: {error}")),
    }
}

/// Fails unless this binary's twilight-gateway asks for `wanted`.
pub(crate) async fn check_twilight(wanted: Compression) -> Result<()> {
    let built = twilight_compression().await?;
    if built != wanted {
        bail!(
            "this binary's twilight-gateway asks for {built}, not {wanted}: \
             zstd-stream is shardwire-bench-zstd's (benches/zstd-peer), zlib-stream shardwire-bench's"
        );
    }
    Ok(())
}

/// Decompresses the sim's zstd-stream flood of N events and nothing else:
/// the floor of a client on zstd-stream.
pub(crate) fn floor(events: u64, seed: u64) -> Result<serde_json::Value> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let flood = shardwire_sim::Flood::zstd_stream(seed, BEFORE_FLOOD + 1, events)?;
    let compressed: u64 = flood.zstd.iter().map(|m| m.len() as u64).sum();
    let mut decoder = Decoder::new()?;
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut decompressed = 0u64;
    let cpu = shardwire_benches::cpu_time()?;
    let wall = Instant::now();
    for message in &flood.zstd {
        out.clear();
        let mut input = InBuffer::around(message);
        loop {
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            decoder.run(&mut input, &mut output)?;
            if input.pos() == message.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(4096));
        }
        decompressed += out.len() as u64;
    }
    let wall = wall.elapsed();
    let cpu = shardwire_benches::cpu_time()? - cpu;
    let expected: u64 = flood.payloads.iter().map(|p| p.len() as u64).sum();
    if decompressed != expected {
        bail!("decompressed {decompressed} bytes, the flood holds {expected}");
    }
    Ok(json!({
        "compression": "zstd-stream",
        "events": events,
        "compressed_bytes": compressed,
        "bytes": decompressed,
        "wall_s": wall.as_secs_f64(),
        "cpu_s": cpu.as_secs_f64(),
    }))
}

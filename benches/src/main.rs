//! `shardwire-bench`: one measurement, printed as one JSON object on
//! stdout. `cargo xtask bench` runs it against `shardwire sim` in another
//! process, several times per row, and tabulates the runs.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a measuring tool reports on stdout"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures_core::Stream as _;
use serde_json::json;
use shardwire::cluster::{Cluster, ClusterConfig, ShardSpec};
use shardwire::shard::Unqueued;
use shardwire::{Compression, EventFilter, Shard, ShardConfig, ShardEvent, Token};
use shardwire_benches::{cpu_time, status_kib, trimmed_rss_kib};
use tokio::task::JoinSet;
use twilight_model::gateway::Intents;
use twilight_model::gateway::event::GatewayEventDeserializer;

mod cores;
mod latency;
mod node;
mod zstd_stream;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Client {
    Shardwire,
    Twilight,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// K shards consume a flood of N events each (the sim floods after
    /// READY); reports events/s and client CPU per million events.
    E2e {
        #[arg(long, value_enum)]
        client: Client,
        /// Deserialize every event into twilight-model types.
        #[arg(long)]
        typed: bool,
        /// shardwire only: every shard's events in one `EventSink`, read by
        /// one consumer, as a `Cluster` and the NATS node run them.
        #[arg(long)]
        sink: bool,
        /// shardwire only: install a Prometheus recorder first (the exporter
        /// `--metrics` uses, with its default summaries), so every metric records.
        #[arg(long)]
        recorder: bool,
        #[arg(long)]
        shards: u32,
        /// The flood per shard, as the sim was told.
        #[arg(long)]
        events: u64,
        #[arg(long)]
        gateway: String,
        #[arg(long, default_value = "sim-token")]
        token: String,
        /// twilight-gateway's is built in (see `zstd_stream.rs`) and checked.
        #[arg(long, default_value = "zlib-stream")]
        compression: Compression,
    },
    /// N shards connect and sit idle; reports the process's RSS.
    Idle {
        #[arg(long, value_enum)]
        client: Client,
        #[arg(long)]
        shards: u32,
        #[arg(long)]
        gateway: String,
        #[arg(long, default_value = "sim-token")]
        token: String,
        #[arg(long, default_value = "zlib-stream")]
        compression: Compression,
        /// The flood per shard the sim sends after READY, taken before
        /// the shards sit idle.
        #[arg(long, default_value_t = 0)]
        events: u64,
        /// shardwire only: its shards never hibernate.
        #[arg(long)]
        no_hibernate: bool,
    },
    /// Inflates the bytes of a flood of N events and nothing else: the
    /// floor no client can beat.
    Floor {
        #[arg(long)]
        events: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// zstd-stream: the sim's zstd flood, decompressed.
        #[arg(long, default_value = "zlib-stream")]
        compression: Compression,
    },
    /// K shards receive stamped events at the sim's fixed rate; reports
    /// the delay from the sim's stamp to the event in the consumer's hands.
    Latency {
        #[arg(long, value_enum)]
        client: Client,
        #[arg(long, default_value_t = 1)]
        shards: u32,
        /// Events to sample, over all shards.
        #[arg(long)]
        events: usize,
        #[arg(long)]
        gateway: String,
        #[arg(long, default_value = "sim-token")]
        token: String,
    },
    /// The codec paths in-process on the realistic corpus (zlib-stream):
    /// the inflate floor, shardwire's lazy and typed paths, and the same
    /// two the way twilight-gateway does them.
    Codec {
        /// Events in the corpus.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Passes over it per measurement.
        #[arg(long, default_value_t = 3)]
        passes: u32,
    },
    /// A `shardwire node` in this process runs K shards of the sim's flood
    /// of N events each and publishes them into JetStream on a fresh
    /// `nats-server` (`$NATS_SERVER` or the `PATH`); reports this process's
    /// CPU and the server's until JetStream has stored them all.
    Node {
        #[arg(long)]
        api: String,
        #[arg(long)]
        shards: u32,
        #[arg(long)]
        events: u64,
        #[arg(long, default_value = "sim-token")]
        token: String,
    },
    /// The raw flood of K shards on a multi-thread runtime of N workers.
    Cores(cores::Args),
    /// A shardwire cluster of N shards starts against the sim's API;
    /// reports the time until every shard is READY.
    Startup {
        #[arg(long)]
        api: String,
        #[arg(long)]
        shards: u32,
        /// The sim's identify window per bucket.
        #[arg(long)]
        identify_window_ms: u64,
        #[arg(long, default_value = "sim-token")]
        token: String,
    },
}

/// READY and two GUILD_CREATEs come before the flood.
pub(crate) const BEFORE_FLOOD: u64 = 3;

/// What one shard consumed.
#[derive(Default)]
struct Consumed {
    dispatches: u64,
    bytes: u64,
    typed: u64,
    /// When the flood began (the first dispatch after the guilds).
    flood_from: Option<Instant>,
    /// Each shard's flood, from its first event to its last.
    floods: Vec<(Instant, Instant)>,
}

impl Consumed {
    /// Counts a dispatch; notes the flood's start.
    fn dispatch(&mut self) {
        self.dispatches += 1;
        if self.dispatches == BEFORE_FLOOD + 1 {
            self.flood_from = Some(Instant::now());
        }
    }

    /// Counts a shardwire dispatch: its JSON, and whether it came typed.
    fn shardwire_dispatch(&mut self, json: &shardwire::Json, typed: bool) {
        self.dispatch();
        self.bytes += json.len() as u64;
        self.typed += u64::from(typed);
    }

    /// Adds another shard's counts.
    fn add(&mut self, other: Self) {
        self.dispatches += other.dispatches;
        self.bytes += other.bytes;
        self.typed += other.typed;
        self.floods.extend(other.floods);
    }

    /// The shard's flood is over.
    fn done(mut self) -> Self {
        if let Some(from) = self.flood_from {
            self.floods.push((from, Instant::now()));
        }
        self
    }
}

/// How long at least one flood was running: the union of the intervals, so
/// a shard that started late (an identify queue's wait) adds its own
/// running time, not the wait.
fn busy(mut floods: Vec<(Instant, Instant)>) -> Duration {
    floods.sort_by_key(|(from, _)| *from);
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, Instant)> = None;
    for (from, to) in floods {
        current = match current {
            Some((start, end)) if from <= end => Some((start, end.max(to))),
            Some((start, end)) => {
                total += end - start;
                Some((from, to))
            }
            None => Some((from, to)),
        };
    }
    if let Some((start, end)) = current {
        total += end - start;
    }
    total
}

async fn shardwire_e2e(
    gateway: &str,
    token: &str,
    shards: u32,
    events: u64,
    typed: bool,
    compression: Compression,
) -> Result<Consumed> {
    let mut tasks = JoinSet::new();
    for id in 0..shards {
        let config = e2e_config(gateway, token, id, shards, typed, compression);
        let mut shard = Shard::start(config, Arc::new(Unqueued));
        tasks.spawn(async move {
            let mut consumed = Consumed::default();
            while let Some(event) = shard.next_event().await {
                match event {
                    ShardEvent::Dispatch {
                        seq, json, event, ..
                    } => {
                        consumed.shardwire_dispatch(&json, event.is_some());
                        if seq >= BEFORE_FLOOD + events {
                            return Ok(consumed.done());
                        }
                    }
                    ShardEvent::Fatal(error) => bail!("shard {id}: {error}"),
                    _ => {}
                }
            }
            bail!("shard {id} stopped")
        });
    }
    collect(tasks).await
}

/// A shard of the e2e flood, every dispatch typed if asked.
fn e2e_config(
    gateway: &str,
    token: &str,
    id: u32,
    shards: u32,
    typed: bool,
    compression: Compression,
) -> ShardConfig {
    let mut config = ShardConfig::new(Token::new(token), Intents::GUILDS, id, shards, gateway);
    config.compression = compression;
    if typed {
        config.typed_events = EventFilter::all();
    }
    config
}

/// As [`shardwire_e2e`], with every shard's events in one `EventSink`
/// read by one consumer.
async fn shardwire_sink_e2e(
    gateway: &str,
    token: &str,
    shards: u32,
    events: u64,
    typed: bool,
    compression: Compression,
) -> Result<Consumed> {
    let (sink, mut merged) = shardwire::shard::EventSink::channel(4096);
    let mut running = Vec::new();
    for id in 0..shards {
        let config = e2e_config(gateway, token, id, shards, typed, compression);
        running.push(Shard::start_with_sink(
            config,
            Arc::new(Unqueued),
            sink.clone(),
        ));
    }
    drop(sink);
    let mut per_shard: Vec<Consumed> = (0..shards).map(|_| Consumed::default()).collect();
    let mut left = shards;
    while left > 0 {
        let Some((id, event)) = merged.recv().await else {
            bail!("the shards stopped");
        };
        let Some(consumed) = per_shard.get_mut(id as usize) else {
            bail!("an event from shard {id}");
        };
        match event {
            ShardEvent::Dispatch {
                seq, json, event, ..
            } => {
                consumed.shardwire_dispatch(&json, event.is_some());
                if seq == BEFORE_FLOOD + events {
                    *consumed = std::mem::take(consumed).done();
                    left -= 1;
                }
            }
            ShardEvent::Fatal(error) => bail!("shard {id}: {error}"),
            _ => {}
        }
    }
    drop(running);
    let mut total = Consumed::default();
    for consumed in per_shard {
        total.add(consumed);
    }
    Ok(total)
}

async fn twilight_e2e(
    gateway: &str,
    token: &str,
    shards: u32,
    events: u64,
    typed: bool,
    compression: Compression,
) -> Result<Consumed> {
    use twilight_gateway::{EventTypeFlags, Message, Shard, ShardId, StreamExt};
    zstd_stream::check_twilight(compression).await?;
    let config = twilight_config(gateway, token);
    let mut tasks = JoinSet::new();
    for id in 0..shards {
        let mut shard = Shard::with_config(ShardId::new(id, shards), config.clone());
        tasks.spawn(async move {
            let mut consumed = Consumed::default();
            let target = BEFORE_FLOOD + events;
            if typed {
                // Every dispatch typed, as `next_event` gives them.
                while let Some(item) = shard.next_event(EventTypeFlags::all()).await {
                    match item {
                        Ok(event) if event.kind().name().is_some() => {
                            consumed.dispatch();
                            consumed.typed += 1;
                            if consumed.dispatches >= target {
                                return Ok(consumed.done());
                            }
                        }
                        Ok(_) => {}
                        Err(error) => bail!("shard {id}: {error}"),
                    }
                }
            } else {
                // The raw path: the text, and the envelope read as twilight
                // reads it (op, s, t), as a bot that routes raw events does.
                while let Some(item) =
                    std::future::poll_fn(|cx| std::pin::Pin::new(&mut shard).poll_next(cx)).await
                {
                    match item {
                        Ok(Message::Text(json)) => {
                            let Some(envelope) = GatewayEventDeserializer::from_json(&json) else {
                                continue;
                            };
                            if envelope.op() != 0 {
                                continue;
                            }
                            consumed.dispatch();
                            consumed.bytes += json.len() as u64;
                            if envelope.sequence().unwrap_or(0) >= target {
                                return Ok(consumed.done());
                            }
                        }
                        Ok(Message::Close(_)) => {}
                        Err(error) => bail!("shard {id}: {error}"),
                    }
                }
            }
            bail!("shard {id} stopped")
        });
    }
    collect(tasks).await
}

/// Lets every twilight-gateway shard identify at once, as the sim allows:
/// the counterpart of shardwire's `Unqueued`. (`InMemoryQueue` made sixteen
/// shards wait about 5 s before their first identify, which no row measures
/// but every run paid.)
#[derive(Clone, Copy, Debug)]
struct NoWait;

impl twilight_gateway::queue::Queue for NoWait {
    fn enqueue(&self, _shard: u32) -> tokio::sync::oneshot::Receiver<()> {
        let (go, wait) = tokio::sync::oneshot::channel();
        // The receiver is right here: the send cannot fail.
        let _ = go.send(());
        wait
    }
}

fn twilight_config(gateway: &str, token: &str) -> twilight_gateway::Config<NoWait> {
    twilight_gateway::ConfigBuilder::new(token.to_owned(), Intents::GUILDS)
        .proxy_url(gateway.to_owned())
        .queue(NoWait)
        .build()
}

async fn collect(mut tasks: JoinSet<Result<Consumed>>) -> Result<Consumed> {
    let mut total = Consumed::default();
    while let Some(joined) = tasks.join_next().await {
        total.add(joined??);
    }
    Ok(total)
}

/// How soon idle shardwire shards hibernate here: sooner than the 10 s
/// default, so that a run measures idle shards without waiting 10 s.
const HIBERNATE_AFTER: Duration = Duration::from_millis(500);

/// How the idle shards are run: their compression, the flood each takes
/// before it sits idle, and whether shardwire's hibernate.
#[derive(Clone, Copy)]
struct IdleRun {
    compression: Compression,
    events: u64,
    hibernate: bool,
}

/// Connects N idle shards and waits until each has its READY and guilds
/// (and its flood, if any).
async fn idle(
    client: Client,
    gateway: &str,
    token: &str,
    shards: u32,
    run: IdleRun,
) -> Result<(Duration, Vec<tokio::task::JoinHandle<()>>)> {
    let before_idle = BEFORE_FLOOD + run.events;
    let started = Instant::now();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<u32>(shards as usize);
    let mut keep = Vec::new();
    match client {
        Client::Shardwire => {
            for id in 0..shards {
                let mut config =
                    ShardConfig::new(Token::new(token), Intents::GUILDS, id, shards, gateway);
                config.compression = run.compression;
                config.hibernate_after = run.hibernate.then_some(HIBERNATE_AFTER);
                let mut shard = Shard::start(config, Arc::new(Unqueued));
                let ready = ready_tx.clone();
                keep.push(tokio::spawn(async move {
                    let mut dispatches = 0;
                    while let Some(event) = shard.next_event().await {
                        if matches!(event, ShardEvent::Dispatch { .. }) {
                            dispatches += 1;
                            if dispatches == before_idle {
                                let _ = ready.send(id).await;
                            }
                        }
                    }
                }));
            }
        }
        Client::Twilight => {
            use twilight_gateway::{EventTypeFlags, Shard, ShardId, StreamExt as _};
            zstd_stream::check_twilight(run.compression).await?;
            let config = twilight_config(gateway, token);
            for id in 0..shards {
                let mut shard = Shard::with_config(ShardId::new(id, shards), config.clone());
                let ready = ready_tx.clone();
                keep.push(tokio::spawn(async move {
                    let mut dispatches = 0;
                    while let Some(item) = shard.next_event(EventTypeFlags::all()).await {
                        if let Ok(event) = item
                            && event.kind().name().is_some()
                        {
                            dispatches += 1;
                            if dispatches == before_idle {
                                let _ = ready.send(id).await;
                            }
                        }
                    }
                }));
            }
        }
    }
    for _ in 0..shards {
        tokio::time::timeout(Duration::from_secs(120), ready_rx.recv())
            .await
            .context("shards did not all get ready in 120 s")?
            .context("a shard task ended")?;
    }
    Ok((started.elapsed(), keep))
}

fn floor(events: u64, seed: u64) -> Result<serde_json::Value> {
    let flood = shardwire_sim::Flood::new(seed, BEFORE_FLOOD + 1, events);
    let compressed: u64 = flood.zlib.iter().map(|m| m.len() as u64).sum();
    let mut inflate = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut inflated = 0u64;
    let cpu = cpu_time()?;
    let wall = Instant::now();
    for message in &flood.zlib {
        inflate_into(&mut inflate, message, &mut out)?;
        inflated += out.len() as u64;
    }
    let wall = wall.elapsed();
    let cpu = cpu_time()? - cpu;
    let expected: u64 = flood.payloads.iter().map(|p| p.len() as u64).sum();
    if inflated != expected {
        bail!("inflated {inflated} bytes, the flood holds {expected}");
    }
    Ok(json!({
        "events": events,
        "compressed_bytes": compressed,
        "bytes": inflated,
        "wall_s": wall.as_secs_f64(),
        "cpu_s": cpu.as_secs_f64(),
    }))
}

/// Inflates one zlib-stream message into `out` (cleared first).
fn inflate_into(inflate: &mut flate2::Decompress, message: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let mut input = message;
    loop {
        let read = inflate.total_in();
        inflate.decompress_vec(input, out, flate2::FlushDecompress::Sync)?;
        input = &input[(inflate.total_in() - read) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
        out.reserve(out.capacity().max(4096));
    }
}

/// Inflates each message of one zlib stream and hands over the bytes.
fn inflate_each(messages: &[Vec<u8>], mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut inflate = flate2::Decompress::new(true);
    let mut out = Vec::with_capacity(64 * 1024);
    for message in messages {
        inflate_into(&mut inflate, message, &mut out)?;
        each(&out)?;
    }
    Ok(())
}

fn codec(events: usize, passes: u32) -> Result<serde_json::Value> {
    use shardwire::codec::{Decoded, Decoder, MessageKind};
    use shardwire_corpus::{Corpus, ZlibStreamEncoder};
    use twilight_gateway::EventTypeFlags;

    let corpus = Corpus::realistic(events, 1);
    let mut encoder = ZlibStreamEncoder::new();
    let messages: Vec<Vec<u8>> = corpus
        .payloads()
        .iter()
        .map(|p| encoder.encode(p))
        .collect();
    let bytes = corpus.total_bytes() as f64 * f64::from(passes);
    let count = events as f64 * f64::from(passes);
    let mut rows = serde_json::Map::new();
    let mut measure = |name: &str, run: &mut dyn FnMut() -> Result<u64>| -> Result<()> {
        let started = Instant::now();
        let mut check = 0;
        for _ in 0..passes {
            check += run()?;
        }
        let seconds = started.elapsed().as_secs_f64();
        rows.insert(
            name.to_owned(),
            json!({"seconds": seconds, "events_per_s": count / seconds, "mb_per_s": bytes / seconds / 1e6, "check": check}),
        );
        Ok(())
    };
    measure("floor", &mut || {
        let mut total = 0;
        inflate_each(&messages, |json| {
            total += json.len() as u64;
            Ok(())
        })?;
        Ok(total)
    })?;
    measure("shardwire_lazy", &mut || {
        let mut decoder = Decoder::new(Compression::ZlibStream);
        let mut total = 0;
        for message in &messages {
            if let Some(payload) = decoder.push(message, MessageKind::Binary)? {
                total += payload.data().len() as u64 + u64::from(payload.op());
            }
        }
        Ok(total)
    })?;
    measure("shardwire_typed", &mut || {
        let mut decoder = Decoder::new(Compression::ZlibStream);
        let filter = EventFilter::all();
        let mut typed = 0;
        for message in &messages {
            if let Some(payload) = decoder.push(message, MessageKind::Binary)?
                && let Decoded::Event(_) = payload.decode(&filter)
            {
                typed += 1;
            }
        }
        Ok(typed)
    })?;
    measure("twilight_raw", &mut || {
        let mut total = 0;
        inflate_each(&messages, |bytes| {
            // twilight-gateway hands out an owned String per message.
            let json = String::from_utf8(bytes.to_vec())?;
            if let Some(envelope) = GatewayEventDeserializer::from_json(&json) {
                total += json.len() as u64 + u64::from(envelope.op());
            }
            Ok(())
        })?;
        Ok(total)
    })?;
    measure("twilight_typed", &mut || {
        let mut typed = 0;
        inflate_each(&messages, |bytes| {
            let json = String::from_utf8(bytes.to_vec())?;
            if let Ok(Some(_)) = twilight_gateway::parse(json, EventTypeFlags::all()) {
                typed += 1;
            }
            Ok(())
        })?;
        Ok(typed)
    })?;
    Ok(json!({"events": events, "passes": passes, "bytes": corpus.total_bytes(), "rows": rows}))
}

async fn run(command: Command) -> Result<serde_json::Value> {
    match command {
        Command::E2e {
            client,
            typed,
            sink,
            recorder,
            shards,
            events,
            gateway,
            token,
            compression,
        } => {
            let prometheus = if recorder {
                if client != Client::Shardwire {
                    bail!("--recorder is shardwire's");
                }
                let recorder =
                    metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
                let handle = recorder.handle();
                metrics::set_global_recorder(recorder).context("installing the recorder")?;
                Some(handle)
            } else {
                None
            };
            let cpu = cpu_time()?;
            let wall = Instant::now();
            let mut consumed = match client {
                Client::Shardwire if sink => {
                    shardwire_sink_e2e(&gateway, &token, shards, events, typed, compression).await?
                }
                Client::Shardwire => {
                    shardwire_e2e(&gateway, &token, shards, events, typed, compression).await?
                }
                Client::Twilight if sink => bail!("--sink is shardwire's"),
                Client::Twilight => {
                    twilight_e2e(&gateway, &token, shards, events, typed, compression).await?
                }
            };
            let flood_s = busy(std::mem::take(&mut consumed.floods)).as_secs_f64();
            let wall = wall.elapsed();
            let cpu = cpu_time()? - cpu;
            // What the recorder holds, as a scrape would see it.
            let rendered = prometheus.map_or(0, |handle| handle.render().len());
            if typed && consumed.typed < consumed.dispatches {
                bail!(
                    "{} of {} dispatches typed",
                    consumed.typed,
                    consumed.dispatches
                );
            }
            Ok(json!({
                "client": format!("{client:?}").to_lowercase(),
                "compression": compression.to_string(),
                "typed": typed,
                "sink": sink,
                "recorder": recorder,
                "rendered_bytes": rendered,
                "shards": shards,
                "events": consumed.dispatches,
                "bytes": consumed.bytes,
                "flood_events": u64::from(shards) * events,
                "flood_s": flood_s,
                "wall_s": wall.as_secs_f64(),
                "cpu_s": cpu.as_secs_f64(),
                "peak_rss_kib": status_kib("VmHWM")?,
            }))
        }
        Command::Idle {
            client,
            shards,
            gateway,
            token,
            compression,
            events,
            no_hibernate,
        } => {
            if no_hibernate && client != Client::Shardwire {
                bail!("--no-hibernate is shardwire's");
            }
            let baseline = status_kib("VmRSS")?;
            let run = IdleRun {
                compression,
                events,
                hibernate: !no_hibernate,
            };
            let (ready_after, keep) = idle(client, &gateway, &token, shards, run).await?;
            // Let buffers settle (shardwire's shards hibernate 0.5 to 1 s
            // after their last message, and hand the memory back 0.25 s
            // later), then read.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss = status_kib("VmRSS")?;
            let trimmed = trimmed_rss_kib()?;
            drop(keep);
            Ok(json!({
                "client": format!("{client:?}").to_lowercase(),
                "compression": compression.to_string(),
                "events": events,
                "hibernate": !no_hibernate,
                "shards": shards,
                "ready_s": ready_after.as_secs_f64(),
                "baseline_rss_kib": baseline,
                "rss_kib": rss,
                "trimmed_rss_kib": trimmed,
            }))
        }
        Command::Floor {
            events,
            seed,
            compression: Compression::ZstdStream,
        } => zstd_stream::floor(events, seed),
        Command::Floor { events, seed, .. } => floor(events, seed),
        Command::Latency {
            client,
            shards,
            events,
            gateway,
            token,
        } => latency::run(client, &gateway, &token, shards, events).await,
        Command::Codec { events, passes } => codec(events, passes),
        Command::Cores(_) => bail!("`cores` builds its own runtime"),
        Command::Node {
            api,
            shards,
            events,
            token,
        } => node::node(&api, &token, shards, events).await,
        Command::Startup {
            api,
            shards,
            identify_window_ms,
            token,
        } => {
            let mut config = ClusterConfig::new(Token::new(token), Intents::GUILDS);
            config.api_base = api;
            config.shards = ShardSpec::Count(shards);
            let window = Duration::from_millis(identify_window_ms);
            config.identify_window = window;
            let started = Instant::now();
            let mut cluster = Cluster::start(config).await?;
            let concurrency = cluster.gateway().info().session_start_limit.max_concurrency;
            let optimum = window * (shards.div_ceil(concurrency.max(1)) - 1);
            let mut ready = 0;
            while ready < shards {
                match tokio::time::timeout(Duration::from_secs(300), cluster.next_event()).await {
                    Ok(Some((_, ShardEvent::Ready { .. }))) => ready += 1,
                    Ok(Some((shard, ShardEvent::Fatal(error)))) => bail!("shard {shard}: {error}"),
                    Ok(Some(_)) => {}
                    _ => bail!("shards did not all get ready"),
                }
            }
            Ok(json!({
                "shards": shards,
                "max_concurrency": concurrency,
                "ready_s": started.elapsed().as_secs_f64(),
                "optimum_s": optimum.as_secs_f64(),
            }))
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Cores(args) = cli.command {
        println!("{}", cores::run(args)?);
        return Ok(());
    }
    // One core for the client: figures are per core, and the simulator
    // has the other.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // No measurement waits forever: a stuck run fails.
    let report = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(300), run(cli.command))
            .await
            .context("the measurement took over 300 s")?
    })?;
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_is_the_union_of_the_floods() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        // Two overlapping floods, then one that started after a long wait.
        let floods = vec![(at(0), at(100)), (at(5000), at(5050)), (at(50), at(150))];
        assert_eq!(busy(floods), Duration::from_millis(200));
        assert_eq!(busy(Vec::new()), Duration::ZERO);
    }
}

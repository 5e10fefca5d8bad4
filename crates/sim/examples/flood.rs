//! How many small events per second the simulator pushes from one core.
//!
//! The simulator runs on a single-threaded runtime on its own thread. A
//! client on another thread identifies, then reads the raw bytes of a
//! `Fault::Flood` followed by a close, without parsing frames, so the figure
//! is the simulator's and not the client's. One warm-up run builds the shared
//! pre-encoded corpus; then five runs are timed, and the median and the
//! spread are printed.
//!
//! `cargo run --release -p shardwire-sim --example flood [EVENTS] [zlib-stream|none]`

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example reports its measurement"
)]

use std::sync::mpsc;
use std::time::Instant;

use shardwire_codec::Compression;
use shardwire_sim::raw::RawClient;
use shardwire_sim::{Fault, Sim};
use tokio::io::AsyncReadExt;

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let compression: Compression = args
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(Compression::ZlibStream);

    // The simulator, alone on one core.
    let (urls_tx, urls) = mpsc::channel();
    let (floods_tx, floods) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            // Each run identifies anew: no identify window between runs.
            let sim = Sim::builder()
                .guilds_per_shard(1)
                .identify_window(std::time::Duration::ZERO)
                .start()
                .await
                .expect("sim");
            urls_tx
                .send(sim.gateway_url().to_owned())
                .expect("main thread");
            let sim = std::sync::Arc::new(sim);
            let (go_tx, mut go) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                while floods.recv().is_ok() {
                    let _ = go_tx.send(());
                }
            });
            while go.recv().await.is_some() {
                sim.inject(None, Fault::Flood(events));
                // Faults reach a connection in order: the close follows the
                // flood's last event.
                sim.inject(None, Fault::Close(4000));
            }
        });
    });
    let gateway = urls.recv().expect("simulator started");

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rates = Vec::new();
    let mut megabytes = 0.0;
    for run in 0..6 {
        let (rate, mb) = client.block_on(async {
            let mut raw = RawClient::connect(&gateway, compression).await;
            raw.start("sim-token", [0, 1]).await;
            raw.until(0, Some("GUILD_CREATE")).await;
            let mut stream = raw.into_stream();
            let mut buffer = vec![0u8; 1 << 20];
            let mut bytes = 0u64;
            let started = Instant::now();
            floods_tx.send(()).expect("simulator thread");
            // The close frame's reason ends the flood's bytes.
            let end = b"Simulated close.";
            let mut tail: Vec<u8> = Vec::new();
            loop {
                let read = stream.read(&mut buffer).await.expect("read");
                assert!(
                    read > 0,
                    "the connection ended before the close frame, after {bytes} bytes, last {:?}",
                    String::from_utf8_lossy(&tail)
                );
                bytes += read as u64;
                tail.extend_from_slice(&buffer[read.saturating_sub(end.len())..read]);
                if tail.ends_with(end) {
                    break;
                }
                tail.drain(..tail.len().saturating_sub(end.len()));
            }
            let seconds = started.elapsed().as_secs_f64();
            (events as f64 / seconds, bytes as f64 / seconds / 1e6)
        });
        if run == 0 {
            println!("warm-up (builds the corpus): {rate:.0} events/s");
        } else {
            println!("run {run}: {rate:.0} events/s, {mb:.1} MB/s on the wire");
            rates.push(rate);
            megabytes += mb;
        }
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{events} events per run, {compression}: median {:.0} events/s (min {:.0}, max {:.0}), {:.1} MB/s on the wire",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        megabytes / rates.len() as f64
    );
}

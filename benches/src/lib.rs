//! End-to-end benchmarks of shardwire: **not built yet**.
//!
//! The codec's own benchmarks live beside it (`crates/codec/benches`) and run
//! with `cargo xtask bench`. This package will hold the whole-client
//! comparisons (shards over loopback against `shardwire-sim`, memory per idle
//! shard, startup and latency) once the shard and the simulator exist.

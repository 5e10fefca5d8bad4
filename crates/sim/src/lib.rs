//! A local Discord Gateway for tests, benchmarks and the demo: **not built yet**.
//!
//! This crate will run a real WebSocket and REST server on loopback that speaks
//! the gateway protocol, enforces its limits and injects scripted faults. It is
//! specified in the project's issue "shardwire-sim"; until that lands, this
//! crate exports nothing.

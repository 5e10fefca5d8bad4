//! Runnable examples of shardwire; see the `*.rs` files beside this package's
//! manifest and run one with `cargo run -p shardwire-examples --example NAME`.

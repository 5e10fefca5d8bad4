//! Many Discord Gateway shards as one: **not built yet**.
//!
//! This crate will fetch gateway information, run the identify queue that
//! honours `max_concurrency`, route commands by guild id and manage the
//! lifecycle and sessions of many shards. It is specified in the project's issue
//! "Many shards as one"; until that lands, this crate exports nothing.

//! What the shard's test files share.

#![allow(dead_code, reason = "each test file uses part of it")]

pub(crate) mod driver;
pub(crate) mod machine;
pub(crate) mod raw_gateway;

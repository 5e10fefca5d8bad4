#![no_main]
//! The scan and typed decoding on arbitrary bytes: never a panic, and the
//! strict and lazy scans held to serde_json in both directions (see
//! `reference.rs`): escapes, duplicate names, any depth, any field order.

use libfuzzer_sys::fuzz_target;

mod reference;

fuzz_target!(|data: &[u8]| reference::check(data));

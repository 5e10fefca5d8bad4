//! shardwire-codec's tests (`tests/`) and benchmark (`benches/`) on the
//! traffic shardwire-corpus generates. They live in a package of their own
//! so that the codec itself depends on no other shardwire crate, not even
//! for its tests; the codec's own unit tests and the tests that need no
//! corpus stay beside its code.

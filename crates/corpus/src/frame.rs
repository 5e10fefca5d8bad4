//! Server WebSocket frames, written by the codec's frame writer.

use shardwire_codec::frame::encode_frame;

/// One unmasked WebSocket frame (RFC 6455), as a server sends it: `opcode`
/// 1 text, 2 binary, 0 continuation, 8 close, 9 ping, 10 pong, or any other
/// four-bit opcode a test wants refused.
#[must_use]
pub fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(fin, opcode, None, payload, &mut out);
    out
}

//! Server WebSocket frames.

/// One unmasked WebSocket frame (RFC 6455), as a server sends it: `opcode`
/// 1 text, 2 binary, 0 continuation, 8 close, 9 ping, 10 pong.
#[must_use]
pub fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

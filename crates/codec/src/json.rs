//! JSON syntax, checked without recursion: where a value ends, and what an
//! escaped string says.
//!
//! The scan validates the values it does not parse with [`skip_value`],
//! which keeps the kinds of the open arrays and objects in a bit set rather
//! than on the call stack, so no input can overflow the stack, and refuses
//! nesting deeper than [`MAX_DEPTH`]. UTF-8 is checked by the caller, over
//! the whole payload at once.

/// The deepest nesting of arrays and objects a payload may have, its own
/// outer object included.
///
/// It is serde_json's own limit, so a payload the scan accepts never fails a
/// typed decode for its depth, and a payload nested deeper is invalid
/// everywhere. Discord's payloads nest a dozen levels or so.
pub const MAX_DEPTH: usize = 127;

/// Where and why a text is not JSON.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Syntax {
    /// The byte offset of the problem.
    pub(crate) at: usize,
    /// What was wrong there.
    pub(crate) what: &'static str,
}

fn fail<T>(at: usize, what: &'static str) -> Result<T, Syntax> {
    Err(Syntax { at, what })
}

/// Skips JSON white space from `pos`.
pub(crate) fn skip_ws(json: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = json.get(pos) {
        pos += 1;
    }
    pos
}

/// Checks the one JSON value that starts at `pos` (after any white space)
/// and returns `(start, end)`: where its first byte is, and the offset just
/// past it. `depth` is how many arrays and objects already enclose it.
pub(crate) fn skip_value(json: &[u8], pos: usize, depth: usize) -> Result<(usize, usize), Syntax> {
    let start = skip_ws(json, pos);
    let mut pos = start;
    // Bit n is set when the n-th container open inside this value is an
    // object. `MAX_DEPTH` fits in the 128 bits.
    let mut objects: u128 = 0;
    let mut open = 0usize;
    'value: loop {
        pos = skip_ws(json, pos);
        match json.get(pos) {
            Some(&byte @ (b'{' | b'[')) => {
                if depth + open >= MAX_DEPTH {
                    return fail(pos, "arrays and objects nested deeper than 127 levels");
                }
                let object = byte == b'{';
                if object {
                    objects |= 1 << open;
                } else {
                    objects &= !(1 << open);
                }
                open += 1;
                pos = skip_ws(json, pos + 1);
                let empty = if object { b'}' } else { b']' };
                if json.get(pos) == Some(&empty) {
                    open -= 1;
                    pos += 1;
                } else {
                    if object {
                        pos = member_name(json, pos)?;
                    }
                    continue 'value;
                }
            }
            Some(b'"') => pos = skip_string(json, pos)?.end,
            Some(b't') => pos = literal(json, pos, b"true")?,
            Some(b'f') => pos = literal(json, pos, b"false")?,
            Some(b'n') => pos = literal(json, pos, b"null")?,
            Some(b'-' | b'0'..=b'9') => pos = skip_number(json, pos)?,
            Some(_) => return fail(pos, "expected a value"),
            None => return fail(pos, "the text ends where a value should be"),
        }
        // A value ended: close what it ended, or go on to the next element.
        loop {
            if open == 0 {
                return Ok((start, pos));
            }
            pos = skip_ws(json, pos);
            let object = (objects >> (open - 1)) & 1 == 1;
            match (json.get(pos), object) {
                (Some(b','), _) => {
                    pos += 1;
                    if object {
                        pos = member_name(json, skip_ws(json, pos))?;
                    }
                    continue 'value;
                }
                (Some(b'}'), true) | (Some(b']'), false) => {
                    open -= 1;
                    pos += 1;
                }
                (_, true) => return fail(pos, "expected `,` or `}` in an object"),
                (_, false) => return fail(pos, "expected `,` or `]` in an array"),
            }
        }
    }
}

/// A member's name and its colon, from the name's opening quote; returns
/// the offset after the colon.
fn member_name(json: &[u8], pos: usize) -> Result<usize, Syntax> {
    if json.get(pos) != Some(&b'"') {
        return fail(pos, "expected a member name");
    }
    let pos = skip_ws(json, skip_string(json, pos)?.end);
    if json.get(pos) != Some(&b':') {
        return fail(pos, "expected `:` after a member name");
    }
    Ok(pos + 1)
}

/// A string found by [`skip_string`].
pub(crate) struct Str {
    /// Just past its closing quote.
    pub(crate) end: usize,
    /// Whether it holds an escape.
    pub(crate) escaped: bool,
}

/// Checks the string whose opening quote is at `pos`: escapes well formed,
/// no raw control characters.
pub(crate) fn skip_string(json: &[u8], pos: usize) -> Result<Str, Syntax> {
    let mut at = pos + 1;
    let mut escaped = false;
    loop {
        at = plain_run(json, at);
        match json.get(at) {
            Some(b'"') => {
                return Ok(Str {
                    end: at + 1,
                    escaped,
                });
            }
            Some(b'\\') => {
                escaped = true;
                at = match json.get(at + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at + 2,
                    Some(b'u') => {
                        hex4(json, at + 2)?;
                        at + 6
                    }
                    _ => return fail(at, "an invalid escape in a string"),
                };
            }
            Some(_) => return fail(at, "a control character in a string"),
            None => return fail(at, "a string that never ends"),
        }
    }
}

/// Where the run of plain string bytes from `at` ends: the first quote,
/// backslash or control character (or the end). Eight bytes at a time while
/// none of them is one, then byte by byte.
fn plain_run(json: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A high bit for each zero byte of `word` (and perhaps for bytes after
    // one, which the byte loop then reads).
    let zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGH;
    while let Some(chunk) = json.get(at..at + 8) {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        let special = zero(word ^ (ONES * u64::from(b'"')))
            | zero(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGH);
        if special != 0 {
            break;
        }
        at += 8;
    }
    while json
        .get(at)
        .is_some_and(|&byte| byte != b'"' && byte != b'\\' && byte >= 0x20)
    {
        at += 1;
    }
    at
}

/// The four hex digits of a `\u` escape, at `pos`.
fn hex4(json: &[u8], pos: usize) -> Result<u16, Syntax> {
    let digits = json.get(pos..pos + 4).ok_or(Syntax {
        at: pos,
        what: "a \\u escape without four hex digits",
    })?;
    let mut value = 0u16;
    for &digit in digits {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            b'A'..=b'F' => digit - b'A' + 10,
            _ => return fail(pos, "a \\u escape without four hex digits"),
        };
        value = value << 4 | u16::from(nibble);
    }
    Ok(value)
}

fn literal(json: &[u8], pos: usize, word: &[u8]) -> Result<usize, Syntax> {
    if json[pos..].starts_with(word) {
        Ok(pos + word.len())
    } else {
        fail(pos, "expected true, false or null")
    }
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
fn skip_number(json: &[u8], pos: usize) -> Result<usize, Syntax> {
    let digits = |mut at: usize| {
        let from = at;
        while json.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        (at, at - from)
    };
    let mut at = pos + usize::from(json.get(pos) == Some(&b'-'));
    match json.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at = digits(at).0,
        _ => return fail(at, "a number without digits"),
    }
    if json.get(at) == Some(&b'.') {
        let (end, count) = digits(at + 1);
        if count == 0 {
            return fail(end, "a number without digits after its `.`");
        }
        at = end;
    }
    if let Some(b'e' | b'E') = json.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = json.get(at) {
            at += 1;
        }
        let (end, count) = digits(at);
        if count == 0 {
            return fail(end, "a number without digits in its exponent");
        }
        at = end;
    }
    Ok(at)
}

/// The text a string's contents stand for: `raw` is what lies between its
/// quotes, already checked by [`skip_string`]. UTF-16 surrogates must come
/// in pairs, as serde_json requires of a string it decodes.
pub(crate) fn unescape(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    const LONE: &str = "a \\u escape is a lone UTF-16 surrogate";
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    while let Some(offset) = raw[at..].iter().position(|&byte| byte == b'\\') {
        out.extend_from_slice(&raw[at..at + offset]);
        at += offset;
        let escape = raw.get(at + 1).copied().unwrap_or(0);
        let simple = match escape {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            at += 2;
            continue;
        }
        let unit = |at: usize| hex4(raw, at).map_err(|_| "a \\u escape without four hex digits");
        let first = unit(at + 2)?;
        at += 6;
        let code = match first {
            0xd800..=0xdbff => {
                if raw.get(at..at + 2) != Some(b"\\u") {
                    return Err(LONE);
                }
                let second = unit(at + 2)?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return Err(LONE);
                }
                at += 6;
                0x1_0000 + ((u32::from(first) - 0xd800) << 10 | (u32::from(second) - 0xdc00))
            }
            0xdc00..=0xdfff => return Err(LONE),
            unit => u32::from(unit),
        };
        let mut utf8 = [0; 4];
        let ch = char::from_u32(code).ok_or(LONE)?;
        out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
    }
    out.extend_from_slice(&raw[at..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip(text: &str) -> Result<(usize, usize), Syntax> {
        skip_value(text.as_bytes(), 0, 0)
    }

    #[test]
    fn values_end_where_json_says() {
        for (text, end) in [
            ("null", 4),
            (" true ", 5),
            ("-0.5e+7,", 7),
            (r#""a\"b\u00e9" x"#, 12),
            (r#"{"a":[1,{"b":[]},"]"],"c":{}}"#, 29),
            ("[[[]],[]]", 9),
        ] {
            assert_eq!(skip(text).map(|span| span.1), Ok(end), "{text}");
        }
        assert_eq!(skip("  [1]").map(|span| span.0), Ok(2));
    }

    #[test]
    fn what_is_not_json_is_refused() {
        for text in [
            "",
            "[",
            "[1,]",
            "{\"a\"}",
            "{\"a\":}",
            "{1:2}",
            "[01]",
            "1.",
            "1e",
            "-",
            "+1",
            "tru",
            "\"a",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"a\u{1}b\"",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            "]",
            "[}",
            "{]",
        ] {
            assert!(skip(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn depth_is_bounded_and_never_uses_the_stack() {
        let nested = |levels: usize| "[".repeat(levels) + &"]".repeat(levels);
        assert!(skip(&nested(MAX_DEPTH)).is_ok());
        assert!(skip(&nested(MAX_DEPTH + 1)).is_err());
        // Already inside one object: one level fewer.
        assert!(skip_value(nested(MAX_DEPTH).as_bytes(), 0, 1).is_err());
        // Far deeper than any stack could recurse, closed or not: refused at
        // the limit, with no recursion.
        for (text, level) in [
            (nested(1_000_000), 1),
            ("[".repeat(1_000_000), 1),
            ("{\"a\":".repeat(1_000_000), 5),
        ] {
            let error = skip(&text).unwrap_err();
            // At the opening of the first container past the limit.
            assert_eq!(error.at, MAX_DEPTH * level, "{}", error.what);
        }
    }

    #[test]
    fn a_plain_run_ends_at_the_first_quote_backslash_or_control_byte_wherever_it_is() {
        for special in [b'"', b'\\', 0x00, 0x1f] {
            for len in 0..40 {
                for at in 0..len {
                    let mut text: Vec<u8> = (0..len).map(|i| b"a\xc3\xa9~ z"[i % 6]).collect();
                    text[at] = special;
                    assert_eq!(plain_run(&text, 0), at, "{special:#x} at {at} of {len}");
                }
                let text = vec![0xff_u8; len];
                assert_eq!(plain_run(&text, 0), len);
            }
        }
    }

    #[test]
    fn escapes_decode_as_serde_json_decodes_them() {
        for raw in [
            r"MESSAGE\u005fCREATE",
            r#"a\"b\\c\/d\b\f\n\r\t"#,
            r"\u00e9\u20AC\ud83d\ude00",
            "plain",
        ] {
            let quoted = format!("\"{raw}\"");
            let expected: String = serde_json::from_str(&quoted).unwrap();
            assert_eq!(unescape(raw.as_bytes()).unwrap(), expected.as_bytes());
        }
        for lone in [r"\ud83d", r"\ude00", r"\ud83dx", r"\ud83d\u0041"] {
            assert!(unescape(lone.as_bytes()).is_err(), "{lone}");
            assert!(serde_json::from_str::<String>(&format!("\"{lone}\"")).is_err());
        }
    }
}

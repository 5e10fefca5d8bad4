use std::borrow::Cow;

use crate::CodecError;
use crate::json::{self, Syntax};

/// One gateway payload, scanned but not parsed into a tree.
///
/// [`Payload::scan`] reads `op`, `s` and `t` and finds the raw JSON of `d`
/// without building any value; everything borrows the decompressed buffer.
/// Decode `d` into a typed event only when it is wanted, with
/// [`Payload::decode`](crate::Payload::decode).
///
/// # How lazy the scan is
///
/// The whole payload is checked to be UTF-8, and the envelope (the outer
/// object, `op`, `s`, `t`) is parsed strictly. Discord sends `d` last, after
/// `t`, `s` and `op`; when a payload has that shape, `d` is taken as the rest
/// of the object after checking only that it starts and ends like one JSON
/// value. Its inside is validated when it is decoded (a typed decode that
/// finds more fields after `d` scans the payload again strictly, so nothing is
/// lost), or on demand with [`Payload::scan_strict`]. A payload exactly as
/// Discord writes it (`{"t":…,"s":…,"op":…,"d":…}`, no white space) is read
/// by a short fixed path; any other field order or spacing is scanned in
/// general, strictly from the start.
///
/// Field names and `t` may be written with JSON escapes (`"\u006fp"` is
/// `op`); they are read as what they stand for. No input nests the scan's
/// own work on the stack, and a payload whose checked part nests deeper than
/// [`MAX_DEPTH`](crate::MAX_DEPTH) arrays and objects is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload<'a> {
    op: u8,
    seq: Option<u64>,
    event_type: Option<Cow<'a, str>>,
    data: &'a str,
    json: &'a str,
    /// Whether `data` was validated as exactly one JSON value.
    strict: bool,
}

impl<'a> Payload<'a> {
    /// Scans one complete payload lazily (see the type's documentation).
    ///
    /// # Errors
    ///
    /// [`CodecError::InvalidUtf8`], [`CodecError::InvalidJson`] (also for a
    /// value of the wrong type in `op`, `s` or `t`) and
    /// [`CodecError::MissingOp`]. None of them requires a decoder reset.
    pub fn scan(json: &'a [u8]) -> Result<Self, CodecError> {
        Self::scan_with(json, false)
    }

    /// Scans one complete payload and validates all of it, `d` included, as
    /// JSON: for callers that forward `d` raw and must not pass on anything
    /// malformed.
    ///
    /// # Errors
    ///
    /// As [`Payload::scan`].
    pub fn scan_strict(json: &'a [u8]) -> Result<Self, CodecError> {
        Self::scan_with(json, true)
    }

    /// Whether `d` has been validated as exactly one JSON value.
    #[must_use]
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    fn scan_with(json: &'a [u8], strict: bool) -> Result<Self, CodecError> {
        let scanned = Self::scan_once(json, strict);
        // A `d` taken lazily as the rest of the payload hides what comes
        // after it, which only a payload with a name twice has (a later
        // `op` may be the valid one). What the lazy scan refuses, the strict
        // scan decides, so the lazy scan accepts all the strict scan does.
        match scanned {
            Err(_) if !strict => Self::scan_once(json, true),
            scanned => scanned,
        }
    }

    fn scan_once(json: &'a [u8], strict: bool) -> Result<Self, CodecError> {
        // Discord's own field order first, cheaply; anything else (and a
        // strict scan) goes through the general scan.
        let fast = if strict {
            None
        } else {
            Cursor::discord_order(json)
        };
        let envelope = match fast {
            Some(envelope) => envelope,
            None => Cursor::envelope(json, strict)?,
        };
        let Envelope {
            op,
            seq,
            event_type,
            data,
            lazy,
        } = envelope;
        let op = op.ok_or(CodecError::MissingOp)?;
        let op = u8::try_from(op).map_err(|_| CodecError::InvalidJson {
            detail: format!("`op` {op} is out of range"),
        })?;
        // The scan read bytes, not text: `d` is checked as JSON only as far
        // as the scan went (all of it when strict). One UTF-8 check of the
        // whole buffer covers `d`, unknown fields and names cheaply and
        // keeps the borrowing below free of unsafe code.
        let text = simdutf8::basic::from_utf8(json).map_err(|_| CodecError::InvalidUtf8 {
            valid_up_to: simdutf8::compat::from_utf8(json)
                .err()
                .map_or(0, |error| error.valid_up_to()),
        })?;
        let data = data.map_or("null", |(start, end)| &text[start..end]);
        let event_type = match event_type {
            None => None,
            Some(name) if !name.escaped => Some(Cow::Borrowed(&text[name.start..name.end])),
            Some(name) => {
                let decoded = json::unescape(&json[name.start..name.end]).map_err(|what| {
                    CodecError::InvalidJson {
                        detail: format!("`t`: {what}"),
                    }
                })?;
                // The escaped text was valid UTF-8, and so is what escapes
                // stand for.
                let decoded = String::from_utf8(decoded).map_err(|_| CodecError::InvalidJson {
                    detail: "`t` is not UTF-8 once unescaped".into(),
                })?;
                Some(Cow::Owned(decoded))
            }
        };
        Ok(Self {
            op,
            seq,
            event_type,
            data,
            json: text,
            strict: !lazy,
        })
    }

    /// The opcode (`op`).
    #[must_use]
    pub fn op(&self) -> u8 {
        self.op
    }

    /// The sequence number (`s`), present on dispatches.
    #[must_use]
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// The event name (`t`), present on dispatches, such as `MESSAGE_CREATE`:
    /// what the JSON says, escapes decoded.
    #[must_use]
    pub fn event_type(&self) -> Option<&str> {
        self.event_type.as_deref()
    }

    /// The raw JSON of `d`, exactly as received (`null` when absent).
    #[must_use]
    pub fn data(&self) -> &'a str {
        self.data
    }

    /// The whole payload's JSON, exactly as received.
    #[must_use]
    pub fn json(&self) -> &'a str {
        self.json
    }

    /// Whether this is a dispatch (op 0).
    #[must_use]
    pub fn is_dispatch(&self) -> bool {
        self.op == 0
    }
}

/// What a scan finds: spans are byte ranges of the payload.
#[cfg_attr(test, derive(Debug, PartialEq, Eq))]
struct Envelope {
    op: Option<u64>,
    seq: Option<u64>,
    event_type: Option<Name>,
    data: Option<(usize, usize)>,
    /// Whether `d` was taken without validating its inside.
    lazy: bool,
}

/// Where `t`'s text is, between its quotes, and whether it holds escapes.
#[cfg_attr(test, derive(Debug, PartialEq, Eq))]
#[derive(Clone, Copy)]
struct Name {
    start: usize,
    end: usize,
    escaped: bool,
}

/// An envelope field's name, escapes decoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Op,
    Seq,
    Type,
    Data,
    Other,
}

impl Field {
    fn of(name: &[u8]) -> Self {
        match name {
            b"op" => Self::Op,
            b"s" => Self::Seq,
            b"t" => Self::Type,
            b"d" => Self::Data,
            _ => Self::Other,
        }
    }
}

struct Cursor<'a> {
    json: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// The envelope of a payload in the order Discord sends it, exactly
    /// `{"t":…,"s":…,"op":…,"d":…}` with no white space before `d`, `d`
    /// taken lazily as the rest. `None` for anything else (the caller then
    /// scans in general, which gives the same envelope for what this
    /// accepts, and the right error for what it does not).
    fn discord_order(json: &'a [u8]) -> Option<Envelope> {
        let mut cursor = Cursor { json, pos: 0 };
        cursor.eat(br#"{"t":"#)?;
        let event_type = cursor.nullable_name().ok()?;
        cursor.eat(br#","s":"#)?;
        let seq = cursor.nullable_integer("s").ok()?;
        cursor.eat(br#","op":"#)?;
        let op = cursor.integer("op").ok()?;
        cursor.eat(br#","d":"#)?;
        let data = cursor.rest_as_last_value()?;
        cursor.skip_ws();
        (cursor.pos == json.len()).then_some(Envelope {
            op: Some(op),
            seq,
            event_type,
            data: Some(data),
            lazy: true,
        })
    }

    /// The envelope of a payload in any field order, `d` scanned lazily
    /// when it comes last and `strict` is off.
    fn envelope(json: &'a [u8], strict: bool) -> Result<Envelope, CodecError> {
        let mut cursor = Cursor { json, pos: 0 };
        let mut op = None;
        let mut seq = None;
        let mut event_type = None;
        let mut data: Option<(usize, usize)> = None;
        let (mut seen_s, mut seen_t, mut lazy) = (false, false, false);

        cursor.skip_ws();
        cursor.expect(b'{')?;
        cursor.skip_ws();
        if cursor.peek() == Some(b'}') {
            cursor.pos += 1;
        } else {
            loop {
                cursor.skip_ws();
                let field = cursor.field()?;
                cursor.skip_ws();
                cursor.expect(b':')?;
                cursor.skip_ws();
                match field {
                    Field::Op => op = Some(cursor.integer("op")?),
                    Field::Seq => {
                        seq = cursor.nullable_integer("s")?;
                        seen_s = true;
                    }
                    Field::Type => {
                        event_type = cursor.nullable_name()?;
                        seen_t = true;
                    }
                    Field::Data if !strict && op.is_some() && seen_s && seen_t => {
                        if let Some(span) = cursor.rest_as_last_value() {
                            data = Some(span);
                            lazy = true;
                            break;
                        }
                        data = Some(cursor.skip_value()?);
                    }
                    Field::Data => data = Some(cursor.skip_value()?),
                    Field::Other => {
                        cursor.skip_value()?;
                    }
                }
                cursor.skip_ws();
                match cursor.next() {
                    Some(b',') => {}
                    Some(b'}') => break,
                    _ => return Err(cursor.invalid("expected `,` or `}` after a field")),
                }
            }
        }
        cursor.skip_ws();
        if cursor.pos != json.len() {
            return Err(cursor.invalid("trailing characters after the payload"));
        }

        Ok(Envelope {
            op,
            seq,
            event_type,
            data,
            lazy,
        })
    }

    fn peek(&self) -> Option<u8> {
        self.json.get(self.pos).copied()
    }

    /// Moves past `expected` if the input goes on with it.
    fn eat(&mut self, expected: &[u8]) -> Option<()> {
        let rest = self.json.get(self.pos..)?;
        rest.starts_with(expected)
            .then(|| self.pos += expected.len())
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn invalid(&self, what: &str) -> CodecError {
        CodecError::InvalidJson {
            detail: format!("{what} at byte {}", self.pos),
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), CodecError> {
        if self.next() == Some(byte) {
            Ok(())
        } else {
            Err(self.invalid(&format!("expected `{}`", byte as char)))
        }
    }

    /// A field name of the envelope, escapes decoded.
    fn field(&mut self) -> Result<Field, CodecError> {
        if self.peek() != Some(b'"') {
            return Err(self.invalid("expected a field name"));
        }
        let start = self.pos + 1;
        let name = json::skip_string(self.json, self.pos).map_err(|error| self.syntax(error))?;
        self.pos = name.end;
        let raw = &self.json[start..name.end - 1];
        if !name.escaped {
            return Ok(Field::of(raw));
        }
        json::unescape(raw)
            .map(|decoded| Field::of(&decoded))
            .map_err(|what| CodecError::InvalidJson {
                detail: format!("a field name at byte {start}: {what}"),
            })
    }

    /// The fast path for a `d` that ends the payload: takes everything up to
    /// the final `}` as the value, if it starts and ends like one JSON value.
    /// Moves the cursor past that `}`. Returns `None` (cursor unmoved) when the
    /// rest does not look like a single value.
    fn rest_as_last_value(&mut self) -> Option<(usize, usize)> {
        let bytes = self.json;
        let mut end = bytes.len();
        while end > self.pos && matches!(bytes[end - 1], b' ' | b'\n' | b'\r' | b'\t') {
            end -= 1;
        }
        if end <= self.pos || bytes[end - 1] != b'}' {
            return None;
        }
        let close = end - 1;
        let mut value_end = close;
        while value_end > self.pos && matches!(bytes[value_end - 1], b' ' | b'\n' | b'\r' | b'\t') {
            value_end -= 1;
        }
        let value = &bytes[self.pos..value_end];
        let (&first, &last) = (value.first()?, value.last()?);
        let plausible = match first {
            b'{' => last == b'}',
            b'[' => last == b']',
            b'"' => value.len() >= 2 && last == b'"',
            b'n' => value == b"null",
            b't' => value == b"true",
            b'f' => value == b"false",
            b'-' | b'0'..=b'9' => value
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')),
            _ => false,
        };
        if !plausible {
            return None;
        }
        let span = (self.pos, value_end);
        self.pos = end;
        Some(span)
    }

    fn literal_null(&mut self) -> bool {
        if self.json[self.pos..].starts_with(b"null") {
            self.pos += 4;
            true
        } else {
            false
        }
    }

    fn integer(&mut self, field: &str) -> Result<u64, CodecError> {
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)
                .and_then(|value| value.checked_add(u64::from(digit - b'0')))
                .ok_or_else(|| self.invalid(&format!("`{field}` overflows")))?;
            self.pos += 1;
        }
        let digits = self.pos - start;
        let leading_zero = digits > 1 && self.json[start] == b'0';
        if digits == 0 || leading_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return Err(self.invalid(&format!("`{field}` is not a non-negative integer")));
        }
        Ok(value)
    }

    fn nullable_integer(&mut self, field: &str) -> Result<Option<u64>, CodecError> {
        if self.literal_null() {
            Ok(None)
        } else {
            self.integer(field).map(Some)
        }
    }

    /// `t`: null or a string; returns the span between the quotes.
    fn nullable_name(&mut self) -> Result<Option<Name>, CodecError> {
        if self.literal_null() {
            return Ok(None);
        }
        if self.peek() != Some(b'"') {
            return Err(self.invalid("`t` is not a string"));
        }
        // Event names are short and never escaped: find the closing quote
        // directly. Anything unusual goes through the checking skip.
        let start = self.pos + 1;
        let rest = &self.json[start..];
        if let Some(offset) = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            && rest[offset] == b'"'
        {
            self.pos = start + offset + 1;
            return Ok(Some(Name {
                start,
                end: start + offset,
                escaped: false,
            }));
        }
        let name = json::skip_string(self.json, self.pos).map_err(|error| self.syntax(error))?;
        self.pos = name.end;
        Ok(Some(Name {
            start,
            end: name.end - 1,
            escaped: name.escaped,
        }))
    }

    /// Skips one JSON value inside the envelope, checking it, and returns
    /// its span.
    fn skip_value(&mut self) -> Result<(usize, usize), CodecError> {
        let span = json::skip_value(self.json, self.pos, 1).map_err(|error| self.syntax(error))?;
        self.pos = span.1;
        Ok(span)
    }

    /// The error for bad syntax: bad UTF-8 is told apart here, on the error
    /// path only, since the whole payload is checked for it later.
    fn syntax(&self, error: Syntax) -> CodecError {
        match simdutf8::compat::from_utf8(self.json) {
            Err(bad) => CodecError::InvalidUtf8 {
                valid_up_to: bad.valid_up_to(),
            },
            Ok(_) => CodecError::InvalidJson {
                detail: format!("{} at byte {}", error.what, error.at),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads in Discord's order, and the bytes an edit may bring in.
    const BASES: [&[u8]; 4] = [
        br#"{"t":"MESSAGE_CREATE","s":42,"op":0,"d":{"id":"1","content":"hi"}}"#,
        br#"{"t":null,"s":null,"op":11,"d":null}"#,
        br#"{"t":"X","s":0,"op":0,"d":[1,2]}"#,
        br#"{"t":"READY","s":1,"op":0,"d":"x"} "#,
    ];
    const BYTES: &[u8] = b"{}[]\":,0129-.eE tnulx\\\n\x01\xff";

    fn edits(base: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![base.to_vec()];
        for at in 0..=base.len() {
            for &byte in BYTES {
                let mut inserted = base.to_vec();
                inserted.insert(at, byte);
                out.push(inserted);
                if at < base.len() {
                    let mut replaced = base.to_vec();
                    replaced[at] = byte;
                    out.push(replaced);
                }
            }
            if at < base.len() {
                let mut removed = base.to_vec();
                removed.remove(at);
                out.push(removed);
            }
        }
        out
    }

    #[test]
    fn discords_order_reads_exactly_what_the_general_scan_reads() {
        let mut fast = 0;
        for base in BASES {
            for input in edits(base) {
                let Some(envelope) = Cursor::discord_order(&input) else {
                    continue;
                };
                fast += 1;
                let general = Cursor::envelope(&input, false).unwrap_or_else(|error| {
                    panic!(
                        "{}: fast {envelope:?}, general {error}",
                        input.escape_ascii()
                    )
                });
                assert_eq!(envelope, general, "{}", input.escape_ascii());
            }
        }
        // The fast path took the bases and many of their edits (values
        // changed within the rules), so the comparison above is not empty.
        assert!(fast > 200, "the fast path read only {fast} inputs");
    }

    #[test]
    fn anything_else_is_left_to_the_general_scan() {
        for input in [
            &br#"{"op":0,"t":"X","s":1,"d":{}}"#[..],
            br#"{ "t":"X","s":1,"op":0,"d":{}}"#,
            br#"{"t":"X","s":01,"op":0,"d":{}}"#,
            br#"{"t":"X","s":1,"op":0,"d":{},"x":1}"#,
            br#"{"t":"X","s":1,"op":-0,"d":{}}"#,
            br#"{"t":"X","s":1,"op":0}"#,
        ] {
            assert_eq!(
                Cursor::discord_order(input),
                None,
                "{}",
                input.escape_ascii()
            );
        }
    }
}

#![no_main]
//! Payloads built from the fuzzer's bytes, to reach what random bytes
//! almost never do: envelope names and `t` written in escapes, fields in
//! any order or twice, strings full of escapes (surrogate pairs and lone
//! ones), and arrays and objects nested far past the limit (one byte opens
//! up to 32,768 levels at once), closed or left open, with a stray byte
//! now and then. Each is held to serde_json as `scan_decode` does.

use libfuzzer_sys::fuzz_target;

mod reference;

/// The fuzzer's bytes, read as choices; zeros once they run out.
struct Choices<'a>(std::slice::Iter<'a, u8>);

impl Choices<'_> {
    fn next(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }

    fn done(&self) -> bool {
        self.0.len() == 0
    }
}

/// The largest payload built.
const MAX_OUT: usize = 1 << 20;

/// Writes a string of `text`, each character escaped when `choices` says.
fn string(out: &mut Vec<u8>, text: &str, choices: &mut Choices<'_>) {
    out.push(b'"');
    let escape = choices.next();
    for (index, ch) in text.chars().enumerate() {
        if escape >> (index % 8) & 1 == 1 {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                out.extend_from_slice(format!("\\u{unit:04X}").as_bytes());
            }
        } else {
            let mut buf = [0; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
    }
    out.push(b'"');
}

/// One scalar: a string with escapes of every kind, a number, a literal.
fn scalar(out: &mut Vec<u8>, choices: &mut Choices<'_>) {
    match choices.next() % 8 {
        0 => string(out, "MESSAGE_CREATE", choices),
        1 => out.extend_from_slice(br#""\" \\ \/ \b \f \n \r \t \u00e9 \ud83d\ude00""#),
        2 => out.extend_from_slice(br#""lone \ud800 surrogate""#),
        3 => out.extend_from_slice(b"-12.5e+3"),
        4 => out.extend_from_slice(&[b'0' + choices.next() % 10]),
        5 => out.extend_from_slice(b"null"),
        6 => out.extend_from_slice(b"true"),
        _ => string(out, "h\u{e9}llo", choices),
    }
}

/// A value nested as the choices say, closed unless they say otherwise.
fn value(out: &mut Vec<u8>, choices: &mut Choices<'_>) {
    // The kinds of the open containers: true for an object.
    let mut open: Vec<bool> = Vec::new();
    let mut first = true;
    loop {
        if out.len() > MAX_OUT || choices.done() {
            break;
        }
        let choice = choices.next();
        // In an object, every element after the first is preceded by a
        // comma, and each by a name.
        let element =
            |out: &mut Vec<u8>, open: &[bool], first: &mut bool, choices: &mut Choices<'_>| {
                if !*first {
                    out.push(b',');
                }
                *first = false;
                if open.last() == Some(&true) {
                    string(out, "key", choices);
                    out.push(b':');
                }
            };
        match choice {
            0x00..=0x5f => {
                element(out, &open, &mut first, choices);
                let object = choice >= 0x30;
                out.push(if object { b'{' } else { b'[' });
                open.push(object);
                first = true;
            }
            0x60..=0x9f => {
                element(out, &open, &mut first, choices);
                scalar(out, choices);
                if open.is_empty() {
                    return;
                }
            }
            0xa0..=0xdf => match open.pop() {
                Some(object) => {
                    out.push(if object { b'}' } else { b']' });
                    first = false;
                    if open.is_empty() {
                        return;
                    }
                }
                None => return,
            },
            0xe0..=0xef => {
                // A stray byte: invalid JSON, somewhere.
                out.push(choices.next());
            }
            _ => {
                // A run: 2^(0..15) arrays (or objects) opened at once.
                let count = 1usize << (choice & 0x0f);
                let object = choices.next() % 2 == 1;
                for _ in 0..count {
                    if out.len() > MAX_OUT {
                        break;
                    }
                    element(out, &open, &mut first, choices);
                    out.push(if object { b'{' } else { b'[' });
                    open.push(object);
                    first = true;
                }
            }
        }
    }
    if out.last().is_some_and(|b| *b == b',' || *b == b':') || first && open.is_empty() {
        out.extend_from_slice(b"null");
    }
    // Closed, unless the last choice said to leave it open.
    if choices.next() % 4 != 0 {
        while let Some(object) = open.pop() {
            out.push(if object { b'}' } else { b']' });
        }
    }
}

fn build(data: &[u8]) -> Vec<u8> {
    let mut choices = Choices(data.iter());
    let mut out = Vec::new();
    out.push(b'{');
    let fields = 1 + choices.next() % 6;
    for index in 0..fields {
        if index > 0 {
            out.push(b',');
        }
        let which = choices.next();
        let name = ["t", "s", "op", "d", "x"][usize::from(which % 5)];
        if which & 0x80 != 0 {
            string(&mut out, name, &mut choices);
        } else {
            out.extend_from_slice(format!("\"{name}\"").as_bytes());
        }
        out.extend_from_slice(if which & 0x40 != 0 { b" :\r\n\t" } else { b":" });
        match name {
            "op" => out.extend_from_slice(
                ["0", "11", "255", "256", "01", "-0"][usize::from(choices.next() % 6)].as_bytes(),
            ),
            "s" => out.extend_from_slice(
                ["1", "null", "18446744073709551615", "18446744073709551616"]
                    [usize::from(choices.next() % 4)]
                .as_bytes(),
            ),
            "t" => string(
                &mut out,
                ["MESSAGE_CREATE", "READY", "GUILD\u{e9}"][usize::from(choices.next() % 3)],
                &mut choices,
            ),
            _ => value(&mut out, &mut choices),
        }
    }
    out.push(b'}');
    out
}

fuzz_target!(|data: &[u8]| reference::check(&build(data)));

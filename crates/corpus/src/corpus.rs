//! [`Corpus`]: whole dispatch payloads, numbered, in the realistic mix.

use serde_json::Value;

use crate::EventGenerator;

/// A dispatch payload with its fields in the order Discord sends them.
fn payload(event: &str, seq: u64, d: &Value) -> Vec<u8> {
    let mut out = format!(r#"{{"t":"{event}","s":{seq},"op":0,"d":"#).into_bytes();
    // Serializing a `Value` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut out, d);
    out.push(b'}');
    out
}

/// A sequence of complete dispatch payloads (JSON), numbered from `s = 1`.
#[derive(Clone, Debug)]
pub struct Corpus {
    payloads: Vec<Vec<u8>>,
}

impl Corpus {
    /// `events` small dispatches of the realistic mix, with one GUILD_CREATE
    /// of 2,000 members every 2,000 events (at least one).
    #[must_use]
    pub fn realistic(events: usize, seed: u64) -> Self {
        let mut generator = EventGenerator::new(seed, 8);
        let guilds = (events / 2000).max(1);
        let total = events + guilds;
        // One GUILD_CREATE in the middle of each of `guilds` equal windows.
        let stride = total / guilds;
        let mut placed = 0;
        let mut payloads = Vec::with_capacity(total);
        for index in 0..total {
            let seq = index as u64 + 1;
            if index % stride == stride / 2 && placed < guilds {
                let id = generator.guild_ids()[placed % generator.guild_ids().len()].clone();
                placed += 1;
                let d = generator.guild_create(&id, 2000);
                payloads.push(payload("GUILD_CREATE", seq, &d));
            } else {
                let (name, d) = generator.next_event();
                payloads.push(payload(name, seq, &d));
            }
        }
        Self { payloads }
    }

    /// Only small events (no GUILD_CREATE): the shape of steady-state traffic.
    #[must_use]
    pub fn small_events(events: usize, seed: u64) -> Self {
        let mut generator = EventGenerator::new(seed, 8);
        let payloads = (1..=events as u64)
            .map(|seq| {
                let (name, d) = generator.next_event();
                payload(name, seq, &d)
            })
            .collect();
        Self { payloads }
    }

    /// One GUILD_CREATE payload of a guild with `members` members.
    #[must_use]
    pub fn guild_create(members: usize, seed: u64) -> Vec<u8> {
        let mut generator = EventGenerator::new(seed, 1);
        let id = generator.guild_ids()[0].clone();
        let d = generator.guild_create(&id, members);
        payload("GUILD_CREATE", 1, &d)
    }

    /// The payloads, in order.
    #[must_use]
    pub fn payloads(&self) -> &[Vec<u8>] {
        &self.payloads
    }

    /// The total size of the payloads' JSON.
    #[must_use]
    pub fn total_bytes(&self) -> usize {
        self.payloads.iter().map(Vec::len).sum()
    }
}

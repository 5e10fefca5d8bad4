//! Around a reshard's switch, the two generations' copies of each guild's
//! events merged so that every event comes out once, in order per guild.
//!
//! Discord sends a guild's events to every session that owns it, so while
//! both generations run each event arrives twice, on an old shard and on a
//! new one, with some skew either way. Per guild ([`guild`](super::guild)):
//!
//! - Until the guild is *cut*, its events come from the old stream; the new
//!   stream's are held, and matched against the old ones to find where the
//!   new stream starts in the old one.
//! - At the switch, a guild whose start is found is cut: the held events
//!   the old stream has not handed out come out, and from then on the new
//!   stream's do, less the copies of ones the old stream handed out first;
//!   the old stream's are dropped. A guild whose start is not found yet is
//!   cut once it is, or when the window has passed since the switch. A
//!   guild whose old shard has stopped is cut at once.
//!
//! Events match by their name and the bytes of their `d`, in order; an
//! event whose `d.id` names one occurrence (MESSAGE_CREATE,
//! INTERACTION_CREATE, GUILD_AUDIT_LOG_ENTRY_CREATE and the other creates
//! of things made once) matches by its name and that id instead, so two
//! copies serialized apart (fields in another order) still match. An
//! `*_UPDATE`'s id repeats across distinct updates: those match by bytes.
//! Every input takes the time, so this is tested on a clock of its own.
//!
//! The guilds tracked are capped (see [`Overlap::new`]): a flood of made-up
//! guild ids costs no memory past it.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use serde::Deserialize;
use shardwire_codec::Payload;
use shardwire_shard::ShardEvent;
use tokio::time::Instant;

use super::guild::{CONFIRM, GuildStreams, Held, MAX_HELD, NewEvent, OldEvent, Phase};

/// The longest window kept (a longer one is taken as this).
const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// The most guilds one shard holds: Discord closes a shard over this with
/// 4011.
const MAX_GUILDS_PER_SHARD: usize = 2_500;

/// What the overlap has done, for the logs, metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OverlapStats {
    /// Events handed out from the old generation.
    pub from_old: u64,
    /// Events handed out from the new generation.
    pub from_new: u64,
    /// Copies dropped: new events the old stream had handed out, and old
    /// events after their guild was cut.
    pub copies: u64,
    /// Guilds cut early: their old shard stopped, or too much was held.
    pub cut_early: u64,
    /// Guilds cut by the window rather than by their streams lining up.
    pub cut_by_window: u64,
    /// Events of guilds past the cap on guilds tracked (more distinct ids
    /// than the shards can hold: not real guilds), decided by ownership
    /// alone: the old generation's before the switch, the new one's after
    /// it, the other's dropped. Those handed out count in `from_old` and
    /// `from_new` too.
    pub untracked: u64,
}

/// Where a new-generation event goes.
enum Route {
    /// Through the merge with the old stream.
    Merged,
    /// Out at once, as [`ShardEvent::FromReshard`].
    Marked,
    /// Out at once, as it is.
    Plain,
}

/// The merge of one reshard's two generations: feed it every event of the
/// old generation ([`Overlap::old`]) and of the new one
/// ([`Overlap::new_event`]), [`switch`](Overlap::switch) it once every new
/// shard is READY, drive its clock ([`Overlap::poll_timeout`],
/// [`Overlap::handle_timeout`]), and take what to hand out with
/// [`Overlap::pop`]. Once [`Overlap::is_done`], the old generation can go.
///
/// Two events are copies when they have the same name and the same `d`
/// bytes, or, for an event whose `d.id` names one occurrence (MESSAGE_CREATE,
/// INTERACTION_CREATE, GUILD_AUDIT_LOG_ENTRY_CREATE, CHANNEL_CREATE,
/// GUILD_SCHEDULED_EVENT_CREATE, STAGE_INSTANCE_CREATE,
/// AUTO_MODERATION_RULE_CREATE), the same name and `d.id`. An `*_UPDATE`'s
/// id repeats across distinct updates, so those match by bytes only.
///
/// It is pure: it does no I/O and reads no clock of its own.
pub struct Overlap {
    from: u32,
    to: u32,
    window: Duration,
    switched_at: Option<Instant>,
    /// The window since the switch has passed.
    ended: bool,
    guilds: HashMap<u64, GuildStreams>,
    /// The most guilds kept in `guilds`.
    max_guilds: usize,
    /// The cap was reached (and logged).
    capped: bool,
    /// Guilds not cut yet.
    uncut: usize,
    /// Cut guilds whose new stream has still to repeat an old event.
    expecting: HashSet<u64>,
    /// When each remembered old event was handed out, and its guild,
    /// oldest first: what the window forgets next.
    remembered: VecDeque<(Instant, u64)>,
    /// Old shards that have stopped for good.
    stopped_old: HashSet<u32>,
    /// Guilds the new generation's READYs listed whose GUILD_CREATE has
    /// not come yet.
    initial_guilds: HashSet<u64>,
    out: VecDeque<(u32, ShardEvent)>,
    stats: OverlapStats,
}

impl std::fmt::Debug for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlap")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("window", &self.window)
            .field("switched", &self.switched())
            .field("uncut", &self.uncut)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Overlap {
    /// A merge for a reshard from `from` to `to` shards, remembering what
    /// the old generation handed out for `window` (at most an hour).
    ///
    /// It keeps the streams of at most `2 × 2,500 × max(from, to)` guilds
    /// (Discord closes a shard over 2,500 with 4011, so more distinct ids
    /// are no real guilds): past that, a new guild's events are decided by
    /// ownership alone ([`OverlapStats::untracked`]).
    #[must_use]
    pub fn new(from: u32, to: u32, window: Duration) -> Self {
        let shards = usize::try_from(from.max(to)).unwrap_or(usize::MAX);
        let max_guilds = shards.saturating_mul(2 * MAX_GUILDS_PER_SHARD);
        Self::with_guild_cap(from, to, window, max_guilds)
    }

    /// As [`Overlap::new`], keeping at most `max_guilds` guilds' streams.
    fn with_guild_cap(from: u32, to: u32, window: Duration, max_guilds: usize) -> Self {
        Self {
            from,
            to,
            window: window.min(MAX_WINDOW),
            switched_at: None,
            ended: false,
            guilds: HashMap::new(),
            max_guilds,
            capped: false,
            uncut: 0,
            expecting: HashSet::new(),
            remembered: VecDeque::new(),
            stopped_old: HashSet::new(),
            initial_guilds: HashSet::new(),
            out: VecDeque::new(),
            stats: OverlapStats::default(),
        }
    }

    /// What it has done so far.
    #[must_use]
    pub fn stats(&self) -> OverlapStats {
        self.stats
    }

    /// Whether [`Overlap::switch`] was called.
    #[must_use]
    pub fn switched(&self) -> bool {
        self.switched_at.is_some()
    }

    /// The next event to hand out.
    pub fn pop(&mut self) -> Option<(u32, ShardEvent)> {
        self.out.pop_front()
    }

    /// Puts an event of the cluster's own (`Resharding`, say) in line.
    pub fn push(&mut self, shard: u32, event: ShardEvent) {
        self.out.push_back((shard, event));
    }

    /// An event of the old generation, from shard `shard` of `from`, at
    /// `now`.
    pub fn old(&mut self, now: Instant, shard: u32, event: ShardEvent) {
        let ShardEvent::Dispatch {
            event_type, json, ..
        } = &event
        else {
            if matches!(event, ShardEvent::Fatal(_) | ShardEvent::IdentifyRefused(_)) {
                self.old_shard_stopped(shard);
            }
            // After the switch the old shards' ids mean nothing to the
            // bot; their comings and goings are in the logs.
            if !self.switched() {
                self.out.push_back((shard, event));
            }
            return;
        };
        if one_sided(event_type) {
            self.out.push_back((shard, event));
            return;
        }
        let (key, fingerprint) = identify(event_type, json);
        let Some(guild) = self.guild(key) else {
            self.stats.untracked += 1;
            if !self.untracked_is_cut(key) {
                self.stats.from_old += 1;
                self.out.push_back((shard, event));
            }
            return;
        };
        let copies = guild.copies;
        let result = guild.old(now, fingerprint);
        self.stats.copies += guild.copies - copies;
        let OldEvent::Out(skipped) = result else {
            return;
        };
        self.remembered.push_back((now, key));
        for held in skipped {
            self.stats.from_new += 1;
            self.out.push_back((held.shard, held.event));
        }
        self.stats.from_old += 1;
        self.out.push_back((shard, event));
        self.settle(key);
    }

    /// An event of the new generation, from shard `shard` (any id the
    /// caller likes: it comes back with the event).
    pub fn new_event(&mut self, shard: u32, event: ShardEvent) {
        match self.route(&event) {
            Route::Merged => {}
            Route::Marked => {
                let event = ShardEvent::FromReshard {
                    total: self.to,
                    event: Box::new(event),
                };
                self.out.push_back((shard, event));
                return;
            }
            Route::Plain => {
                self.out.push_back((shard, event));
                return;
            }
        }
        let ShardEvent::Dispatch {
            event_type, json, ..
        } = &event
        else {
            return;
        };
        let (key, fingerprint) = identify(event_type, json);
        let Some(guild) = self.guild(key) else {
            self.stats.untracked += 1;
            if self.untracked_is_cut(key) {
                self.stats.from_new += 1;
                self.out.push_back((shard, event));
            }
            return;
        };
        let copies = guild.copies;
        let result = guild.new_event(Held {
            fingerprint,
            shard,
            event,
        });
        let copies = guild.copies - copies;
        let expects = guild.expects_copies();
        self.stats.copies += copies;
        if !expects {
            self.expecting.remove(&key);
        }
        if let NewEvent::Out(held) = result {
            self.stats.from_new += 1;
            self.out.push_back((held.shard, held.event));
        }
        self.settle(key);
    }

    /// Moves a guild on after an event: a search that has found its start
    /// syncs, a synced guild is cut once switched, and one that holds too
    /// much is cut anyway.
    fn settle(&mut self, key: u64) {
        let switched = self.switched();
        let Some(guild) = self.guilds.get_mut(&key) else {
            return;
        };
        if guild.phase == Phase::Searching
            && let Some(start) = guild.start(CONFIRM)
        {
            let copies = guild.copies;
            guild.sync(start);
            self.stats.copies += guild.copies - copies;
        }
        if guild.phase == Phase::Synced && switched {
            self.cut(key);
        } else if guild.phase != Phase::Cut && guild.held() > MAX_HELD {
            self.stats.cut_early += 1;
            self.cut(key);
        }
    }

    /// Where a new-generation event goes. Its READY, the GUILD_CREATEs of
    /// the guilds that READY listed (whenever they come), and before the
    /// switch its lifecycle events and any other GUILD_CREATE, are the
    /// reshard's own: they come out marked, not merged. Events only one
    /// session gets come out as they are.
    fn route(&mut self, event: &ShardEvent) -> Route {
        let own = if self.switched() {
            Route::Plain
        } else {
            Route::Marked
        };
        let ShardEvent::Dispatch {
            event_type, json, ..
        } = event
        else {
            return own;
        };
        match &**event_type {
            "READY" => {
                self.initial_guilds.extend(ready_guild_ids(json));
                own
            }
            "GUILD_CREATE" => {
                let key = guild_of(event_type, data(json));
                // Otherwise a guild joined: the old stream has it too while
                // the guild is not cut.
                let cut = self
                    .guilds
                    .get(&key)
                    .is_some_and(|guild| guild.phase == Phase::Cut);
                if self.initial_guilds.remove(&key) || !self.switched() || !cut {
                    Route::Marked
                } else {
                    Route::Plain
                }
            }
            name if one_sided(name) => own,
            _ => Route::Merged,
        }
    }

    /// Every new shard is READY: from now on the new generation delivers.
    pub fn switch(&mut self, now: Instant) {
        self.switched_at = Some(now);
        let synced: Vec<u64> = self
            .guilds
            .iter()
            .filter(|(_, guild)| guild.phase == Phase::Synced)
            .map(|(key, _)| *key)
            .collect();
        for key in synced {
            self.cut(key);
        }
    }

    /// An old shard stopped for good: its guilds' events can only come from
    /// the new generation now.
    pub fn old_shard_stopped(&mut self, shard: u32) {
        if !self.stopped_old.insert(shard) {
            return;
        }
        let orphans: Vec<u64> = self
            .guilds
            .iter()
            .filter(|(key, guild)| {
                guild.phase != Phase::Cut && old_owner(self.from, **key) == shard
            })
            .map(|(key, _)| *key)
            .collect();
        for key in orphans {
            self.stats.cut_early += 1;
            self.cut(key);
        }
    }

    /// When [`Overlap::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let end = self
            .switched_at
            .filter(|_| !self.ended)
            .map(|at| at + self.window);
        let forget = self.remembered.front().map(|(at, _)| *at + self.window);
        end.into_iter().chain(forget).min()
    }

    /// Forgets old events older than the window; once the window has passed
    /// since the switch, cuts every guild.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, key)) = self.remembered.front().copied()
            && at + self.window <= now
        {
            self.remembered.pop_front();
            if let Some(guild) = self.guilds.get_mut(&key) {
                guild.forget_before(at);
                if !guild.expects_copies() {
                    self.expecting.remove(&key);
                }
            }
        }
        if !self.ended && self.switched_at.is_some_and(|at| at + self.window <= now) {
            self.ended = true;
            let waiting: Vec<u64> = self
                .guilds
                .iter()
                .filter(|(_, guild)| guild.phase != Phase::Cut)
                .map(|(key, _)| *key)
                .collect();
            for key in waiting {
                self.stats.cut_by_window += 1;
                self.cut(key);
            }
        }
    }

    /// Whether the old generation can go: the window since the switch has
    /// passed, every guild is cut, and nothing the old stream handed out
    /// waits for its copy.
    pub fn is_done(&self) -> bool {
        self.ended && self.uncut == 0 && self.expecting.is_empty()
    }

    /// Cuts every guild at once (a shutdown): whatever is held comes out.
    pub fn finish(&mut self) {
        let keys: Vec<u64> = self.guilds.keys().copied().collect();
        for key in keys {
            self.cut(key);
        }
    }

    /// The guild's streams; a guild first seen once the window has passed,
    /// or with its old shard stopped, is cut from the first. None for a
    /// guild first seen once the cap's worth of guilds are kept.
    fn guild(&mut self, key: u64) -> Option<&mut GuildStreams> {
        let cut = self.ended || self.stopped_old.contains(&old_owner(self.from, key));
        let full = self.guilds.len() >= self.max_guilds;
        match self.guilds.entry(key) {
            Entry::Occupied(entry) => Some(entry.into_mut()),
            Entry::Vacant(_) if full => {
                if !self.capped {
                    self.capped = true;
                    tracing::warn!(
                        from = self.from,
                        to = self.to,
                        guilds = self.max_guilds,
                        "more distinct guild ids than the shards can hold: the reshard's \
                         merge tracks no more, their events go by ownership alone"
                    );
                }
                None
            }
            Entry::Vacant(entry) => {
                if !cut {
                    self.uncut += 1;
                }
                Some(entry.insert(GuildStreams::new(if cut {
                    Phase::Cut
                } else {
                    Phase::Searching
                })))
            }
        }
    }

    /// Whether an untracked guild's events come from the new generation:
    /// once switched, or once its old shard has stopped.
    fn untracked_is_cut(&self, key: u64) -> bool {
        self.switched() || self.stopped_old.contains(&old_owner(self.from, key))
    }

    /// From now on this guild's events come from the new stream: the held
    /// ones the old stream has not handed out first.
    fn cut(&mut self, key: u64) {
        let Some(guild) = self.guilds.get_mut(&key) else {
            return;
        };
        if guild.phase == Phase::Cut {
            return;
        }
        self.uncut -= 1;
        let copies = guild.copies;
        let held = guild.cut();
        self.stats.copies += guild.copies - copies;
        if guild.expects_copies() {
            self.expecting.insert(key);
        }
        for held in held {
            self.stats.from_new += 1;
            self.out.push_back((held.shard, held.event));
        }
    }
}

/// Events Discord sends to one session only (the answer to its own
/// request, its own session's start): never copies, so never merged.
fn one_sided(event_type: &str) -> bool {
    matches!(
        event_type,
        "READY" | "RESUMED" | "GUILD_MEMBERS_CHUNK" | "VOICE_SERVER_UPDATE" | "RATE_LIMITED"
    )
}

/// The old generation's shard of a guild.
fn old_owner(from: u32, key: u64) -> u32 {
    u32::try_from((key >> 22) % u64::from(from.max(1))).unwrap_or(0)
}

/// Events whose `d.id` names one occurrence: what they create is made once.
/// Not the `*_UPDATE`s (one id, many updates), nor THREAD_CREATE (sent again
/// when the bot is added to the thread).
fn named_by_id(event_type: &str) -> bool {
    matches!(
        event_type,
        "MESSAGE_CREATE"
            | "INTERACTION_CREATE"
            | "GUILD_AUDIT_LOG_ENTRY_CREATE"
            | "CHANNEL_CREATE"
            | "GUILD_SCHEDULED_EVENT_CREATE"
            | "STAGE_INSTANCE_CREATE"
            | "AUTO_MODERATION_RULE_CREATE"
    )
}

/// A dispatch's guild (0 for none: DMs and the like, which Discord sends on
/// shard 0 of each generation) and its fingerprint: its name and, for an
/// event [`named_by_id`] that has one, its `d.id`; else its `d` bytes.
fn identify(event_type: &str, json: &str) -> (u64, u64) {
    let d = data(json);
    let ids = Ids::of(d);
    let mut hasher = DefaultHasher::new();
    event_type.hash(&mut hasher);
    match &ids.id {
        Some(id) if named_by_id(event_type) => (true, id).hash(&mut hasher),
        _ => (false, d).hash(&mut hasher),
    }
    (ids.guild(event_type), hasher.finish())
}

/// A payload's `d` (the whole of what does not scan).
fn data(json: &str) -> &str {
    Payload::scan(json.as_bytes()).map_or(json, |payload| payload.data())
}

/// The guild ids a READY payload lists (none when it lists none readable).
pub(super) fn ready_guild_ids(json: &str) -> Vec<u64> {
    #[derive(Deserialize)]
    struct Ready {
        guilds: Vec<Ids>,
    }
    #[derive(Deserialize)]
    struct Ids {
        id: String,
    }
    serde_json::from_str::<Ready>(data(json)).map_or_else(
        |_| Vec::new(),
        |ready| {
            ready
                .guilds
                .iter()
                .filter_map(|guild| guild.id.parse().ok())
                .collect()
        },
    )
}

/// The guild id in a dispatch's `d` (see [`Ids::guild`]).
fn guild_of(event_type: &str, d: &str) -> u64 {
    Ids::of(d).guild(event_type)
}

/// The ids at the top of a dispatch's `d`, read in one pass that skips the
/// rest (none when it does not read).
#[derive(Default, Deserialize)]
struct Ids {
    id: Option<String>,
    guild_id: Option<String>,
}

impl Ids {
    fn of(d: &str) -> Self {
        serde_json::from_str(d).unwrap_or_default()
    }

    /// The guild: `id` for the guild's own events, `guild_id` for the
    /// others; 0 for none.
    fn guild(&self, event_type: &str) -> u64 {
        let id = if matches!(event_type, "GUILD_CREATE" | "GUILD_UPDATE" | "GUILD_DELETE") {
            &self.id
        } else {
            &self.guild_id
        };
        id.as_deref().and_then(|id| id.parse().ok()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardwire_shard::{FatalError, Json};

    const GUILDS: u64 = 6;
    const WINDOW: Duration = Duration::from_secs(5);

    /// Guild `index`'s id: owned by shard `index % total`.
    fn guild_id(index: u64) -> u64 {
        (1 << 40 | index) << 22
    }

    fn event(seq: u64, guild: u64, n: u64) -> ShardEvent {
        let json = format!(
            r#"{{"t":"MESSAGE_CREATE","s":{seq},"op":0,"d":{{"guild_id":"{}","n":{n}}}}}"#,
            guild_id(guild)
        );
        ShardEvent::Dispatch {
            seq,
            event_type: "MESSAGE_CREATE".into(),
            json: Json::from(json.as_str()),
            event: None,
        }
    }

    /// `(guild index, n)` of a test dispatch.
    fn read(event: &ShardEvent) -> Option<(u64, u64)> {
        let ShardEvent::Dispatch { json, .. } = event else {
            return None;
        };
        let value: serde_json::Value = serde_json::from_str(json).ok()?;
        let guild: u64 = value["d"]["guild_id"].as_str()?.parse().ok()?;
        Some(((guild >> 22) & 0xffff, value["d"]["n"].as_u64()?))
    }

    /// The `n`s of the test dispatches that came out, in order.
    fn numbers(overlap: &mut Overlap) -> Vec<u64> {
        std::iter::from_fn(|| overlap.pop())
            .filter_map(|(_, event)| read(&event).map(|(_, n)| n))
            .collect()
    }

    /// Feeds guild 0's events `ns` of one stream, numbered on.
    #[derive(Default)]
    struct Feed {
        old: u64,
        new: u64,
    }

    impl Feed {
        fn old_stream(&mut self, overlap: &mut Overlap, at: Instant, ns: &[u64]) {
            for n in ns {
                self.old += 1;
                overlap.old(at, 0, event(self.old, 0, *n));
            }
        }

        fn new_stream(&mut self, overlap: &mut Overlap, ns: &[u64]) {
            for n in ns {
                self.new += 1;
                overlap.new_event(0, event(self.new, 0, *n));
            }
        }
    }

    /// One run: event `n` of guild `n % GUILDS` is made at `10n` ms for
    /// `count` events; the old generation gets each `old_delay` later, the
    /// new one (from `new_start`) `new_delay` later; the switch comes at
    /// `switch_at`. Returns what came out, by guild.
    fn run(
        count: u64,
        old_delay: u64,
        new_delay: u64,
        new_start: u64,
        switch_at: u64,
    ) -> (Vec<Vec<u64>>, OverlapStats) {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // (arrival ms, from the new generation, n)
        let mut arrivals: Vec<(u64, bool, u64)> = Vec::new();
        for n in 0..count {
            arrivals.push((10 * n + old_delay, false, n));
            if 10 * n >= new_start {
                arrivals.push((10 * n + new_delay, true, n));
            }
        }
        arrivals.sort_by_key(|(ms, new, _)| (*ms, *new));
        let mut overlap = Overlap::new(2, 4, WINDOW);
        let mut out = vec![Vec::new(); GUILDS as usize];
        let (mut old_seq, mut new_seq) = (0, 0);
        let mut take = |overlap: &mut Overlap| {
            while let Some((_, event)) = overlap.pop() {
                if let Some((guild, n)) = read(&event) {
                    out[guild as usize].push(n);
                }
            }
        };
        for (ms, new, n) in arrivals {
            let now = at(ms);
            if !overlap.switched() && ms >= switch_at {
                overlap.switch(at(switch_at));
            }
            overlap.handle_timeout(now);
            let guild = n % GUILDS;
            if new {
                new_seq += 1;
                overlap.new_event((guild % 4) as u32, event(new_seq, guild, n));
            } else if !overlap.is_done() {
                // Once done, the old generation is closed.
                old_seq += 1;
                overlap.old(now, (guild % 2) as u32, event(old_seq, guild, n));
            }
            take(&mut overlap);
        }
        if !overlap.switched() {
            overlap.switch(at(switch_at));
        }
        overlap.handle_timeout(at(switch_at) + WINDOW);
        take(&mut overlap);
        assert!(overlap.is_done(), "the overlap ends after its window");
        (out, overlap.stats())
    }

    fn assert_exactly_once(out: &[Vec<u64>], count: u64) {
        for (guild, got) in out.iter().enumerate() {
            let wanted: Vec<u64> = (0..count).filter(|n| n % GUILDS == guild as u64).collect();
            assert_eq!(got, &wanted, "guild {guild}");
        }
    }

    #[test]
    fn each_event_comes_out_once_in_order_whichever_generation_lags() {
        // (old delay, new delay) in ms: in step, new behind, old behind.
        for (old_delay, new_delay) in [(0, 0), (0, 200), (200, 0), (0, 2_000), (2_000, 0), (35, 5)]
        {
            for (new_start, switch_at) in [(1_000, 3_000), (2_990, 3_000), (500, 9_000)] {
                let (out, stats) = run(1_000, old_delay, new_delay, new_start, switch_at);
                assert_exactly_once(&out, 1_000);
                assert!(
                    stats.copies > 0,
                    "{old_delay}/{new_delay}: copies were dropped"
                );
                assert_eq!(
                    stats.from_old + stats.from_new,
                    1_000,
                    "{old_delay}/{new_delay}/{new_start}/{switch_at}"
                );
            }
        }
    }

    #[test]
    fn after_the_switch_the_new_generation_delivers() {
        let (out, stats) = run(1_000, 0, 0, 1_000, 3_000);
        assert_exactly_once(&out, 1_000);
        // Events from 3 s on (300 of them) are the new generation's.
        assert!(stats.from_new >= 690, "{stats:?}");
        assert_eq!(stats.cut_by_window, 0, "every guild synced: {stats:?}");
    }

    #[test]
    fn a_skew_past_the_window_doubles_what_the_window_cannot_see() {
        // The promise holds within the window only: 7 s of skew is past it.
        let (out, _) = run(1_500, 0, 7_000, 1_000, 3_000);
        let total: usize = out.iter().map(Vec::len).sum();
        assert!(total > 1_500, "copies came out twice: {total}");
    }

    #[test]
    fn identical_events_of_one_guild_count_as_two_where_they_line_up() {
        let start = Instant::now();
        let mut overlap = Overlap::new(1, 2, WINDOW);
        // The old stream has A B A; the new one starts at the second A.
        let mut feed = Feed::default();
        feed.old_stream(&mut overlap, start, &[7, 8, 7]);
        overlap.switch(start);
        feed.new_stream(&mut overlap, &[7, 9, 7]);
        // One event lines up, too few to be sure: the window decides.
        overlap.handle_timeout(start + WINDOW);
        let got = numbers(&mut overlap);
        assert_eq!(got, [7, 8, 7, 9, 7]);
    }

    #[test]
    fn an_early_event_like_the_new_streams_first_is_not_taken_for_its_start() {
        // The guild's events are 1 2 3 2 4 5 6; the new stream starts at
        // the second 2, and the old one lags behind it.
        let start = Instant::now();
        let mut overlap = Overlap::new(1, 2, WINDOW);
        let mut feed = Feed::default();
        feed.old_stream(&mut overlap, start, &[1, 2]);
        feed.new_stream(&mut overlap, &[2, 4, 5, 6]);
        // Only now does the old stream show the first 2 was not the start.
        feed.old_stream(&mut overlap, start, &[3]);
        overlap.switch(start);
        feed.old_stream(&mut overlap, start, &[2, 4, 5, 6]);
        let got = numbers(&mut overlap);
        assert_eq!(got, [1, 2, 3, 2, 4, 5, 6]);
    }

    #[test]
    fn a_quiet_guild_cut_by_the_window_still_drops_the_late_copy() {
        // The new stream is 2 s behind; the guild's only event comes just
        // before the window ends, and its copy after.
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut overlap = Overlap::new(1, 2, WINDOW);
        overlap.switch(start);
        overlap.old(at(4_500), 0, event(1, 0, 1));
        overlap.handle_timeout(at(5_000));
        assert!(!overlap.is_done(), "its copy is still to come");
        overlap.new_event(0, event(1, 0, 1));
        overlap.handle_timeout(at(6_500));
        assert!(overlap.is_done());
        let got = numbers(&mut overlap);
        assert_eq!(got, [1]);
    }

    #[test]
    fn a_match_far_into_the_held_events_counts_as_one_event_lined_up() {
        // The guild's events are 1 2 3 7 8 3 9; the new stream starts at 7
        // and the old one is behind. The old stream's first 3 equals the
        // third held event, but only that one event lines up there.
        let start = Instant::now();
        let mut overlap = Overlap::new(1, 2, WINDOW);
        let mut feed = Feed::default();
        feed.old_stream(&mut overlap, start, &[1, 2]);
        feed.new_stream(&mut overlap, &[7, 8, 3]);
        feed.old_stream(&mut overlap, start, &[3]);
        overlap.switch(start);
        feed.old_stream(&mut overlap, start, &[7, 8, 3]);
        feed.new_stream(&mut overlap, &[9]);
        let got = numbers(&mut overlap);
        assert_eq!(got, [1, 2, 3, 7, 8, 3, 9]);
    }

    #[test]
    fn an_event_the_old_stream_skipped_comes_out_from_the_new_one() {
        let start = Instant::now();
        let mut overlap = Overlap::new(1, 2, WINDOW);
        let mut feed = Feed::default();
        feed.old_stream(&mut overlap, start, &[1, 2, 3, 4]);
        // In step from 2 on; then the new stream has 50, which the old one
        // never delivers (it lost it).
        feed.new_stream(&mut overlap, &[2, 3, 4, 5, 50, 6]);
        feed.old_stream(&mut overlap, start, &[5, 6]);
        let got = numbers(&mut overlap);
        assert_eq!(got, [1, 2, 3, 4, 5, 50, 6]);
    }

    #[test]
    fn a_guild_first_seen_after_the_window_comes_from_the_new_generation() {
        let start = Instant::now();
        let mut overlap = Overlap::new(1, 2, WINDOW);
        overlap.switch(start);
        overlap.handle_timeout(start + WINDOW);
        assert!(overlap.is_done());
        overlap.new_event(1, event(1, 3, 9));
        assert_eq!(overlap.pop().and_then(|(_, e)| read(&e)), Some((3, 9)));
        assert!(overlap.is_done(), "nothing waits");
    }

    #[test]
    fn an_event_only_one_session_gets_neither_breaks_the_match_nor_is_dropped() {
        let start = Instant::now();
        let mut overlap = Overlap::new(1, 2, WINDOW);
        let chunk = |seq| ShardEvent::Dispatch {
            seq,
            event_type: "GUILD_MEMBERS_CHUNK".into(),
            json: Json::from(
                format!(
                    r#"{{"t":"GUILD_MEMBERS_CHUNK","s":{seq},"op":0,"d":{{"guild_id":"{}"}}}}"#,
                    guild_id(0)
                )
                .as_str(),
            ),
            event: None,
        };
        overlap.old(start, 0, event(1, 0, 1));
        overlap.old(start, 0, event(2, 0, 2));
        // The answer to a member request the bot sent on the old shard.
        overlap.old(start, 0, chunk(3));
        for (seq, n) in [(4, 3), (5, 4), (6, 5)] {
            overlap.old(start, 0, event(seq, 0, n));
        }
        for (seq, n) in [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6)] {
            overlap.new_event(0, event(seq, 0, n));
        }
        overlap.switch(start);
        let got: Vec<Option<u64>> = std::iter::from_fn(|| overlap.pop())
            .map(|(_, event)| read(&event).map(|(_, n)| n))
            .collect();
        assert_eq!(
            got,
            [Some(1), Some(2), None, Some(3), Some(4), Some(5), Some(6)]
        );
    }

    #[test]
    fn a_stopped_old_shard_hands_its_guilds_to_the_new_generation_at_once() {
        let start = Instant::now();
        let mut overlap = Overlap::new(2, 4, WINDOW);
        overlap.old(start, 0, event(1, 0, 1));
        overlap.old(start, 0, ShardEvent::Fatal(FatalError::ShardingRequired));
        // Before the switch, guild 0's (old shard 0's) new events come out.
        overlap.new_event(0, event(1, 0, 2));
        overlap.new_event(1, event(1, 1, 3));
        let got: Vec<Option<(u64, u64)>> = std::iter::from_fn(|| overlap.pop())
            .map(|(_, event)| read(&event))
            .collect();
        assert_eq!(got, [Some((0, 1)), None, Some((0, 2))], "guild 1 waits");
    }

    #[test]
    fn a_quiet_guild_is_cut_by_the_window_and_the_new_generation_events_are_marked() {
        let start = Instant::now();
        let mut overlap = Overlap::new(1, 2, WINDOW);
        let ready = ShardEvent::Dispatch {
            seq: 1,
            event_type: "READY".into(),
            json: Json::from(r#"{"t":"READY","s":1,"op":0,"d":{}}"#),
            event: None,
        };
        overlap.new_event(1, ready);
        assert!(matches!(
            overlap.pop(),
            Some((1, ShardEvent::FromReshard { total: 2, .. }))
        ));
        overlap.switch(start);
        // A first event of a guild the old stream never had: held, since
        // the old stream may be behind, until the window ends.
        overlap.new_event(1, event(2, 1, 5));
        assert!(overlap.pop().is_none());
        assert_eq!(overlap.poll_timeout(), Some(start + WINDOW));
        overlap.handle_timeout(start + WINDOW);
        assert_eq!(overlap.pop().and_then(|(_, e)| read(&e)), Some((1, 5)));
        assert!(overlap.is_done());
        assert_eq!(overlap.poll_timeout(), None, "nothing left to wake for");
    }

    /// A dispatch of guild 0 with this `d`.
    fn dispatch(seq: u64, event_type: &'static str, d: &str) -> ShardEvent {
        let json = format!(r#"{{"t":"{event_type}","s":{seq},"op":0,"d":{d}}}"#);
        ShardEvent::Dispatch {
            seq,
            event_type: event_type.into(),
            json: Json::from(json.as_str()),
            event: None,
        }
    }

    /// The `d`s that came out, in order.
    fn ds(overlap: &mut Overlap) -> Vec<String> {
        std::iter::from_fn(|| overlap.pop())
            .filter_map(|(_, event)| match event {
                ShardEvent::Dispatch { json, .. } => Some(data(&json).to_owned()),
                _ => None,
            })
            .collect()
    }

    /// Guild 0's streams lined up on three events: 1 2 3 on both.
    fn lined_up() -> (Overlap, Feed, Instant) {
        let start = Instant::now();
        let mut overlap = Overlap::new(1, 2, WINDOW);
        let mut feed = Feed::default();
        feed.old_stream(&mut overlap, start, &[1, 2, 3]);
        feed.new_stream(&mut overlap, &[1, 2, 3]);
        let _ = numbers(&mut overlap);
        (overlap, feed, start)
    }

    #[test]
    fn copies_of_a_create_serialized_apart_match_by_their_id() {
        let (mut overlap, _, start) = lined_up();
        let guild = guild_id(0);
        let old = format!(r#"{{"id":"41","guild_id":"{guild}","content":"hi","nonce":"1"}}"#);
        let new = format!(r#"{{"nonce":"2","content":"hi","guild_id":"{guild}","id":"41"}}"#);
        overlap.old(start, 0, dispatch(4, "MESSAGE_CREATE", &old));
        overlap.switch(start);
        overlap.new_event(0, dispatch(4, "MESSAGE_CREATE", &new));
        overlap.handle_timeout(start + WINDOW);
        assert_eq!(ds(&mut overlap), [old], "once");
        assert!(overlap.is_done());
    }

    #[test]
    fn updates_with_one_id_and_other_bytes_are_distinct_events() {
        let (mut overlap, _, start) = lined_up();
        let guild = guild_id(0);
        let first = format!(r#"{{"id":"41","guild_id":"{guild}","content":"hi"}}"#);
        let second = format!(r#"{{"id":"41","guild_id":"{guild}","content":"hello"}}"#);
        overlap.old(start, 0, dispatch(4, "MESSAGE_UPDATE", &first));
        overlap.switch(start);
        overlap.new_event(0, dispatch(4, "MESSAGE_UPDATE", &second));
        overlap.handle_timeout(start + WINDOW);
        assert_eq!(ds(&mut overlap), [first, second]);
    }

    #[test]
    fn a_flood_of_distinct_guilds_stops_at_the_cap() {
        let start = Instant::now();
        let mut overlap = Overlap::with_guild_cap(1, 2, WINDOW, 4);
        // 1,000 distinct guilds, each with an event on both streams.
        for guild in 0..1_000 {
            overlap.old(start, 0, event(1, guild, guild));
            overlap.new_event(0, event(1, guild, guild));
        }
        assert_eq!(overlap.guilds.len(), 4, "no more guilds kept than the cap");
        assert_eq!(overlap.stats().untracked, 2 * 996);
        // Before the switch the old generation's events of the untracked
        // guilds come out, the new one's are dropped.
        let before = numbers(&mut overlap);
        assert_eq!(before, (0..1_000).collect::<Vec<_>>());
        // After it, the other way round.
        overlap.switch(start);
        let _ = numbers(&mut overlap);
        overlap.old(start, 0, event(2, 500, 7));
        overlap.new_event(0, event(2, 500, 8));
        assert_eq!(numbers(&mut overlap), [8]);
        assert_eq!(overlap.guilds.len(), 4);
        let stats = overlap.stats();
        assert_eq!(stats.untracked, 2 * 996 + 2);
        assert_eq!(stats.from_old + stats.from_new, 1_001, "{stats:?}");
    }

    #[test]
    fn the_cap_on_guilds_follows_the_larger_shard_count() {
        assert_eq!(Overlap::new(4, 8, WINDOW).max_guilds, 2 * 2_500 * 8);
        assert_eq!(Overlap::new(16, 8, WINDOW).max_guilds, 2 * 2_500 * 16);
    }

    #[test]
    fn hostile_dispatches_neither_panic_nor_go_missing() {
        let start = Instant::now();
        let mut overlap = Overlap::new(3, 7, WINDOW);
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        for (seq, json) in [
            (1, "not json".to_owned()),
            (2, format!(r#"{{"t":"X","s":2,"op":0,"d":{deep}}}"#)),
            (
                3,
                r#"{"t":"X","s":3,"op":0,"d":{"guild_id":"99999999999999999999999"}}"#.to_owned(),
            ),
        ] {
            let dispatch = ShardEvent::Dispatch {
                seq,
                event_type: "X".into(),
                json: Json::from(json.as_str()),
                event: None,
            };
            overlap.old(start, 0, dispatch);
        }
        assert_eq!(std::iter::from_fn(|| overlap.pop()).count(), 3);
    }
}

//! Collects the GUILD_MEMBERS_CHUNK answers to one Request Guild Members,
//! matched by nonce, on the shards' own tasks (no extra hop per event).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use shardwire_codec::Payload;
use shardwire_shard::ShardEvent;
use tokio::sync::oneshot;
use twilight_model::gateway::event::Event;
use twilight_model::gateway::payload::incoming::MemberChunk;
use twilight_model::gateway::presence::Presence;
use twilight_model::guild::Member;
use twilight_model::id::Id;
use twilight_model::id::marker::{GuildMarker, UserMarker};

/// The members a Request Guild Members returned, all chunks together.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GuildMembers {
    /// The guild.
    pub guild_id: Id<GuildMarker>,
    /// The members, in the order the chunks carried them.
    pub members: Vec<Member>,
    /// Requested user ids that are not members.
    pub not_found: Vec<Id<UserMarker>>,
    /// Their presences, if asked for.
    pub presences: Vec<Presence>,
    /// How many chunks the answer came in.
    pub chunks: u32,
}

struct Collecting {
    members: Option<GuildMembers>,
    reply: oneshot::Sender<GuildMembers>,
}

/// The requests waiting for chunks.
#[derive(Default)]
pub(crate) struct Chunks {
    /// Requests waiting: while zero, events pass without a look.
    active: AtomicUsize,
    next: AtomicU64,
    pending: Mutex<HashMap<String, Collecting>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Chunks {
    /// A nonce no other request of this process uses (at most 32 bytes).
    pub(crate) fn next_nonce(&self) -> String {
        format!("shardwire-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn register(&self, nonce: String) -> oneshot::Receiver<GuildMembers> {
        let (reply, answer) = oneshot::channel();
        let previous = lock(&self.pending).insert(
            nonce,
            Collecting {
                members: None,
                reply,
            },
        );
        if previous.is_none() {
            self.active.fetch_add(1, Ordering::AcqRel);
        }
        answer
    }

    pub(crate) fn cancel(&self, nonce: &str) {
        if lock(&self.pending).remove(nonce).is_some() {
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Takes the event if it is a chunk of a waiting request; else gives
    /// it back.
    pub(crate) fn tap(&self, event: ShardEvent) -> Option<ShardEvent> {
        if self.active.load(Ordering::Acquire) == 0 {
            return Some(event);
        }
        let ShardEvent::Dispatch {
            event_type,
            json,
            event: typed,
            ..
        } = &event
        else {
            return Some(event);
        };
        if event_type != "GUILD_MEMBERS_CHUNK" {
            return Some(event);
        }
        let chunk = match typed.as_deref() {
            Some(Event::MemberChunk(chunk)) => Some(chunk.clone()),
            _ => Payload::scan(json.as_bytes())
                .ok()
                .and_then(|payload| serde_json::from_str::<MemberChunk>(payload.data()).ok()),
        };
        let Some(chunk) = chunk else {
            return Some(event);
        };
        if self.take(chunk) { None } else { Some(event) }
    }

    fn take(&self, chunk: MemberChunk) -> bool {
        let Some(nonce) = chunk.nonce.clone() else {
            return false;
        };
        let mut pending = lock(&self.pending);
        let Some(collecting) = pending.get_mut(&nonce) else {
            return false;
        };
        let members = collecting.members.get_or_insert_with(|| GuildMembers {
            guild_id: chunk.guild_id,
            members: Vec::new(),
            not_found: Vec::new(),
            presences: Vec::new(),
            chunks: 0,
        });
        members.members.extend(chunk.members);
        members.not_found.extend(chunk.not_found);
        members.presences.extend(chunk.presences);
        members.chunks += 1;
        if members.chunks >= chunk.chunk_count
            && let Some(done) = pending.remove(&nonce)
        {
            self.active.fetch_sub(1, Ordering::AcqRel);
            if let Some(members) = done.members {
                let _ = done.reply.send(members);
            }
        }
        true
    }
}

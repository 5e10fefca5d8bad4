//! Resharding: a second generation of shards started beside the running
//! one, the switch once every new shard is READY (the merge around it is
//! [`Overlap`]), and what starts one by itself.
//!
//! [`Overlap`] is public for runners of shards of their own (shardwire-nats'
//! nodes reshard with it): a [`Cluster`](crate::Cluster) uses it for you.

mod guild;
mod overlap;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shardwire_shard::{EventSink, FatalError, ShardEvent, ShardState, SinkEvents};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

pub use self::overlap::{Overlap, OverlapStats};
use crate::sender::{Generation, Shared};
use crate::{ClusterError, GatewayInfo};

/// The guilds per shard Discord's recommendation aims at.
const GUILDS_PER_SHARD_AIMED: u64 = 1_000;

/// What the cluster's consumer is asked to do.
pub(crate) enum Order {
    /// Start a generation of this many shards (the checks are done).
    Start(u32),
    /// Something suggests more shards: check, and reshard if so.
    Auto(Trigger),
    /// Give up the reshard under way if it has not switched; whether it
    /// was.
    Cancel(oneshot::Sender<bool>),
}

/// Why a reshard starts by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// A shard of the running generation (of this total) was closed
    /// with 4011.
    ShardingRequired {
        /// The generation's total.
        total: u32,
    },
    /// A shard's READY listed this many guilds, over the threshold.
    Crowded {
        /// The generation's total.
        total: u32,
        /// The guilds.
        guilds: u64,
    },
    /// The periodic `/gateway/bot` check.
    Recommended,
}

/// How a cluster and its senders ask for a reshard.
pub(crate) struct ReshardControl {
    orders: mpsc::UnboundedSender<Order>,
    /// A reshard is asked for or under way.
    busy: AtomicBool,
    /// The cluster runs every shard of its total (a slice of a bot spread
    /// over processes cannot reshard alone).
    whole: bool,
}

impl ReshardControl {
    pub(crate) fn new(whole: bool) -> (Self, mpsc::UnboundedReceiver<Order>) {
        let (orders, received) = mpsc::unbounded_channel();
        let control = Self {
            orders,
            busy: AtomicBool::new(false),
            whole,
        };
        (control, received)
    }

    pub(crate) fn order(&self, order: Order) {
        let _ = self.orders.send(order);
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// The reshard has ended (switched, failed or cancelled).
    pub(crate) fn release(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// Checks a reshard to `to` shards against fresh gateway information and
/// asks the cluster to start it.
pub(crate) async fn ask(shared: &Shared, to: u32) -> Result<(), ClusterError> {
    ask_with(shared, to, true).await
}

/// As [`ask`]; `refresh` is false when the gateway information was just
/// fetched.
async fn ask_with(shared: &Shared, to: u32, refresh: bool) -> Result<(), ClusterError> {
    let control = &shared.control;
    let from = shared.read().total;
    if !control.whole {
        return Err(ClusterError::InvalidShards(
            "a cluster running some of the bot's shards cannot reshard alone; reshard the whole bot"
                .into(),
        ));
    }
    if to == 0 || to == from {
        return Err(ClusterError::InvalidShards(format!(
            "cannot reshard from {from} to {to} shards"
        )));
    }
    if control.orders.is_closed() {
        return Err(ClusterError::Stopped);
    }
    if control.busy.swap(true, Ordering::AcqRel) {
        return Err(ClusterError::ReshardUnderWay);
    }
    let checked = async {
        if refresh {
            shared.gateway.refresh().await?;
        }
        shared.gateway.check_starts(to)?;
        Ok::<_, ClusterError>(())
    }
    .await;
    if let Err(error) = checked {
        control.release();
        return Err(error);
    }
    if control.orders.send(Order::Start(to)).is_err() {
        control.release();
        return Err(ClusterError::Stopped);
    }
    Ok(())
}

/// Reshards if fresh gateway information, read in the light of `trigger`,
/// asks for more shards than run now.
pub(crate) async fn auto(shared: Arc<Shared>, trigger: Trigger) {
    let from = shared.read().total;
    let stale = match trigger {
        Trigger::ShardingRequired { total } | Trigger::Crowded { total, .. } => total != from,
        Trigger::Recommended => false,
    };
    if stale || shared.control.is_busy() {
        return;
    }
    let info = match shared.gateway.refresh().await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, ?trigger, "no automatic reshard: /gateway/bot failed");
            return;
        }
    };
    // A reshard may have ended while the answer came.
    if shared.read().total != from {
        return;
    }
    let Some(to) = auto_target(from, &info, trigger) else {
        return;
    };
    tracing::info!(?trigger, from, to, "resharding automatically");
    match ask_with(&shared, to, false).await {
        Ok(()) | Err(ClusterError::ReshardUnderWay) => {}
        Err(error) => tracing::warn!(%error, from, to, "the automatic reshard did not start"),
    }
}

/// Checks `/gateway/bot` every `interval` while the cluster lives.
pub(crate) async fn keep_checking(shared: std::sync::Weak<Shared>, interval: Duration) {
    // A day at most, and never a busy loop.
    let interval = interval.clamp(Duration::from_secs(1), Duration::from_secs(86_400));
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        auto(shared, Trigger::Recommended).await;
    }
}

/// The shard count an automatic reshard from `from` goes to, if any: the
/// recommended count, or for a 4011 or a crowded READY at least one more
/// than now (for a crowded one, enough for Discord's 1,000 guilds a shard
/// on every shard); a multiple of `max_concurrency` when that is over 1,
/// as Discord asks of large bots.
pub(crate) fn auto_target(from: u32, info: &GatewayInfo, trigger: Trigger) -> Option<u32> {
    let recommended = info.shards;
    let wanted = match trigger {
        Trigger::Recommended => recommended,
        Trigger::ShardingRequired { .. } => recommended.max(from.saturating_add(1)),
        Trigger::Crowded { guilds, .. } => {
            let needed = (u64::from(from) * guilds).div_ceil(GUILDS_PER_SHARD_AIMED);
            recommended
                .max(u32::try_from(needed).unwrap_or(u32::MAX))
                .max(from.saturating_add(1))
        }
    };
    let step = info.session_start_limit.max_concurrency.max(1);
    let wanted = wanted.div_ceil(step).saturating_mul(step);
    (wanted > from).then_some(wanted)
}

/// What a reshard's deadline adds to its identify schedule.
const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// How long a reshard to `to` shards may take to switch when
/// [`ClusterConfig::reshard_deadline`](crate::ClusterConfig::reshard_deadline)
/// does not say: twice its identify rounds (`to / max_concurrency`, rounded
/// up, one `identify_window` each), plus a minute.
pub(crate) fn default_deadline(
    to: u32,
    max_concurrency: u32,
    identify_window: Duration,
) -> Duration {
    let rounds = to.div_ceil(max_concurrency.max(1));
    identify_window
        .saturating_mul(rounds.saturating_mul(2))
        .saturating_add(DEADLINE_MARGIN)
}

/// A deadline this long is none (a longer one is taken as this).
const NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Shard ids for a log line: the first few, and how many in all.
fn list_ids(ids: &[u32]) -> String {
    const SHOWN: usize = 8;
    let shown: Vec<String> = ids.iter().take(SHOWN).map(u32::to_string).collect();
    let shown = shown.join(", ");
    if ids.len() > SHOWN {
        format!("{shown}, … ({} in all)", ids.len())
    } else {
        shown
    }
}

/// The longest a generation a reshard no longer needs has to close.
const RETIRE_GRACE: Duration = Duration::from_secs(5);

/// The close that ends a session (Discord forgets it).
const SESSION_ENDING_CLOSE: u16 = 1000;

/// Ends a generation's sessions: each shard closes with 1000, and the
/// handles and their stream are kept (its events dropped) until every
/// shard has reported its connection ended, at most `grace` (and
/// [`RETIRE_GRACE`]), so that the close frames go out.
pub(crate) fn retire(
    generation: Generation,
    mut events: SinkEvents,
    grace: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut open: BTreeSet<u32> = BTreeSet::new();
    for (id, shard) in &generation.shards {
        shard.disconnect(SESSION_ENDING_CLOSE);
        if !matches!(
            shard.status(),
            ShardState::Disconnected | ShardState::FatallyClosed
        ) {
            open.insert(*id);
        }
    }
    tokio::spawn(async move {
        let deadline = Instant::now() + grace.min(RETIRE_GRACE);
        while !open.is_empty() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some((id, ShardEvent::Disconnected { .. } | ShardEvent::Fatal(_)))) => {
                    open.remove(&id);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        drop(generation);
    })
}

/// What a new-generation event means for the reshard.
pub(crate) enum Step {
    /// Nothing more.
    Go,
    /// Every new shard is READY.
    Switch,
    /// A new shard cannot start: the reshard fails.
    Fail(String),
}

/// A reshard under way, held by its cluster.
pub(crate) struct Reshard {
    pub(crate) from: u32,
    pub(crate) to: u32,
    pub(crate) started: Instant,
    /// The new generation until the switch, the old one after it.
    pub(crate) other: Generation,
    /// Its events.
    pub(crate) other_events: SinkEvents,
    /// Its sink.
    pub(crate) other_sink: EventSink,
    /// The new shards that have been READY.
    ready: BTreeSet<u32>,
    /// When it is given up if it has not switched.
    deadline: Instant,
    pub(crate) overlap: Overlap,
    /// Wakes the consumer for the overlap's next deadline, or the
    /// reshard's own.
    pub(crate) timer: Pin<Box<Sleep>>,
}

impl Reshard {
    pub(crate) fn new(
        from: u32,
        next: Generation,
        events: SinkEvents,
        sink: EventSink,
        window: Duration,
        deadline: Duration,
    ) -> Self {
        let to = next.total;
        let mut overlap = Overlap::new(from, to, window);
        overlap.push(0, ShardEvent::Resharding { from, to });
        let started = Instant::now();
        Self {
            from,
            to,
            started,
            deadline: started + deadline.min(NEVER),
            other: next,
            other_events: events,
            other_sink: sink,
            ready: BTreeSet::new(),
            overlap,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        }
    }

    /// Why it must be given up at `now`: its deadline passed before the
    /// switch.
    pub(crate) fn overdue(&self, now: Instant) -> Option<String> {
        if self.overlap.switched() || now < self.deadline {
            return None;
        }
        let waiting: Vec<u32> = (0..self.to).filter(|id| !self.ready.contains(id)).collect();
        Some(format!(
            "not switched within its deadline of {:?}: new shards {} of {} not READY",
            self.deadline.saturating_duration_since(self.started),
            list_ids(&waiting),
            self.to
        ))
    }

    /// When the consumer must look again: the overlap's next deadline, or
    /// before the switch the reshard's own.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let deadline = (!self.overlap.switched()).then_some(self.deadline);
        self.overlap
            .poll_timeout()
            .into_iter()
            .chain(deadline)
            .min()
    }

    /// An event of the new generation.
    pub(crate) fn on_new(&mut self, shard: u32, event: ShardEvent) -> Step {
        let step = if self.overlap.switched() {
            Step::Go
        } else {
            match &event {
                ShardEvent::Ready { .. } => {
                    self.ready.insert(shard);
                    if self.ready.len() == self.to as usize {
                        Step::Switch
                    } else {
                        Step::Go
                    }
                }
                ShardEvent::Fatal(error) => Step::Fail(format!("new shard {shard}: {error}")),
                ShardEvent::IdentifyRefused(refused) => {
                    Step::Fail(format!("new shard {shard}: {refused}"))
                }
                _ => Step::Go,
            }
        };
        self.overlap.new_event(shard, event);
        step
    }
}

/// Whether a shard's event starts an automatic reshard, and why.
pub(crate) fn trigger_of(total: u32, threshold: u32, event: &ShardEvent) -> Option<Trigger> {
    match event {
        ShardEvent::Fatal(FatalError::ShardingRequired) => {
            Some(Trigger::ShardingRequired { total })
        }
        ShardEvent::Dispatch {
            event_type, json, ..
        } if event_type == "READY" => {
            let guilds = overlap::ready_guild_ids(json).len() as u64;
            (guilds > u64::from(threshold)).then_some(Trigger::Crowded { total, guilds })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionStartLimit;
    use shardwire_shard::Json;

    fn info(shards: u32, max_concurrency: u32) -> GatewayInfo {
        GatewayInfo {
            url: "wss://gateway.example".into(),
            shards,
            session_start_limit: SessionStartLimit::new(
                1000,
                1000,
                Duration::ZERO,
                max_concurrency,
            ),
        }
    }

    #[test]
    fn an_automatic_reshard_goes_to_the_recommendation_in_steps_of_max_concurrency() {
        let recommended = Trigger::Recommended;
        assert_eq!(auto_target(4, &info(8, 1), recommended), Some(8));
        assert_eq!(auto_target(4, &info(4, 1), recommended), None, "not more");
        assert_eq!(
            auto_target(4, &info(2, 1), recommended),
            None,
            "never fewer"
        );
        assert_eq!(auto_target(16, &info(20, 16), recommended), Some(32));
        let closed = Trigger::ShardingRequired { total: 4 };
        // Discord closed with 4011 but still recommends 4: one more at least.
        assert_eq!(auto_target(4, &info(4, 1), closed), Some(5));
        assert_eq!(auto_target(4, &info(8, 1), closed), Some(8));
        assert_eq!(auto_target(16, &info(16, 16), closed), Some(32));
        // 2,100 guilds on one of 4 shards: 9 shards of 1,000 or fewer.
        let crowded = Trigger::Crowded {
            total: 4,
            guilds: 2_100,
        };
        assert_eq!(auto_target(4, &info(4, 1), crowded), Some(9));
        assert_eq!(auto_target(4, &info(4, 4), crowded), Some(12));
        assert_eq!(auto_target(4, &info(16, 1), crowded), Some(16));
    }

    #[test]
    fn the_default_deadline_is_twice_the_identify_rounds_and_a_minute() {
        let window = Duration::from_secs(5);
        // 8 shards at max_concurrency 2: 4 rounds.
        assert_eq!(default_deadline(8, 2, window), Duration::from_secs(100));
        // 1,000 at 16: 63 rounds.
        assert_eq!(
            default_deadline(1_000, 16, window),
            Duration::from_secs(690)
        );
        assert_eq!(default_deadline(3, 0, window), Duration::from_secs(90));
        assert_eq!(
            default_deadline(u32::MAX, 1, Duration::MAX),
            Duration::MAX,
            "saturates"
        );
    }

    #[test]
    fn a_list_of_shard_ids_stays_one_short_line() {
        assert_eq!(list_ids(&[7]), "7");
        let many: Vec<u32> = (0..100).collect();
        assert_eq!(list_ids(&many), "0, 1, 2, 3, 4, 5, 6, 7, … (100 in all)");
    }

    #[test]
    fn a_4011_or_a_crowded_ready_triggers_and_other_events_do_not() {
        let ready = |guilds: usize| ShardEvent::Dispatch {
            seq: 1,
            event_type: "READY".into(),
            json: Json::from(
                format!(
                    r#"{{"t":"READY","s":1,"op":0,"d":{{"session_id":"x","guilds":[{}]}}}}"#,
                    vec![r#"{"id":"1","unavailable":true}"#; guilds].join(",")
                )
                .as_str(),
            ),
            event: None,
        };
        assert_eq!(
            trigger_of(4, 2, &ShardEvent::Fatal(FatalError::ShardingRequired)),
            Some(Trigger::ShardingRequired { total: 4 })
        );
        assert_eq!(
            trigger_of(4, 2, &ready(3)),
            Some(Trigger::Crowded {
                total: 4,
                guilds: 3
            })
        );
        assert_eq!(trigger_of(4, 3, &ready(3)), None);
        assert_eq!(trigger_of(4, 0, &ShardEvent::Resumed), None);
        assert_eq!(
            trigger_of(4, 0, &ShardEvent::Fatal(FatalError::InvalidShard)),
            None
        );
        let broken = ShardEvent::Dispatch {
            seq: 1,
            event_type: "READY".into(),
            json: Json::from(r#"{"t":"READY","s":1,"op":0,"d":{"guilds":7}}"#),
            event: None,
        };
        assert_eq!(trigger_of(4, 0, &broken), None);
    }
}

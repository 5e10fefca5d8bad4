//! Who claims and who hands over: a pure decision over one snapshot of the
//! leases and the live nodes, made by each node on each tick.
//!
//! With `R` ranges and `N` live nodes, the shares are `⌊R/N⌋` and
//! `⌈R/N⌉`: the cluster is balanced when no node with room holds two
//! ranges fewer than another. The rules:
//! - **Claim.** An unheld range is claimed by a node under `⌊R/N⌋`, or by
//!   the neediest node (fewest ranges, then the one that joined last, then
//!   the name) while it is under `⌈R/N⌉`. A range left unheld for more
//!   than a few ticks, while no node with room is under `⌊R/N⌋`, goes to
//!   any node with room, so capacities that do not add up still leave
//!   nothing unheld (and nodes that collide on their claims do not
//!   overshoot their share).
//! - **Hand over.** While no range is unheld, the busiest node (most
//!   ranges, then the name) hands one range over when a node with room
//!   holds two fewer than it does. It only gives a range whose shards all
//!   have a stored session, so the next owner resumes.
//!
//! No flapping: a handover moves a range from the busiest node to one at
//! least two below it (the claim rules leave it to the neediest), so the
//! spread of the counts shrinks with every move and a balanced cluster
//! moves nothing; and a node never claims back a range it handed over
//! recently. One handover at a time across the cluster: a join moves
//! exactly the ranges it needs, and takes about one handover and one tick
//! per range the joiner gets.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::LiveNode;

/// How many ticks an unheld range waits for a node under its share
/// before any node with room takes it.
pub(super) const ORPHAN_TICKS: u32 = 3;

/// What this node sees and holds, for one decision.
pub(super) struct Snapshot<'a> {
    /// The node deciding.
    pub(super) me: &'a str,
    /// The most ranges it takes.
    pub(super) capacity: u32,
    /// Every range.
    pub(super) ranges: u32,
    /// Who holds each held range.
    pub(super) holders: &'a BTreeMap<u32, String>,
    /// The nodes announced in the last lease TTL.
    pub(super) live: &'a [LiveNode],
    /// For how many ticks each unheld range has been seen unheld.
    pub(super) unheld_ticks: &'a HashMap<u32, u32>,
    /// Ranges this node handed over recently: never claimed back.
    pub(super) cooling: &'a BTreeSet<u32>,
    /// This node's ranges it may hand over (every shard has a stored
    /// session, no handover under way).
    pub(super) givable: &'a BTreeSet<u32>,
    /// Whether this node is handing a range over now.
    pub(super) handing_over: bool,
    /// Where this node starts looking for a range to claim, so nodes that
    /// claim at once tend to ask for different ones.
    pub(super) offset: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Claim(u32),
    HandOver(u32),
    Idle,
}

struct Node<'a> {
    name: &'a str,
    held: u32,
    capacity: Option<u32>,
    joined_at_ms: u64,
}

impl Node<'_> {
    fn has_room(&self) -> bool {
        self.capacity.is_none_or(|capacity| self.held < capacity)
    }
}

pub(super) fn decide(s: &Snapshot<'_>) -> Decision {
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for holder in s.holders.values() {
        *counts.entry(holder.as_str()).or_default() += 1;
    }
    let mut nodes: Vec<Node<'_>> = s
        .live
        .iter()
        .map(|node| Node {
            name: node.name.as_str(),
            held: counts.get(node.name.as_str()).copied().unwrap_or(0),
            capacity: node.capacity,
            joined_at_ms: node.joined_at_ms,
        })
        .collect();
    // This node counts even when its last announcement did not get through.
    if !nodes.iter().any(|node| node.name == s.me) {
        nodes.push(Node {
            name: s.me,
            held: counts.get(s.me).copied().unwrap_or(0),
            capacity: Some(s.capacity),
            joined_at_ms: 0,
        });
    }
    let mine = counts.get(s.me).copied().unwrap_or(0);
    let live = u32::try_from(nodes.len()).unwrap_or(u32::MAX).max(1);
    let (floor, ceil) = (s.ranges / live, s.ranges.div_ceil(live));
    let unheld: Vec<u32> = (0..s.ranges)
        .filter(|range| !s.holders.contains_key(range))
        .collect();

    if !unheld.is_empty() {
        if mine >= s.capacity {
            return Decision::Idle;
        }
        let neediest = nodes
            .iter()
            .filter(|node| node.has_room())
            .min_by(|a, b| {
                a.held
                    .cmp(&b.held)
                    .then(b.joined_at_ms.cmp(&a.joined_at_ms))
                    .then(a.name.cmp(b.name))
            })
            .map(|node| node.name);
        let under_share = mine < floor || (mine < ceil && neediest == Some(s.me));
        // A range left unheld goes to anyone with room only when no node
        // with room is under its share: capacities that do not add up.
        let needy = nodes
            .iter()
            .any(|node| node.has_room() && node.held < floor);
        let ranges = u64::from(s.ranges.max(1));
        let mut order: Vec<u32> = unheld
            .into_iter()
            .filter(|range| !s.cooling.contains(range))
            .collect();
        order.sort_by_key(|range| {
            (u64::from(*range) + ranges - u64::from(s.offset) % ranges) % ranges
        });
        return order
            .into_iter()
            .find(|range| {
                under_share
                    || (!needy && s.unheld_ticks.get(range).copied().unwrap_or(0) > ORPHAN_TICKS)
            })
            .map_or(Decision::Idle, Decision::Claim);
    }

    if s.handing_over {
        return Decision::Idle;
    }
    let busiest = nodes
        .iter()
        .max_by(|a, b| a.held.cmp(&b.held).then(b.name.cmp(a.name)))
        .map(|node| node.name);
    let receiver = nodes
        .iter()
        .any(|node| node.name != s.me && node.has_room() && node.held + 2 <= mine);
    if busiest != Some(s.me) || !receiver {
        return Decision::Idle;
    }
    s.givable
        .iter()
        .next_back()
        .map_or(Decision::Idle, |range| Decision::HandOver(*range))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks a node keeps a range it handed over from its claims (three
    /// lease TTLs, a tick being a sixth of one).
    const COOLING_TICKS: u32 = 18;
    /// Ticks a handover takes, from its decision to the release.
    const HANDOVER_TICKS: u32 = 2;

    /// A cluster on a clock of ticks. On each tick every node decides from
    /// the same snapshot, taken as the tick starts (so they decide at once,
    /// on what may be stale by the time they act); a claim of a range
    /// another node took first this tick fails, as a KV create does; a
    /// handover releases its range two ticks after it was decided; a node
    /// may claim a range it gave away once its cooling has passed.
    struct World {
        ranges: u32,
        holders: BTreeMap<u32, String>,
        nodes: Vec<(String, u32, u64)>,
        unheld_ticks: HashMap<u32, u32>,
        /// Per node, the ranges it handed over and the tick it may claim
        /// them again.
        cooling: HashMap<String, BTreeMap<u32, u32>>,
        /// Handovers under way: range, giver, tick of the release.
        handing: Vec<(u32, String, u32)>,
        now: u32,
        moves: Vec<(u32, String, String)>,
        left: Vec<(u32, String)>,
    }

    impl World {
        fn new(ranges: u32) -> Self {
            Self {
                ranges,
                holders: BTreeMap::new(),
                nodes: Vec::new(),
                unheld_ticks: HashMap::new(),
                cooling: HashMap::new(),
                handing: Vec::new(),
                now: 0,
                moves: Vec::new(),
                left: Vec::new(),
            }
        }

        fn join(&mut self, name: &str, capacity: u32, at: u64) {
            self.nodes.push((name.to_owned(), capacity, at));
        }

        fn leave(&mut self, name: &str) {
            self.nodes.retain(|(n, _, _)| n != name);
            self.holders.retain(|_, holder| holder != name);
            self.handing.retain(|(_, giver, _)| giver != name);
        }

        fn counts(&self) -> Vec<u32> {
            self.nodes
                .iter()
                .map(|(name, _, _)| {
                    let held = self.holders.values().filter(|h| *h == name).count();
                    u32::try_from(held).unwrap()
                })
                .collect()
        }

        fn tick(&mut self) {
            self.now += 1;
            let now = self.now;
            // Handovers whose time has come release their range.
            let (done, going): (Vec<_>, Vec<_>) =
                self.handing.drain(..).partition(|(_, _, at)| *at <= now);
            self.handing = going;
            for (range, giver, _) in done {
                if self.holders.get(&range) == Some(&giver) {
                    self.holders.remove(&range);
                    self.left.push((range, giver));
                }
            }
            for range in 0..self.ranges {
                if self.holders.contains_key(&range) {
                    self.unheld_ticks.remove(&range);
                } else {
                    *self.unheld_ticks.entry(range).or_default() += 1;
                }
            }
            let live: Vec<LiveNode> = self
                .nodes
                .iter()
                .map(|(name, capacity, at)| LiveNode {
                    name: name.clone(),
                    capacity: Some(*capacity),
                    joined_at_ms: *at,
                })
                .collect();
            let snapshot = self.holders.clone();
            let mut decisions = Vec::new();
            for (index, (name, capacity, _)) in self.nodes.iter().enumerate() {
                let giving = self.handing.iter().any(|(_, giver, _)| giver == name);
                let givable: BTreeSet<u32> = snapshot
                    .iter()
                    .filter(|(_, h)| *h == name)
                    .map(|(r, _)| *r)
                    .filter(|r| !self.handing.iter().any(|(range, _, _)| range == r))
                    .collect();
                let cooling: BTreeSet<u32> = self
                    .cooling
                    .get(name)
                    .map(|ranges| {
                        ranges
                            .iter()
                            .filter(|(_, until)| **until > now)
                            .map(|(r, _)| *r)
                            .collect()
                    })
                    .unwrap_or_default();
                let decision = decide(&Snapshot {
                    me: name,
                    capacity: *capacity,
                    ranges: self.ranges,
                    holders: &snapshot,
                    live: &live,
                    unheld_ticks: &self.unheld_ticks,
                    cooling: &cooling,
                    givable: &givable,
                    handing_over: giving,
                    offset: u32::try_from(index).unwrap() * 7,
                });
                decisions.push((name.clone(), decision));
            }
            for (name, decision) in decisions {
                match decision {
                    // Another node created the key first this tick.
                    Decision::Claim(range) if self.holders.contains_key(&range) => {}
                    Decision::Claim(range) => {
                        assert!(
                            !self.left.contains(&(range, name.clone())),
                            "range {range} came back to {name}, which handed it over"
                        );
                        if let Some((_, from)) = self.left.iter().rev().find(|(r, _)| *r == range) {
                            self.moves.push((range, from.clone(), name.clone()));
                        }
                        self.holders.insert(range, name);
                    }
                    Decision::HandOver(range) => {
                        assert_eq!(self.holders.get(&range), Some(&name));
                        self.handing
                            .push((range, name.clone(), now + HANDOVER_TICKS));
                        self.cooling
                            .entry(name)
                            .or_default()
                            .insert(range, now + HANDOVER_TICKS + COOLING_TICKS);
                    }
                    Decision::Idle => {}
                }
            }
        }

        /// Ticks until nothing changes for twice the cooling (so a range
        /// could come back if the rules let it); the ticks it took.
        fn settle(&mut self) -> u32 {
            let quiet_for = 2 * COOLING_TICKS + HANDOVER_TICKS;
            let mut quiet = 0;
            for tick in 0..1000 {
                let before = (self.holders.clone(), self.handing.len());
                self.tick();
                quiet = if before == (self.holders.clone(), self.handing.len()) {
                    quiet + 1
                } else {
                    0
                };
                if quiet == quiet_for {
                    return tick + 1 - quiet_for;
                }
            }
            panic!("no rest in 1000 ticks: {:?}", self.counts());
        }

        fn assert_balanced(&self) {
            let counts = self.counts();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1, "unbalanced: {counts:?}");
            assert_eq!(self.holders.len(), self.ranges as usize, "a range unheld");
        }
    }

    #[test]
    fn nodes_started_together_divide_the_ranges_at_once() {
        let mut world = World::new(10);
        for name in ["a", "b", "c"] {
            world.join(name, 100, 1);
        }
        let ticks = world.settle();
        world.assert_balanced();
        assert!(ticks <= 5, "{ticks} ticks");
        assert!(world.left.is_empty(), "no handover to start");
    }

    #[test]
    fn a_joiner_gets_its_share_by_the_fewest_moves_and_nothing_flaps() {
        for (ranges, nodes) in [(4, 2), (8, 2), (16, 3), (40, 5), (5, 2), (3, 3), (2, 3)] {
            let mut world = World::new(ranges);
            for n in 0..nodes {
                world.join(&format!("n{n}"), 100, 1);
            }
            world.settle();
            world.assert_balanced();
            world.moves.clear();
            world.join("joiner", 100, 2);
            world.settle();
            world.assert_balanced();
            // Every move went to the joiner, each range at most once.
            let live = nodes + 1;
            let needed = ranges / live;
            let moved = u32::try_from(world.moves.len()).unwrap();
            assert!(
                world.moves.iter().all(|(_, _, to)| to == "joiner"),
                "{ranges}/{nodes}: {:?}",
                world.moves
            );
            assert!(
                moved == needed || moved == needed + 1,
                "{ranges} ranges, {nodes} + 1 nodes: {moved} moves for a share of {needed}"
            );
            let joiner = world.counts()[usize::try_from(nodes).unwrap()];
            assert!(joiner == ranges / live || joiner == ranges.div_ceil(live));
        }
    }

    #[test]
    fn when_shares_are_uneven_a_joiner_is_given_the_smaller_by_the_one_move_it_needs() {
        let mut world = World::new(4);
        world.join("a", 100, 1);
        world.join("b", 100, 1);
        world.settle();
        world.join("c", 100, 2);
        world.settle();
        world.assert_balanced();
        // 2, 2, 0 becomes 1, 2, 1: balanced after one move. A second
        // (1, 1, 2) would cost a reconnect and balance nothing more.
        assert_eq!(world.moves.len(), 1, "{:?}", world.moves);
        assert_eq!(world.counts(), [1, 2, 1]);
    }

    #[test]
    fn capacities_that_do_not_add_up_leave_nothing_unheld() {
        let mut world = World::new(10);
        world.join("small", 2, 1);
        world.join("big", 20, 1);
        world.settle();
        assert_eq!(world.counts(), [2, 8]);
        assert!(world.left.is_empty());
    }

    #[test]
    fn a_node_that_leaves_has_its_ranges_taken_by_the_others_evenly() {
        let mut world = World::new(12);
        for name in ["a", "b", "c", "d"] {
            world.join(name, 100, 1);
        }
        world.settle();
        world.leave("b");
        world.settle();
        world.assert_balanced();
        assert_eq!(world.counts(), [4, 4, 4]);
        assert!(
            world.left.is_empty(),
            "no handover to take a leaver's ranges"
        );
    }

    #[test]
    fn a_rolling_restart_ends_balanced_with_each_move_downhill() {
        let mut world = World::new(8);
        for name in ["a", "b", "c"] {
            world.join(name, 100, 1);
        }
        world.settle();
        for (at, name) in (2..).zip(["a", "b", "c"]) {
            world.leave(name);
            world.settle();
            world.join(&format!("{name}2"), 100, at);
            world.settle();
            world.assert_balanced();
        }
    }

    #[test]
    fn a_range_over_the_even_share_goes_to_the_node_that_joined_last_alone() {
        let holders: BTreeMap<u32, String> = [(0, "a"), (1, "a"), (2, "b"), (3, "b")]
            .into_iter()
            .map(|(range, holder)| (range, holder.to_owned()))
            .collect();
        let live = [("a", 1), ("b", 2)].map(|(name, joined_at_ms)| LiveNode {
            name: name.into(),
            capacity: None,
            joined_at_ms,
        });
        let empty = BTreeSet::new();
        let no_ticks = HashMap::new();
        let snapshot = |me| Snapshot {
            me,
            capacity: 10,
            ranges: 5,
            holders: &holders,
            live: &live,
            unheld_ticks: &no_ticks,
            cooling: &empty,
            givable: &empty,
            handing_over: false,
            offset: 0,
        };
        // Both hold ⌊5/2⌋; only one asks for range 4, so they do not race.
        assert_eq!(decide(&snapshot("a")), Decision::Idle);
        assert_eq!(decide(&snapshot("b")), Decision::Claim(4));
        // Unheld for long, it goes to anyone with room.
        let long = HashMap::from([(4, ORPHAN_TICKS + 1)]);
        let mut waited = snapshot("a");
        waited.unheld_ticks = &long;
        assert_eq!(decide(&waited), Decision::Claim(4));
    }

    #[test]
    fn a_node_does_not_claim_back_a_range_it_handed_over_while_it_cools() {
        // Whatever the counts say (here a view in which this node is under
        // its share), a range it gave away stays with the others a while.
        let holders: BTreeMap<u32, String> =
            [(0, "b"), (1, "b")].map(|(r, h)| (r, h.to_owned())).into();
        let live = [("a", 1), ("b", 1)].map(|(name, joined_at_ms)| LiveNode {
            name: name.into(),
            capacity: None,
            joined_at_ms,
        });
        let cooling = BTreeSet::from([2]);
        let empty = BTreeSet::new();
        let no_ticks = HashMap::new();
        let mut snapshot = Snapshot {
            me: "a",
            capacity: 10,
            ranges: 3,
            holders: &holders,
            live: &live,
            unheld_ticks: &no_ticks,
            cooling: &cooling,
            givable: &empty,
            handing_over: false,
            offset: 0,
        };
        assert_eq!(decide(&snapshot), Decision::Idle);
        snapshot.cooling = &empty;
        assert_eq!(decide(&snapshot), Decision::Claim(2));
    }

    #[test]
    fn only_ranges_with_a_stored_session_are_handed_over() {
        let holders: BTreeMap<u32, String> = (0..4).map(|range| (range, "a".to_owned())).collect();
        let live = [
            LiveNode {
                name: "a".into(),
                capacity: None,
                joined_at_ms: 1,
            },
            LiveNode {
                name: "b".into(),
                capacity: None,
                joined_at_ms: 2,
            },
        ];
        let empty = BTreeSet::new();
        let no_ticks = HashMap::new();
        let snapshot = |givable| Snapshot {
            me: "a",
            capacity: 10,
            ranges: 4,
            holders: &holders,
            live: &live,
            unheld_ticks: &no_ticks,
            cooling: &empty,
            givable,
            handing_over: false,
            offset: 0,
        };
        assert_eq!(decide(&snapshot(&empty)), Decision::Idle);
        let two = BTreeSet::from([1, 2]);
        assert_eq!(decide(&snapshot(&two)), Decision::HandOver(2));
        let mut busy = snapshot(&two);
        busy.handing_over = true;
        assert_eq!(decide(&busy), Decision::Idle, "one handover at a time");
    }
}

//! Sequence tracking: which messages of each publisher incarnation a reader
//! has delivered, what is missing, and which `msg_id`s it has already seen.
//!
//! Every fedmsg-rs publisher stamps its messages with an `incarnation` (a
//! fresh id each time it starts) and numbers them with `i` from 1. A reader
//! therefore tells a restarted publisher (a new incarnation) from a gap
//! (a jump in `i`). Duplicates, from replays or from two paths to the same
//! publisher, are dropped by `msg_id` within a bounded window. Messages
//! without an incarnation (Python fedmsg's) are deduplicated only.

use std::collections::{HashMap, HashSet, VecDeque};

/// What to do with a message, given what was delivered before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Deliver it: the next in sequence, or untracked.
    Deliver,
    /// Already delivered (same `msg_id`, or `i` not above the last).
    Duplicate,
    /// Messages `first..=last` of this incarnation are missing before it.
    Gap {
        /// First missing `i`.
        first: u64,
        /// Last missing `i`.
        last: u64,
    },
    /// The first message seen from this incarnation, and not its first
    /// message: `1..=last` were published before (perhaps before this reader
    /// started, perhaps while it was joining).
    Joined {
        /// The last `i` before this message.
        last: u64,
    },
}

/// Bounded memory of `msg_id`s.
#[derive(Debug)]
struct Seen {
    order: VecDeque<String>,
    ids: HashSet<String>,
    capacity: usize,
}

impl Seen {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if self.ids.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
}

/// The reader's memory: last `i` per incarnation, recent `msg_id`s.
#[derive(Debug)]
pub struct Tracker {
    last: HashMap<String, u64>,
    seen: Seen,
    max_incarnations: usize,
}

impl Tracker {
    /// Remembers up to `window` message ids.
    pub fn new(window: usize) -> Tracker {
        Tracker {
            last: HashMap::new(),
            seen: Seen {
                order: VecDeque::new(),
                ids: HashSet::new(),
                capacity: window.max(1),
            },
            max_incarnations: 100_000,
        }
    }

    /// Where a message with these fields stands. Does not record it.
    pub fn check(&self, incarnation: Option<&str>, i: Option<u64>, msg_id: Option<&str>) -> Step {
        if msg_id.is_some_and(|id| self.seen.contains(id)) {
            return Step::Duplicate;
        }
        let (Some(incarnation), Some(i)) = (incarnation, i) else {
            return Step::Deliver;
        };
        match self.last.get(incarnation) {
            Some(&last) if i <= last => Step::Duplicate,
            Some(&last) if i == last + 1 => Step::Deliver,
            Some(&last) => Step::Gap {
                first: last + 1,
                last: i - 1,
            },
            None if i <= 1 => Step::Deliver,
            None => Step::Joined { last: i - 1 },
        }
    }

    /// Records a delivered message.
    pub fn record(&mut self, incarnation: Option<&str>, i: Option<u64>, msg_id: Option<&str>) {
        if let Some(id) = msg_id {
            self.seen.insert(id);
        }
        if let (Some(incarnation), Some(i)) = (incarnation, i) {
            if self.last.len() >= self.max_incarnations && !self.last.contains_key(incarnation) {
                // Publishers come and go (every one-shot logger is one);
                // forget all rather than grow without bound.
                self.last.clear();
            }
            let entry = self.last.entry(incarnation.to_owned()).or_insert(0);
            *entry = (*entry).max(i);
        }
    }

    /// Moves an incarnation's position to `i` (after a gap was given up).
    pub fn skip_to(&mut self, incarnation: &str, i: u64) {
        let entry = self.last.entry(incarnation.to_owned()).or_insert(0);
        *entry = (*entry).max(i);
    }

    /// The last delivered `i` per incarnation (for state files).
    pub fn positions(&self) -> &HashMap<String, u64> {
        &self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_gaps_duplicates_and_restarts() {
        let mut t = Tracker::new(10);
        let mut step = |inc: &str, i: u64, id: &str| {
            let s = t.check(Some(inc), Some(i), Some(id));
            if matches!(s, Step::Deliver) {
                t.record(Some(inc), Some(i), Some(id));
            }
            s
        };
        assert_eq!(step("a", 1, "m1"), Step::Deliver);
        assert_eq!(step("a", 2, "m2"), Step::Deliver);
        assert_eq!(step("a", 2, "m2"), Step::Duplicate);
        assert_eq!(step("a", 5, "m5"), Step::Gap { first: 3, last: 4 });
        assert_eq!(
            step("b", 1, "n1"),
            Step::Deliver,
            "a restart is a new incarnation, not a gap"
        );
        assert_eq!(step("c", 7, "o7"), Step::Joined { last: 6 });
        assert_eq!(
            t.check(None, None, Some("m1")),
            Step::Duplicate,
            "msg_id window"
        );
        assert_eq!(t.check(None, None, Some("zz")), Step::Deliver);
    }

    #[test]
    fn the_id_window_is_bounded() {
        let mut t = Tracker::new(3);
        for n in 0..10 {
            t.record(None, None, Some(&format!("id{n}")));
        }
        assert_eq!(t.check(None, None, Some("id0")), Step::Deliver);
        assert_eq!(t.check(None, None, Some("id9")), Step::Duplicate);
    }
}

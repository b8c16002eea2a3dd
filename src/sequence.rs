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
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

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

/// Bounded memory of the `msg_id`s of unnumbered messages (numbered ones
/// are told apart by `i`), kept as 64-bit digests (no allocation per
/// message; a false duplicate needs a collision among the last `capacity`
/// ids, about 1 in 10^9 for 100,000 of them).
#[derive(Debug)]
struct Seen {
    order: VecDeque<u64>,
    ids: HashSet<u64, BuildHasherDefault<DigestHasher>>,
    capacity: usize,
    /// A per-process secret mixed into every digest, so that nobody on the
    /// bus can choose ids that pile into one bucket of `ids`.
    key: u64,
}

/// FNV-1a, keyed, with a final mix: fast on short ids.
fn digest(id: &str, key: u64) -> u64 {
    let mut fnv: u64 = 0xcbf2_9ce4_8422_2325 ^ key;
    for byte in id.as_bytes() {
        fnv ^= u64::from(*byte);
        fnv = fnv.wrapping_mul(0x0100_0000_01b3);
    }
    let mixed = (fnv ^ key.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mixed ^ (mixed >> 29)
}

/// The digests are already mixed: hashing them again is wasted work.
#[derive(Debug, Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

impl Seen {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(&digest(id, self.key))
    }

    fn insert(&mut self, id: &str) {
        let id = digest(id, self.key);
        if self.ids.insert(id) {
            self.order.push_back(id);
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
                ids: HashSet::default(),
                capacity: window.max(1),
                key: RandomState::new().build_hasher().finish(),
            },
            max_incarnations: 100_000,
        }
    }

    /// Where a message with these fields stands. Does not record it.
    pub fn check(&self, incarnation: Option<&str>, i: Option<u64>, msg_id: Option<&str>) -> Step {
        let (Some(incarnation), Some(i)) = (incarnation, i) else {
            // Unnumbered (Python fedmsg's): only its id tells a duplicate.
            return match msg_id {
                Some(id) if self.seen.contains(id) => Step::Duplicate,
                _ => Step::Deliver,
            };
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
        let (Some(incarnation), Some(i)) = (incarnation, i) else {
            if let Some(id) = msg_id {
                self.seen.insert(id);
            }
            return;
        };
        {
            if self.last.len() >= self.max_incarnations && !self.last.contains_key(incarnation) {
                // Publishers come and go (every one-shot logger is one);
                // forget all rather than grow without bound.
                self.last.clear();
            }
            match self.last.get_mut(incarnation) {
                Some(last) => *last = (*last).max(i),
                None => {
                    self.last.insert(incarnation.to_owned(), i);
                }
            }
        }
    }

    /// Moves an incarnation's position to `i` (after a gap was given up).
    pub fn skip_to(&mut self, incarnation: &str, i: u64) {
        let entry = self.last.entry(incarnation.to_owned()).or_insert(0);
        *entry = (*entry).max(i);
    }

    /// Starts from a saved state: its incarnations are known, so the first
    /// live message of each reveals what was missed.
    pub fn resume(&mut self, state: &State) {
        for (incarnation, position) in &state.positions {
            self.skip_to(incarnation, position.i);
        }
    }
}

/// A reader's position, kept in a small JSON file so a restarted reader
/// can ask the replay services for what it missed.
///
/// The file is meant to be read and reset by people: delete it to start
/// afresh.
///
/// ```json
/// {"saved_at": 1795365169, "positions": {"9f2c…": {"i": 1043, "seen": 1795365168}}}
/// ```
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// When it was saved (seconds since the epoch).
    pub saved_at: i64,
    /// Last consumed `i` per incarnation, with when it was last seen.
    pub positions: std::collections::BTreeMap<String, Position>,
}

/// The last consumed message of one incarnation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Its sequence number.
    pub i: u64,
    /// When it was consumed (seconds since the epoch).
    pub seen: i64,
}

/// Why a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a state file.
    #[error("state file {path} is damaged ({why}); delete it to start afresh")]
    Damaged {
        /// The file.
        path: std::path::PathBuf,
        /// The parser's message.
        why: String,
    },
}

/// Incarnations not seen for this long are dropped from the state file.
const FORGET_AFTER: i64 = 7 * 86_400;
/// At most this many incarnations are kept in a state file.
const MAX_POSITIONS: usize = 10_000;

impl State {
    /// Loads `path`; a missing file is an empty state.
    pub fn load(path: &std::path::Path) -> Result<State, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Damaged {
                path: path.to_owned(),
                why: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StateError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes `path` atomically (a temporary file renamed over it).
    pub fn save(&self, path: &std::path::Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| StateError::Damaged {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        text.push('\n');
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text).map_err(io)?;
        std::fs::rename(&temporary, path).map_err(io)
    }

    /// Records a consumed message.
    pub fn consumed(&mut self, incarnation: &str, i: u64, now: i64) {
        // Called for every message a reader yields: allocate only for a new
        // incarnation.
        match self.positions.get_mut(incarnation) {
            Some(position) => {
                position.i = position.i.max(i);
                position.seen = now;
            }
            None => {
                self.positions
                    .insert(incarnation.to_owned(), Position { i, seen: now });
            }
        }
    }

    /// Drops old incarnations so the file stays small.
    pub fn prune(&mut self, now: i64) {
        self.positions.retain(|_, p| now - p.seen < FORGET_AFTER);
        if self.positions.len() > MAX_POSITIONS {
            let mut seen: Vec<i64> = self.positions.values().map(|p| p.seen).collect();
            seen.sort_unstable();
            let cutoff = seen[seen.len() - MAX_POSITIONS];
            self.positions.retain(|_, p| p.seen >= cutoff);
        }
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
        // Unnumbered messages (Python fedmsg's) are told apart by id alone.
        assert_eq!(t.check(None, None, Some("zz")), Step::Deliver);
        t.record(None, None, Some("zz"));
        assert_eq!(
            t.check(None, None, Some("zz")),
            Step::Duplicate,
            "msg_id window"
        );
        assert_eq!(
            t.check(None, None, Some("m1")),
            Step::Deliver,
            "numbered ids are not kept"
        );
        assert_eq!(t.check(None, None, None), Step::Deliver);
    }

    #[test]
    fn state_round_trips_and_prunes() {
        let dir = std::env::temp_dir().join(format!("fedmsg-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(State::load(&path).unwrap(), State::default());
        let mut state = State {
            saved_at: 100,
            ..State::default()
        };
        state.consumed("a", 5, 100);
        state.consumed("a", 3, 100);
        state.consumed("old", 1, 1);
        state.prune(100 + FORGET_AFTER - 1);
        assert_eq!(state.positions.len(), 1);
        assert_eq!(state.positions["a"].i, 5);
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), state);
        std::fs::write(&path, "nope").unwrap();
        assert!(State::load(&path)
            .unwrap_err()
            .to_string()
            .contains("delete it"));
        std::fs::remove_dir_all(&dir).unwrap();
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

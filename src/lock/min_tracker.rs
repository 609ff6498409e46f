//! A multiset of timestamps with a cheap minimum: the held immutable-timestamp locks (the
//! immutable timestamp is their minimum) and each timestamp-lease collection.
//!
//! Why not a `BTreeMap<i64, count>`: every `/tl/st` adds one timestamp and every unlock removes
//! one, under the lock table's mutex, and a B-tree insert was a visible share of that path
//! (docs/performance-history.md). The
//! timestamps arrive almost in increasing order (each is a fresh timestamp taken just before
//! its lock; two workers may swap neighbours) and mostly leave in the same order, so a sorted
//! ring buffer does both in a few instructions: an add appends at the back, a removal
//! searches (see `position`) and zeroes a count, and zeroed entries are reclaimed from the front.
//!
//! Bounded memory: zeroed entries between live ones stay until they reach an end, and are
//! compacted away once they outnumber the live ones (amortised O(1): each compaction drops at
//! least as many entries as were removed one by one since the last).

use std::collections::VecDeque;

/// Below this many dead entries, compaction is not worth a pass.
const COMPACT_AT: usize = 64;

#[derive(Default)]
pub struct MinTracker {
    /// Distinct timestamps, ascending, with how many holders each has. A count of zero marks an
    /// entry removed but not yet reclaimed; the first and last entries are always live.
    entries: VecDeque<(i64, u32)>,
    /// How many entries have a count of zero.
    dead: usize,
}

impl MinTracker {
    /// Adds one holder of `ts`.
    pub fn add(&mut self, ts: i64) {
        match self.entries.back_mut() {
            None => self.entries.push_back((ts, 1)),
            Some((last, _)) if *last < ts => self.entries.push_back((ts, 1)),
            Some((last, count)) if *last == ts => *count += 1,
            Some(_) => match self.position(ts) {
                Ok(i) => {
                    let count = &mut self.entries[i].1;
                    if *count == 0 {
                        self.dead -= 1;
                    }
                    *count += 1;
                }
                // Out of order, usually by a place or two: a short shift.
                Err(i) => self.entries.insert(i, (ts, 1)),
            },
        }
    }

    /// Removes one holder of `ts`, if there is one.
    pub fn remove(&mut self, ts: i64) {
        let Ok(i) = self.position(ts) else {
            return;
        };
        let count = &mut self.entries[i].1;
        if *count == 0 {
            return;
        }
        *count -= 1;
        if *count > 0 {
            return;
        }
        self.dead += 1;
        while let Some((_, 0)) = self.entries.front() {
            self.entries.pop_front();
            self.dead -= 1;
        }
        while let Some((_, 0)) = self.entries.back() {
            self.entries.pop_back();
            self.dead -= 1;
        }
        if self.dead > COMPACT_AT && self.dead > self.entries.len() - self.dead {
            self.entries.retain(|e| e.1 > 0);
            self.dead = 0;
        }
    }

    /// Where `ts` is (`Ok`) or would be inserted (`Err`), as a binary search answers. The held
    /// timestamps are spread about evenly (each start takes the same number of timestamps), so
    /// the search starts where `ts` would be if they were exactly even and gallops from there:
    /// a probe or two where a plain binary search over a few thousand held transactions makes
    /// a dozen, each likely a cache miss (a `/tl/ul2` of 64 tokens does 64 of these searches).
    fn position(&self, ts: i64) -> Result<usize, usize> {
        let n = self.entries.len();
        let (Some(&(first, _)), Some(&(last, _))) = (self.entries.front(), self.entries.back())
        else {
            return Err(0);
        };
        if ts <= first {
            return if ts == first { Ok(0) } else { Err(0) };
        }
        if ts >= last {
            return if ts == last { Ok(n - 1) } else { Err(n) };
        }
        // first < ts < last: the guess is within 0..n-1, and so is the answer's bracket.
        let guess = ((i128::from(ts) - i128::from(first)) * (n as i128 - 1)
            / (i128::from(last) - i128::from(first))) as usize;
        let at = |i: usize| self.entries[i].0;
        // Bracket the answer in [lo, hi): entries below lo are < ts, entries from hi on > ts.
        let (mut lo, mut hi) = if at(guess) < ts {
            let mut step = 1;
            let mut lo = guess + 1;
            loop {
                let probe = guess + step;
                if probe >= n - 1 || at(probe) >= ts {
                    break (lo, (probe + 1).min(n));
                }
                lo = probe + 1;
                step *= 2;
            }
        } else {
            let mut step = 1;
            let mut hi = guess + 1;
            loop {
                if step > guess || at(guess - step) < ts {
                    break (guess.saturating_sub(step), hi);
                }
                hi = guess - step + 1;
                step *= 2;
            }
        };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match at(mid).cmp(&ts) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// The lowest timestamp held, if any.
    pub fn min(&self) -> Option<i64> {
        self.entries.front().map(|e| e.0)
    }

    #[cfg(test)]
    fn len_with_dead(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Add(i64),
        Remove(i64),
    }

    /// Mostly increasing adds with some disorder and repeats, removals of held and unheld
    /// values in any order.
    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                3 => (0i64..400).prop_map(Op::Add),
                3 => (0i64..400).prop_map(Op::Remove),
            ],
            0..600,
        )
    }

    proptest! {
        /// The same minimum as a B-tree multiset after every operation.
        #[test]
        fn agrees_with_a_btree_multiset(ops in ops()) {
            let mut tracker = MinTracker::default();
            let mut model: BTreeMap<i64, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Add(ts) => {
                        tracker.add(ts);
                        *model.entry(ts).or_insert(0) += 1;
                    }
                    Op::Remove(ts) => {
                        tracker.remove(ts);
                        if let Some(count) = model.get_mut(&ts) {
                            *count -= 1;
                            if *count == 0 {
                                model.remove(&ts);
                            }
                        }
                    }
                }
                prop_assert_eq!(tracker.min(), model.keys().next().copied());
                let live = tracker.entries.iter().filter(|e| e.1 > 0).count();
                prop_assert_eq!(live, model.len());
                prop_assert_eq!(tracker.dead, tracker.entries.len() - live);
            }
        }
    }

    proptest! {
        /// The guided search answers exactly as a binary search does, over evenly and
        /// unevenly spread timestamps (including gaps near `i64`'s ends), present or not.
        #[test]
        fn position_agrees_with_binary_search(
            mut values in prop::collection::vec(
                prop_oneof![
                    4 => 1_000i64..1_400,
                    1 => any::<i64>(),
                ],
                0..300,
            ),
            probes in prop::collection::vec(
                prop_oneof![
                    4 => 990i64..1_410,
                    1 => any::<i64>(),
                ],
                1..50,
            ),
        ) {
            values.sort_unstable();
            values.dedup();
            let tracker = MinTracker {
                entries: values.iter().map(|v| (*v, 1)).collect(),
                dead: 0,
            };
            for probe in probes.iter().chain(&values) {
                prop_assert_eq!(
                    tracker.position(*probe),
                    tracker.entries.binary_search_by_key(probe, |e| e.0),
                    "{}", probe
                );
            }
        }
    }

    #[test]
    fn a_long_held_minimum_does_not_keep_every_later_entry() {
        let mut tracker = MinTracker::default();
        tracker.add(0); // held throughout, as by a long transaction
        for ts in 1..100_000 {
            tracker.add(ts);
            tracker.remove(ts - 1 + i64::from(ts == 1)); // everything but 0 is released
        }
        assert_eq!(tracker.min(), Some(0));
        assert!(
            tracker.len_with_dead() < 2 * COMPACT_AT + 4,
            "{} entries kept for 2 live timestamps",
            tracker.len_with_dead()
        );
    }

    #[test]
    fn out_of_order_adds_and_repeats() {
        let mut tracker = MinTracker::default();
        for ts in [10, 12, 11, 12, 9] {
            tracker.add(ts);
        }
        assert_eq!(tracker.min(), Some(9));
        tracker.remove(9);
        assert_eq!(tracker.min(), Some(10));
        tracker.remove(10);
        tracker.remove(11);
        tracker.remove(12);
        assert_eq!(tracker.min(), Some(12), "12 was held twice");
        tracker.remove(12);
        assert_eq!(tracker.min(), None);
        tracker.remove(12);
        assert_eq!(tracker.min(), None);
    }
}

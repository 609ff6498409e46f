//! The per-namespace lock-watch event log.
//!
//! AtlasDB clients cache table data and need to know when another client may have changed it.
//! They register *lock watches* (`POST /lw/sw/{ns}`) on tables, rows or cells, and then every
//! start-transactions / commit-timestamp response carries a [`LockWatchStateUpdate`]: either the
//! lock/unlock events on watched descriptors since the version the client last saw (`success`),
//! or, when that is not possible, the full current state (`snapshot`).
//!
//! This module owns, for one namespace:
//! * the set of watched [`LockWatchReference`]s and the byte ranges of lock descriptors they
//!   cover (a sorted, coalesced range set, so "is this descriptor watched?" is a binary search);
//! * the sliding window of the last [`WINDOW`] events, numbered from 0 (`lastVersion` is
//!   `nextSequence - 1`, so -1 while empty);
//! * the serde wire types, whose JSON is exactly what AtlasDB's Jackson mapper reads and writes.
//!
//! It is a pure data structure: no HTTP, no async, no locking. The lock table owns one
//! [`LockWatchLog`] under the same mutex as its held locks and calls [`LockWatchLog::log_lock`]
//! when an acquisition completes and [`LockWatchLog::log_unlock`] when a token is unlocked,
//! inside the critical section that changes them. The `currently_locked` it passes to
//! [`LockWatchLog::start_watching`] and [`LockWatchLog::update`] is the descriptors of completed
//! acquisitions (holders with a lock token), read in the same critical section: exactly what replaying the
//! events gives, so two snapshots at one version agree. A request still acquiring (holding some
//! locks while it queues for others, or just handed one by a release) is not listed: it logs
//! its lock event when it completes, and nothing if it times out (AtlasDB counts only completed
//! acquisitions too, `HeldLocksCollection.locksHeld`). The lock table also reads updates in one
//! critical section with the timestamps they accompany (see the `transactions` module). The log
//! id is the namespace's leadership id; a new leadership means a new log, and clients holding
//! the old id get a snapshot.
//!
//! Sources (palantir/atlasdb 0.1175.0): `lock-api-objects/.../lock/watch/LockWatchReferences.java`,
//! `LockWatchStateUpdate.java`, `LockWatchEvent.java`, `LockEvent.java`, `UnlockEvent.java`,
//! `LockWatchCreatedEvent.java`, `LockWatchVersion.java`, `lock/AtlasLockDescriptorRanges.java`,
//! and `timelock-impl/.../timelock/lock/watch/{LockEventLogImpl,ArrayLockEventSlidingWindow,
//! LockWatchingServiceImpl}.java`.
//!
//! # Matching
//!
//! AtlasDB lock descriptors are opaque bytes compared as unsigned strings. Its row lock is
//! `utf8(table) 0x00 row`, its cell lock `utf8(table) 0x00 row 0x00 col`, where `table` is the
//! qualified table name as written (`"ns.table"`). Each reference becomes one half-open byte range
//! `[start, end)` (as `AtlasLockDescriptorRanges` does), with `T = utf8(table)`:
//!
//! | reference | range | matches |
//! |---|---|---|
//! | `fullTable` | `[T, succ(T))` | every descriptor starting with the table name's bytes |
//! | `rowPrefix` | `[T 00 p, succ(T 00 p))` | rows (and their cells) whose name starts with `p` |
//! | `rowRange` | `[T 00 s, T 00 e)` | rows in `[s, e)` and their cells; empty `e` = to the table's end |
//! | `exactRow` | `[T 00 r, T 00 r 01)` | the row lock of `r` and every cell lock of `r` |
//! | `exactCell` | `{T 00 r 00 c}` | exactly that cell lock |
//!
//! `succ(x)` is the prefix-scan end: drop trailing `0xFF` bytes, then add one to the last byte.
//!
//! Ambiguities, all inherited from AtlasDB and all erring towards matching *more* (which is safe:
//! a client only invalidates more of its cache):
//! * `0x00` is both the separator and a legal row/column byte, so encodings collide. `exactRow`
//!   of `r` also matches the row `r 00 x` (indistinguishable from the cell `(r, x)`); a cell of a
//!   row `s` with `s < e` can fall outside `rowRange` only if `e` starts with `s 00`; and
//!   `exactCell (r 00 a, b)` is the same descriptor as `exactCell (r, a 00 b)`.
//! * `fullTable` is a prefix on the table name *without* the separator, exactly as AtlasDB does:
//!   a watch on `ns.table` also matches locks of `ns.table2` (and the bare descriptor `ns.table`).
//!
//! # Deviations from the AtlasDB server, all in corner cases it rejects or mishandles
//!
//! * `rowRange` with an empty `endExclusive` means "to the end of the table" (AtlasDB's range
//!   convention). AtlasDB builds `[T 00 s, T 00)`, which throws for a non-empty `s` and is empty
//!   for an empty `s`. A non-empty end below the start is rejected by [`LockWatchReference::validate`]
//!   (AtlasDB throws); an end equal to the start watches nothing.
//! * References with an empty table name are invalid (AtlasDB throws); `start_watching` ignores
//!   invalid references, so the HTTP layer should `validate` first and answer 400.
//! * A client version below -1 gets a snapshot (AtlasDB's window would return unset slots).
//! * A reference identical to one already registered is dropped even when its range is empty.
//! * Lock events never carry `metadata` (the optional lock-request change metadata). AtlasDB
//!   omits the field when absent, and clients accept that; the lock table does not pass it yet.
//!
//! Like AtlasDB, and unlike a naive set union, a new reference whose range is already *enclosed*
//! by the watched ranges is not added and produces no event. This matters: every AtlasDB client
//! re-sends all its references every 5 s (`LockWatchManagerImpl`), and a `created` event each
//! time would churn the window and the clients' caches.

use std::collections::VecDeque;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Number of events kept; a client further behind than this gets a snapshot
/// (`LockEventLogImpl`: `new ArrayLockEventSlidingWindow(1000, ...)`).
pub const WINDOW: usize = 1000;

/// A watch on a set of AtlasDB lock descriptors (`LockWatchReferences.LockWatchReference`).
///
/// JSON: internally tagged by `"type"`; binary fields are standard base64 strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LockWatchReference {
    /// Every descriptor of the table.
    #[serde(rename = "fullTable", rename_all = "camelCase")]
    FullTable { qualified_table_ref: String },
    /// Rows (and their cells) whose name starts with `row`.
    #[serde(rename = "rowPrefix", rename_all = "camelCase")]
    RowPrefix {
        qualified_table_ref: String,
        #[serde(with = "base64_bytes")]
        row: Bytes,
    },
    /// Rows in `[start_inclusive, end_exclusive)` and their cells; an empty end is unbounded.
    #[serde(rename = "rowRange", rename_all = "camelCase")]
    RowRange {
        qualified_table_ref: String,
        #[serde(with = "base64_bytes")]
        start_inclusive: Bytes,
        #[serde(with = "base64_bytes")]
        end_exclusive: Bytes,
    },
    /// One row's lock and all of its cells' locks.
    #[serde(rename = "exactRow", rename_all = "camelCase")]
    ExactRow {
        qualified_table_ref: String,
        #[serde(with = "base64_bytes")]
        row: Bytes,
    },
    /// One cell's lock.
    #[serde(rename = "exactCell", rename_all = "camelCase")]
    ExactCell {
        qualified_table_ref: String,
        #[serde(with = "base64_bytes")]
        row: Bytes,
        #[serde(with = "base64_bytes")]
        col: Bytes,
    },
}

impl LockWatchReference {
    /// The qualified table name (`"ns.table"`) the reference is about.
    pub fn qualified_table_ref(&self) -> &str {
        match self {
            Self::FullTable {
                qualified_table_ref,
            }
            | Self::RowPrefix {
                qualified_table_ref,
                ..
            }
            | Self::RowRange {
                qualified_table_ref,
                ..
            }
            | Self::ExactRow {
                qualified_table_ref,
                ..
            }
            | Self::ExactCell {
                qualified_table_ref,
                ..
            } => qualified_table_ref,
        }
    }

    /// Rejects what AtlasDB's server rejects (by throwing): an empty table name, and a `rowRange`
    /// whose non-empty end is below its start.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.qualified_table_ref().is_empty() {
            return Err("qualifiedTableRef must not be empty");
        }
        if let Self::RowRange {
            start_inclusive,
            end_exclusive,
            ..
        } = self
        {
            if !end_exclusive.is_empty() && end_exclusive < start_inclusive {
                return Err("rowRange endExclusive must not be below startInclusive");
            }
        }
        Ok(())
    }

    /// The descriptor range this reference watches (see the module docs).
    fn range(&self) -> DescriptorRange {
        match self {
            Self::FullTable {
                qualified_table_ref,
            } => {
                let start = qualified_table_ref.as_bytes().to_vec();
                let end = prefix_end(&start);
                DescriptorRange { start, end }
            }
            Self::RowPrefix {
                qualified_table_ref,
                row,
            } => {
                let start = row_descriptor(qualified_table_ref, row).to_vec();
                let end = prefix_end(&start);
                DescriptorRange { start, end }
            }
            Self::RowRange {
                qualified_table_ref,
                start_inclusive,
                end_exclusive,
            } => {
                let start = row_descriptor(qualified_table_ref, start_inclusive).to_vec();
                let end = if end_exclusive.is_empty() {
                    // All rows of the table: everything starting with `T 00`.
                    prefix_end(&row_descriptor(qualified_table_ref, b""))
                } else {
                    Some(row_descriptor(qualified_table_ref, end_exclusive).to_vec())
                };
                DescriptorRange { start, end }
            }
            Self::ExactRow {
                qualified_table_ref,
                row,
            } => {
                let start = row_descriptor(qualified_table_ref, row).to_vec();
                let mut end = start.clone();
                end.push(0x01);
                DescriptorRange {
                    start,
                    end: Some(end),
                }
            }
            Self::ExactCell {
                qualified_table_ref,
                row,
                col,
            } => {
                let start = cell_descriptor(qualified_table_ref, row, col).to_vec();
                // The closed range {d} is [d, d 00): nothing sorts strictly between them.
                let mut end = start.clone();
                end.push(0x00);
                DescriptorRange {
                    start,
                    end: Some(end),
                }
            }
        }
    }
}

/// AtlasDB's row lock descriptor: `utf8(table) 0x00 row` (`AtlasRowLockDescriptor`).
pub fn row_descriptor(qualified_table_ref: &str, row: &[u8]) -> Bytes {
    let table = qualified_table_ref.as_bytes();
    let mut out = Vec::with_capacity(table.len() + 1 + row.len());
    out.extend_from_slice(table);
    out.push(0x00);
    out.extend_from_slice(row);
    out.into()
}

/// AtlasDB's cell lock descriptor: `utf8(table) 0x00 row 0x00 col` (`AtlasCellLockDescriptor`).
pub fn cell_descriptor(qualified_table_ref: &str, row: &[u8], col: &[u8]) -> Bytes {
    let table = qualified_table_ref.as_bytes();
    let mut out = Vec::with_capacity(table.len() + 2 + row.len() + col.len());
    out.extend_from_slice(table);
    out.push(0x00);
    out.extend_from_slice(row);
    out.push(0x00);
    out.extend_from_slice(col);
    out.into()
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` when
/// there is none (`prefix` empty or all `0xFF`): drop trailing `0xFF`s, increment the last byte.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// `lastKnownVersion` as clients send it (`LockWatchVersion`, Conjure `ConjureIdentifiedVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdentifiedVersion {
    pub id: Uuid,
    pub version: i64,
}

/// One entry of the log (`LockWatchEvent`). Descriptor lists are sets on the Java side; they are
/// sent sorted and without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LockWatchEvent {
    /// `LockEvent`: watched descriptors locked under `lock_token`. AtlasDB may add an optional
    /// `metadata` field; it omits it when absent, as we always do.
    #[serde(rename = "lock", rename_all = "camelCase")]
    Lock {
        sequence: i64,
        #[serde(with = "descriptor_list")]
        lock_descriptors: Vec<Bytes>,
        #[serde(with = "lock_token")]
        lock_token: Uuid,
    },
    /// `UnlockEvent`: watched descriptors released.
    #[serde(rename = "unlock", rename_all = "camelCase")]
    Unlock {
        sequence: i64,
        #[serde(with = "descriptor_list")]
        lock_descriptors: Vec<Bytes>,
    },
    /// `LockWatchCreatedEvent`: new references, and the currently held descriptors they cover.
    #[serde(rename = "created", rename_all = "camelCase")]
    Created {
        sequence: i64,
        references: Vec<LockWatchReference>,
        #[serde(with = "descriptor_list")]
        lock_descriptors: Vec<Bytes>,
    },
}

impl LockWatchEvent {
    /// The event's version.
    pub fn sequence(&self) -> i64 {
        match self {
            Self::Lock { sequence, .. }
            | Self::Unlock { sequence, .. }
            | Self::Created { sequence, .. } => *sequence,
        }
    }
}

/// What a client gets with its timestamps (`LockWatchStateUpdate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LockWatchStateUpdate {
    /// The events after the client's version, up to `last_known_version` (the log's last version).
    #[serde(rename = "success", rename_all = "camelCase")]
    Success {
        log_id: Uuid,
        last_known_version: i64,
        events: Vec<LockWatchEvent>,
    },
    /// The whole state as of `last_known_version`: the client discards what it knew.
    #[serde(rename = "snapshot", rename_all = "camelCase")]
    Snapshot {
        log_id: Uuid,
        last_known_version: i64,
        #[serde(with = "descriptor_list")]
        locked: Vec<Bytes>,
        lock_watches: Vec<LockWatchReference>,
    },
}

impl LockWatchStateUpdate {
    /// The log id (leadership id) the update belongs to.
    pub fn log_id(&self) -> Uuid {
        match self {
            Self::Success { log_id, .. } | Self::Snapshot { log_id, .. } => *log_id,
        }
    }

    /// The version the client knows after applying this update.
    pub fn last_known_version(&self) -> i64 {
        match self {
            Self::Success {
                last_known_version, ..
            }
            | Self::Snapshot {
                last_known_version, ..
            } => *last_known_version,
        }
    }
}

/// A half-open range `[start, end)` of descriptors; `end == None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DescriptorRange {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl DescriptorRange {
    fn is_empty(&self) -> bool {
        self.end
            .as_deref()
            .is_some_and(|end| end <= &self.start[..])
    }

    #[cfg(test)]
    fn contains(&self, descriptor: &[u8]) -> bool {
        &self.start[..] <= descriptor && self.end.as_deref().is_none_or(|end| descriptor < end)
    }
}

/// A union of descriptor ranges, kept sorted, disjoint and coalesced (no two ranges touch), so a
/// point or a range is covered iff it lies in the single range starting at or before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RangeSet {
    ranges: Vec<DescriptorRange>,
}

impl RangeSet {
    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The last range starting at or before `point`.
    fn floor(&self, point: &[u8]) -> Option<&DescriptorRange> {
        let after = self.ranges.partition_point(|r| &r.start[..] <= point);
        after.checked_sub(1).map(|i| &self.ranges[i])
    }

    fn contains(&self, descriptor: &[u8]) -> bool {
        self.floor(descriptor)
            .is_some_and(|r| r.end.as_deref().is_none_or(|end| descriptor < end))
    }

    /// Whether every descriptor of the non-empty `range` is already covered.
    fn encloses(&self, range: &DescriptorRange) -> bool {
        self.floor(&range.start)
            .is_some_and(|r| match (&r.end, &range.end) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(have), Some(want)) => want <= have,
            })
    }

    fn add_all(&mut self, new: impl IntoIterator<Item = DescriptorRange>) {
        let mut all = std::mem::take(&mut self.ranges);
        all.extend(new.into_iter().filter(|r| !r.is_empty()));
        all.sort_by(|a, b| a.start.cmp(&b.start));
        let mut merged: Vec<DescriptorRange> = Vec::with_capacity(all.len());
        for range in all {
            if let Some(last) = merged.last_mut() {
                match &last.end {
                    None => continue,
                    Some(end) if range.start <= *end => {
                        if range.end.as_ref().is_none_or(|new_end| new_end > end) {
                            last.end = range.end;
                        }
                        continue;
                    }
                    Some(_) => {}
                }
            }
            merged.push(range);
        }
        self.ranges = merged;
    }
}

/// The lock-watch state of one namespace: watched references and the event window.
#[derive(Debug, Clone)]
pub struct LockWatchLog {
    log_id: Uuid,
    window: usize,
    /// Sequence number of the next event; the oldest kept is `next_sequence - events.len()`.
    next_sequence: i64,
    events: VecDeque<LockWatchEvent>,
    references: Vec<LockWatchReference>,
    ranges: RangeSet,
}

impl LockWatchLog {
    /// An empty log of [`WINDOW`] events; `log_id` is the namespace's leadership id.
    pub fn new(log_id: Uuid) -> Self {
        Self::new_with_window(log_id, WINDOW)
    }

    /// An empty log keeping the last `window` events.
    ///
    /// # Panics
    /// If `window` is zero.
    pub fn new_with_window(log_id: Uuid, window: usize) -> Self {
        assert!(window > 0, "lock watch window must hold at least one event");
        Self {
            log_id,
            window,
            next_sequence: 0,
            events: VecDeque::new(),
            references: Vec::new(),
            ranges: RangeSet::default(),
        }
    }

    /// The log id (the namespace's leadership id).
    pub fn log_id(&self) -> Uuid {
        self.log_id
    }

    /// The version of the newest event; -1 while no event has been logged.
    pub fn last_version(&self) -> i64 {
        self.next_sequence - 1
    }

    /// Whether any descriptor can be watched. When false, lock and unlock need no other work.
    pub fn has_watches(&self) -> bool {
        !self.ranges.is_empty()
    }

    /// The registered references, in registration order.
    pub fn references(&self) -> &[LockWatchReference] {
        &self.references
    }

    /// Whether lock/unlock of `descriptor` is logged. `O(log ranges)`.
    pub fn is_watched(&self, descriptor: &[u8]) -> bool {
        self.ranges.contains(descriptor)
    }

    /// Registers `references` and logs a `created` event with the new ones and the descriptors in
    /// `currently_locked` that they cover. References that are invalid, identical to a registered
    /// one, or whose range is already fully watched are skipped; if nothing is left, nothing is
    /// logged (see the module docs on clients re-registering every few seconds).
    pub fn start_watching<'a>(
        &mut self,
        references: Vec<LockWatchReference>,
        currently_locked: impl Iterator<Item = &'a Bytes>,
    ) {
        let mut new_references = Vec::new();
        let mut new_ranges = RangeSet::default();
        for reference in references {
            if reference.validate().is_err() {
                continue;
            }
            let range = reference.range();
            let already = (!range.is_empty() && self.ranges.encloses(&range))
                || self.references.contains(&reference)
                || new_references.contains(&reference);
            if already {
                continue;
            }
            new_ranges.add_all([range]);
            new_references.push(reference);
        }
        if new_references.is_empty() {
            return;
        }
        let lock_descriptors =
            sorted_unique(currently_locked.filter(|d| new_ranges.contains(d)).cloned());
        self.ranges.add_all(new_ranges.ranges);
        self.references.extend(new_references.iter().cloned());
        let sequence = self.next_sequence;
        self.push(LockWatchEvent::Created {
            sequence,
            references: new_references,
            lock_descriptors,
        });
    }

    /// Logs a `lock` event with the watched subset of `descriptors`, if there is one.
    pub fn log_lock(&mut self, descriptors: &[Bytes], token: Uuid) {
        if let Some(lock_descriptors) = self.watched_subset(descriptors) {
            let sequence = self.next_sequence;
            self.push(LockWatchEvent::Lock {
                sequence,
                lock_descriptors,
                lock_token: token,
            });
        }
    }

    /// Logs an `unlock` event with the watched subset of `descriptors`, if there is one.
    pub fn log_unlock(&mut self, descriptors: &[Bytes]) {
        if let Some(lock_descriptors) = self.watched_subset(descriptors) {
            let sequence = self.next_sequence;
            self.push(LockWatchEvent::Unlock {
                sequence,
                lock_descriptors,
            });
        }
    }

    /// The update for a client that last saw `last_known`: the events after it (`success`) if it
    /// names this log and its version is within the window, else a `snapshot` built from the
    /// watches and the watched descriptors of `currently_locked` (which is not consumed otherwise).
    pub fn update<'a>(
        &self,
        last_known: Option<&IdentifiedVersion>,
        currently_locked: impl Iterator<Item = &'a Bytes>,
    ) -> LockWatchStateUpdate {
        if let Some(events) = last_known.and_then(|v| self.events_after(v)) {
            return LockWatchStateUpdate::Success {
                log_id: self.log_id,
                last_known_version: self.last_version(),
                events,
            };
        }
        let locked = if self.has_watches() {
            sorted_unique(currently_locked.filter(|d| self.is_watched(d)).cloned())
        } else {
            Vec::new()
        };
        LockWatchStateUpdate::Snapshot {
            log_id: self.log_id,
            last_known_version: self.last_version(),
            locked,
            lock_watches: self.references.clone(),
        }
    }

    /// The events with sequence above `version.version`, or `None` when the client must get a
    /// snapshot: another log id, a version ahead of ours, or one whose successors were evicted.
    fn events_after(&self, version: &IdentifiedVersion) -> Option<Vec<LockWatchEvent>> {
        if version.id != self.log_id {
            return None;
        }
        // The oldest kept event; the client needs every event from `version + 1` on.
        let first_kept = self.next_sequence - self.events.len() as i64;
        if version.version > self.last_version() || version.version < first_kept - 1 {
            return None;
        }
        let skip = usize::try_from(version.version + 1 - first_kept).ok()?;
        Some(self.events.range(skip..).cloned().collect())
    }

    fn watched_subset(&self, descriptors: &[Bytes]) -> Option<Vec<Bytes>> {
        if !self.has_watches() {
            return None;
        }
        let watched = sorted_unique(
            descriptors
                .iter()
                .filter(|d| self.ranges.contains(d))
                .cloned(),
        );
        (!watched.is_empty()).then_some(watched)
    }

    fn push(&mut self, event: LockWatchEvent) {
        debug_assert_eq!(event.sequence(), self.next_sequence);
        if self.events.len() == self.window {
            self.events.pop_front();
        }
        self.events.push_back(event);
        self.next_sequence += 1;
    }
}

fn sorted_unique(descriptors: impl Iterator<Item = Bytes>) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = descriptors.collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// `byte[]` as Jackson writes it: a standard-alphabet base64 string with padding. Reading also
/// accepts missing padding.
mod base64_bytes {
    use base64::alphabet::STANDARD;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new()
            .with_encode_padding(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&ENGINE.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ENGINE
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// `Set<LockDescriptor>` as Jackson writes it: `[{"bytes":"<base64>"}, ...]`.
mod descriptor_list {
    use bytes::Bytes;
    use serde::ser::SerializeStruct;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Ref<'a>(&'a Bytes);

    impl Serialize for Ref<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            struct B64<'a>(&'a Bytes);
            impl Serialize for B64<'_> {
                fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                    super::base64_bytes::serialize(self.0, serializer)
                }
            }
            let mut s = serializer.serialize_struct("LockDescriptor", 1)?;
            s.serialize_field("bytes", &B64(self.0))?;
            s.end()
        }
    }

    #[derive(Deserialize)]
    struct Owned {
        #[serde(with = "super::base64_bytes")]
        bytes: Bytes,
    }

    pub fn serialize<S: Serializer>(list: &[Bytes], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(list.iter().map(Ref))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Bytes>, D::Error> {
        let list = Vec::<Owned>::deserialize(deserializer)?;
        Ok(list.into_iter().map(|d| d.bytes).collect())
    }
}

/// `LockToken` as Jackson writes it: `{"requestId":"<uuid>"}`.
mod lock_token {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use uuid::Uuid;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        request_id: Uuid,
    }

    pub fn serialize<S: Serializer>(token: &Uuid, serializer: S) -> Result<S::Ok, S::Error> {
        Wire { request_id: *token }.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
        Wire::deserialize(deserializer).map(|w| w.request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const LOG: Uuid = Uuid::from_u128(0x1111_1111_1111_1111_1111_1111_1111_1111);
    const OTHER_LOG: Uuid = Uuid::from_u128(0x2222_2222_2222_2222_2222_2222_2222_2222);
    const TOKEN: Uuid = Uuid::from_u128(0x3333_3333_3333_3333_3333_3333_3333_3333);
    const TABLE: &str = "ns.table";

    fn b(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    fn full_table(table: &str) -> LockWatchReference {
        LockWatchReference::FullTable {
            qualified_table_ref: table.into(),
        }
    }

    fn row_prefix(table: &str, row: &[u8]) -> LockWatchReference {
        LockWatchReference::RowPrefix {
            qualified_table_ref: table.into(),
            row: b(row),
        }
    }

    fn row_range(table: &str, start: &[u8], end: &[u8]) -> LockWatchReference {
        LockWatchReference::RowRange {
            qualified_table_ref: table.into(),
            start_inclusive: b(start),
            end_exclusive: b(end),
        }
    }

    fn exact_row(table: &str, row: &[u8]) -> LockWatchReference {
        LockWatchReference::ExactRow {
            qualified_table_ref: table.into(),
            row: b(row),
        }
    }

    fn exact_cell(table: &str, row: &[u8], col: &[u8]) -> LockWatchReference {
        LockWatchReference::ExactCell {
            qualified_table_ref: table.into(),
            row: b(row),
            col: b(col),
        }
    }

    fn row(r: &[u8]) -> Bytes {
        row_descriptor(TABLE, r)
    }

    fn cell(r: &[u8], c: &[u8]) -> Bytes {
        cell_descriptor(TABLE, r, c)
    }

    fn watching(references: Vec<LockWatchReference>) -> LockWatchLog {
        let mut log = LockWatchLog::new(LOG);
        log.start_watching(references, std::iter::empty());
        log
    }

    fn version(id: Uuid, version: i64) -> IdentifiedVersion {
        IdentifiedVersion { id, version }
    }

    fn sequences(update: &LockWatchStateUpdate) -> Vec<i64> {
        match update {
            LockWatchStateUpdate::Success { events, .. } => {
                events.iter().map(LockWatchEvent::sequence).collect()
            }
            LockWatchStateUpdate::Snapshot { .. } => panic!("expected success, got {update:?}"),
        }
    }

    fn is_snapshot(update: &LockWatchStateUpdate) -> bool {
        matches!(update, LockWatchStateUpdate::Snapshot { .. })
    }

    /// A log with a full-table watch (version 0) and `n` lock events (versions 1..=n).
    fn log_with_locks(window: usize, n: usize) -> LockWatchLog {
        let mut log = LockWatchLog::new_with_window(LOG, window);
        log.start_watching(vec![full_table(TABLE)], std::iter::empty());
        for i in 0..n {
            log.log_lock(&[row(format!("r{i}").as_bytes())], TOKEN);
        }
        log
    }

    // ---- wire format -------------------------------------------------------------------------

    #[test]
    fn every_reference_type_round_trips_through_its_exact_json() {
        let cases = [
            (
                full_table("ns.table"),
                r#"{"type":"fullTable","qualifiedTableRef":"ns.table"}"#,
            ),
            (
                row_prefix("ns.table", b"ro"),
                r#"{"type":"rowPrefix","qualifiedTableRef":"ns.table","row":"cm8="}"#,
            ),
            (
                row_range("ns.table", b"cat", b"dog"),
                r#"{"type":"rowRange","qualifiedTableRef":"ns.table","startInclusive":"Y2F0","endExclusive":"ZG9n"}"#,
            ),
            (
                exact_row("ns.table", &[0x00, 0xFF, 0x10]),
                r#"{"type":"exactRow","qualifiedTableRef":"ns.table","row":"AP8Q"}"#,
            ),
            (
                exact_cell("ns.table", b"row", b"c"),
                r#"{"type":"exactCell","qualifiedTableRef":"ns.table","row":"cm93","col":"Yw=="}"#,
            ),
        ];
        for (reference, text) in cases {
            assert_eq!(serde_json::to_string(&reference).unwrap(), text);
            let parsed: LockWatchReference = serde_json::from_str(text).unwrap();
            assert_eq!(parsed, reference);
        }
    }

    #[test]
    fn reference_deserialisation_rejects_unknown_types_and_bad_fields() {
        for bad in [
            r#"{"type":"entireTable","qualifiedTableRef":"ns.table"}"#,
            r#"{"type":"FullTable","qualifiedTableRef":"ns.table"}"#,
            r#"{"qualifiedTableRef":"ns.table"}"#,
            r#"{"type":"rowPrefix","qualifiedTableRef":"ns.table"}"#,
            r#"{"type":"exactCell","qualifiedTableRef":"ns.table","row":"cm93"}"#,
            r#"{"type":"exactRow","qualifiedTableRef":"ns.table","row":"not base64!"}"#,
            r#"{"type":"exactRow","qualifiedTableRef":"ns.table","row":"cm-3"}"#,
        ] {
            assert!(
                serde_json::from_str::<LockWatchReference>(bad).is_err(),
                "accepted {bad}"
            );
        }
    }

    #[test]
    fn base64_without_padding_is_accepted_and_order_of_fields_does_not_matter() {
        let parsed: LockWatchReference = serde_json::from_str(
            r#"{"col":"Yw","row":"cm93","qualifiedTableRef":"t.t","type":"exactCell"}"#,
        )
        .unwrap();
        assert_eq!(parsed, exact_cell("t.t", b"row", b"c"));
    }

    #[test]
    fn a_lock_watch_request_body_parses() {
        #[derive(Deserialize)]
        struct LockWatchRequest {
            references: Vec<LockWatchReference>,
        }
        let body = r#"{"references":[{"type":"fullTable","qualifiedTableRef":"a.b"},
            {"type":"exactRow","qualifiedTableRef":"a.c","row":"AQI="}]}"#;
        let request: LockWatchRequest = serde_json::from_str(body).unwrap();
        assert_eq!(
            request.references,
            vec![full_table("a.b"), exact_row("a.c", &[1, 2])]
        );
    }

    #[test]
    fn identified_version_json() {
        let v = version(LOG, 12);
        let text = r#"{"id":"11111111-1111-1111-1111-111111111111","version":12}"#;
        assert_eq!(serde_json::to_string(&v).unwrap(), text);
        assert_eq!(serde_json::from_str::<IdentifiedVersion>(text).unwrap(), v);
    }

    #[test]
    fn success_update_with_every_event_kind_has_the_exact_json() {
        let update = LockWatchStateUpdate::Success {
            log_id: LOG,
            last_known_version: 2,
            events: vec![
                LockWatchEvent::Created {
                    sequence: 0,
                    references: vec![full_table("ns.table")],
                    lock_descriptors: vec![b(b"ns.table\x00\x01")],
                },
                LockWatchEvent::Lock {
                    sequence: 1,
                    lock_descriptors: vec![b(b"ns.table\x00\x02"), b(b"ns.table\x00\x03")],
                    lock_token: TOKEN,
                },
                LockWatchEvent::Unlock {
                    sequence: 2,
                    lock_descriptors: vec![b(b"ns.table\x00\x01")],
                },
            ],
        };
        let text = concat!(
            r#"{"type":"success","logId":"11111111-1111-1111-1111-111111111111","lastKnownVersion":2,"events":["#,
            r#"{"type":"created","sequence":0,"references":[{"type":"fullTable","qualifiedTableRef":"ns.table"}],"lockDescriptors":[{"bytes":"bnMudGFibGUAAQ=="}]},"#,
            r#"{"type":"lock","sequence":1,"lockDescriptors":[{"bytes":"bnMudGFibGUAAg=="},{"bytes":"bnMudGFibGUAAw=="}],"lockToken":{"requestId":"33333333-3333-3333-3333-333333333333"}},"#,
            r#"{"type":"unlock","sequence":2,"lockDescriptors":[{"bytes":"bnMudGFibGUAAQ=="}]}"#,
            r#"]}"#
        );
        assert_eq!(serde_json::to_string(&update).unwrap(), text);
        assert_eq!(
            serde_json::from_str::<LockWatchStateUpdate>(text).unwrap(),
            update
        );
    }

    #[test]
    fn snapshot_update_has_the_exact_json() {
        let update = LockWatchStateUpdate::Snapshot {
            log_id: LOG,
            last_known_version: 7,
            locked: vec![b(b"ns.table\x00\x01")],
            lock_watches: vec![full_table("ns.table"), exact_row("ns.other", b"r")],
        };
        let text = concat!(
            r#"{"type":"snapshot","logId":"11111111-1111-1111-1111-111111111111","lastKnownVersion":7,"#,
            r#""locked":[{"bytes":"bnMudGFibGUAAQ=="}],"#,
            r#""lockWatches":[{"type":"fullTable","qualifiedTableRef":"ns.table"},{"type":"exactRow","qualifiedTableRef":"ns.other","row":"cg=="}]}"#
        );
        assert_eq!(serde_json::to_string(&update).unwrap(), text);
        assert_eq!(
            serde_json::from_str::<LockWatchStateUpdate>(text).unwrap(),
            update
        );
    }

    #[test]
    fn initial_snapshot_matches_the_spec_example() {
        let log = LockWatchLog::new(LOG);
        assert_eq!(
            serde_json::to_value(log.update(None, std::iter::empty())).unwrap(),
            json!({"type":"snapshot","logId":LOG,"lastKnownVersion":-1,"locked":[],"lockWatches":[]})
        );
    }

    #[test]
    fn events_from_a_java_server_parse_including_lock_metadata() {
        // AtlasDB's own test fixture shape (atlasdb-impl-shared/src/test/resources/
        // lockwatch-event-cache-output/*/event-cache-1.json), plus the optional metadata.
        let text = r#"[
            {"type":"created","sequence":4,"references":[{"type":"fullTable","qualifiedTableRef":"table"}],
             "lockDescriptors":[{"bytes":"dGFibGUAAQ=="}]},
            {"type":"unlock","sequence":5,"lockDescriptors":[{"bytes":"dGFibGUAAg=="}]},
            {"type":"lock","sequence":6,"lockDescriptors":[{"bytes":"dGFibGUAAw=="}],
             "lockToken":{"requestId":"203fcd7a-b3d7-4c2a-9d2c-3d61cde1ba59"},
             "metadata":{"indexToChangeMetadata":{},"lockListChecksum":{"typeId":0,"value":""}}}
        ]"#;
        let events: Vec<LockWatchEvent> = serde_json::from_str(text).unwrap();
        assert_eq!(
            events,
            vec![
                LockWatchEvent::Created {
                    sequence: 4,
                    references: vec![full_table("table")],
                    lock_descriptors: vec![b(b"table\x00\x01")],
                },
                LockWatchEvent::Unlock {
                    sequence: 5,
                    lock_descriptors: vec![b(b"table\x00\x02")],
                },
                LockWatchEvent::Lock {
                    sequence: 6,
                    lock_descriptors: vec![b(b"table\x00\x03")],
                    lock_token: "203fcd7a-b3d7-4c2a-9d2c-3d61cde1ba59".parse().unwrap(),
                },
            ]
        );
        assert!(
            serde_json::from_str::<LockWatchEvent>(r#"{"type":"relock","sequence":1}"#).is_err()
        );
    }

    #[test]
    fn descriptor_encodings() {
        assert_eq!(&row_descriptor("a.b", b"r")[..], b"a.b\x00r");
        assert_eq!(&cell_descriptor("a.b", b"r", b"c")[..], b"a.b\x00r\x00c");
        assert_eq!(&row_descriptor("é", b"")[..], b"\xc3\xa9\x00");
    }

    // ---- versions and the window -------------------------------------------------------------

    #[test]
    fn empty_log_starts_at_minus_one_and_versions_start_at_zero() {
        let mut log = LockWatchLog::new(LOG);
        assert_eq!(log.log_id(), LOG);
        assert_eq!(log.last_version(), -1);
        assert!(!log.has_watches());
        log.start_watching(vec![full_table(TABLE)], std::iter::empty());
        assert_eq!(log.last_version(), 0);
        log.log_lock(&[row(b"r")], TOKEN);
        assert_eq!(log.last_version(), 1);
        let update = log.update(Some(&version(LOG, -1)), std::iter::empty());
        assert_eq!(sequences(&update), vec![0, 1]);
    }

    #[test]
    fn absent_version_gets_a_snapshot() {
        let log = log_with_locks(WINDOW, 3);
        let locked = [row(b"r0"), row(b"r1"), b(b"other.table\x00x")];
        let update = log.update(None, locked.iter());
        assert_eq!(
            update,
            LockWatchStateUpdate::Snapshot {
                log_id: LOG,
                last_known_version: 3,
                locked: vec![row(b"r0"), row(b"r1")],
                lock_watches: vec![full_table(TABLE)],
            }
        );
    }

    #[test]
    fn version_of_another_log_gets_a_snapshot() {
        let log = log_with_locks(WINDOW, 3);
        let update = log.update(Some(&version(OTHER_LOG, 2)), std::iter::empty());
        assert!(is_snapshot(&update));
        assert_eq!(update.log_id(), LOG);
        assert_eq!(update.last_known_version(), 3);
    }

    #[test]
    fn current_version_gets_an_empty_success() {
        let log = log_with_locks(WINDOW, 3);
        let update = log.update(Some(&version(LOG, 3)), std::iter::empty());
        assert_eq!(
            update,
            LockWatchStateUpdate::Success {
                log_id: LOG,
                last_known_version: 3,
                events: vec![],
            }
        );
        // Also when nothing was ever logged.
        let empty = LockWatchLog::new(LOG);
        assert_eq!(
            empty.update(Some(&version(LOG, -1)), std::iter::empty()),
            LockWatchStateUpdate::Success {
                log_id: LOG,
                last_known_version: -1,
                events: vec![],
            }
        );
    }

    #[test]
    fn version_in_the_window_gets_the_events_after_it() {
        let log = log_with_locks(WINDOW, 5);
        let update = log.update(Some(&version(LOG, 2)), std::iter::empty());
        assert_eq!(update.last_known_version(), 5);
        assert_eq!(sequences(&update), vec![3, 4, 5]);
        let LockWatchStateUpdate::Success { events, .. } = update else {
            unreachable!()
        };
        assert_eq!(
            events[0],
            LockWatchEvent::Lock {
                sequence: 3,
                lock_descriptors: vec![row(b"r2")],
                lock_token: TOKEN,
            }
        );
    }

    #[test]
    fn version_ahead_of_the_log_or_below_minus_one_gets_a_snapshot() {
        let log = log_with_locks(WINDOW, 3);
        for v in [4, 100, i64::MAX, -2, i64::MIN] {
            assert!(
                is_snapshot(&log.update(Some(&version(LOG, v)), std::iter::empty())),
                "version {v}"
            );
        }
    }

    #[test]
    fn too_old_version_gets_a_snapshot_in_a_small_window() {
        // Window 4; versions 0..=9 logged, so 6..=9 are kept.
        let log = log_with_locks(4, 9);
        assert_eq!(log.last_version(), 9);
        assert!(is_snapshot(
            &log.update(Some(&version(LOG, 4)), std::iter::empty())
        ));
        assert_eq!(
            sequences(&log.update(Some(&version(LOG, 5)), std::iter::empty())),
            vec![6, 7, 8, 9]
        );
        assert_eq!(
            sequences(&log.update(Some(&version(LOG, 8)), std::iter::empty())),
            vec![9]
        );
    }

    #[test]
    fn window_of_1000_evicts_the_oldest_event() {
        // Versions 0..=999: exactly one full window, nothing evicted yet.
        let log = log_with_locks(WINDOW, 999);
        assert_eq!(log.last_version(), 999);
        let all = sequences(&log.update(Some(&version(LOG, -1)), std::iter::empty()));
        assert_eq!(all, (0..=999).collect::<Vec<_>>());

        // One more event evicts version 0: a client at -1 needs it, a client at 0 does not.
        let mut log = log;
        log.log_lock(&[row(b"one more")], TOKEN);
        assert_eq!(log.last_version(), 1000);
        assert_eq!(log.events.len(), WINDOW);
        assert!(is_snapshot(
            &log.update(Some(&version(LOG, -1)), std::iter::empty())
        ));
        let from_zero = sequences(&log.update(Some(&version(LOG, 0)), std::iter::empty()));
        assert_eq!(from_zero, (1..=1000).collect::<Vec<_>>());

        // And so on as the window slides.
        for _ in 0..500 {
            log.log_unlock(&[row(b"one more")]);
        }
        assert_eq!(log.last_version(), 1500);
        assert_eq!(log.events.len(), WINDOW);
        assert!(is_snapshot(
            &log.update(Some(&version(LOG, 499)), std::iter::empty())
        ));
        let tail = sequences(&log.update(Some(&version(LOG, 500)), std::iter::empty()));
        assert_eq!(tail, (501..=1500).collect::<Vec<_>>());
        assert_eq!(LockWatchLog::new(LOG).window, WINDOW);
    }

    #[test]
    #[should_panic(expected = "at least one event")]
    fn zero_window_is_refused() {
        let _ = LockWatchLog::new_with_window(LOG, 0);
    }

    // ---- matching ----------------------------------------------------------------------------

    #[test]
    fn full_table_matches_the_table_and_not_other_tables() {
        let log = watching(vec![full_table(TABLE)]);
        assert!(log.has_watches());
        assert!(log.is_watched(&row(b"")));
        assert!(log.is_watched(&row(b"anything")));
        assert!(log.is_watched(&cell(b"r", b"c")));
        assert!(log.is_watched(&row(&[0xFF, 0xFF])));
        assert!(log.is_watched(TABLE.as_bytes()));
        assert!(!log.is_watched(&row_descriptor("ns.tabla", b"r")));
        assert!(!log.is_watched(&row_descriptor("ns.tablf", b"r")));
        assert!(!log.is_watched(&row_descriptor("ns.tabl", b"r")));
        assert!(!log.is_watched(&row_descriptor("other.table", b"r")));
        assert!(!log.is_watched(b"ns.tabl"));
        assert!(!log.is_watched(b""));
    }

    #[test]
    fn full_table_also_matches_tables_whose_name_extends_it_as_atlasdb_does() {
        // AtlasLockDescriptorRanges.fullTable is a prefix range on the bare table name.
        let log = watching(vec![full_table(TABLE)]);
        assert!(log.is_watched(&row_descriptor("ns.table2", b"r")));
    }

    #[test]
    fn row_prefix_matches_rows_starting_with_the_prefix_and_their_cells() {
        let log = watching(vec![row_prefix(TABLE, b"ab")]);
        assert!(log.is_watched(&row(b"ab")));
        assert!(log.is_watched(&row(b"abc")));
        assert!(log.is_watched(&row(&[b'a', b'b', 0xFF, 0xFF])));
        assert!(log.is_watched(&cell(b"ab", b"c")));
        assert!(log.is_watched(&cell(b"abz", b"c")));
        // Prefix boundaries.
        assert!(!log.is_watched(&row(b"a")));
        assert!(!log.is_watched(&row(b"aa")));
        assert!(!log.is_watched(&row(b"ac")));
        assert!(!log.is_watched(&row(b"b")));
        assert!(!log.is_watched(&cell(b"a", b"b")));
        assert!(!log.is_watched(&row_descriptor("ns.other", b"abc")));
        assert!(!log.is_watched(&row_descriptor("ns.table2", b"abc")));
    }

    #[test]
    fn row_prefix_ending_in_ff_bytes() {
        let log = watching(vec![row_prefix(TABLE, &[b'a', 0xFF])]);
        assert!(log.is_watched(&row(&[b'a', 0xFF])));
        assert!(log.is_watched(&row(&[b'a', 0xFF, 0xFF, 0x00])));
        assert!(!log.is_watched(&row(&[b'a', 0xFE, 0xFF])));
        assert!(!log.is_watched(&row(b"b")));
        assert!(!log.is_watched(&row_descriptor("ns.tablf", b"")));
    }

    #[test]
    fn empty_row_prefix_matches_every_row_of_the_table_only() {
        let log = watching(vec![row_prefix(TABLE, b"")]);
        assert!(log.is_watched(&row(b"")));
        assert!(log.is_watched(&cell(b"x", b"y")));
        assert!(!log.is_watched(TABLE.as_bytes()));
        assert!(!log.is_watched(&row_descriptor("ns.table2", b"x")));
    }

    #[test]
    fn row_range_is_start_inclusive_end_exclusive() {
        let log = watching(vec![row_range(TABLE, b"cat", b"dog")]);
        assert!(log.is_watched(&row(b"cat")));
        assert!(log.is_watched(&cell(b"cat", b"c")));
        assert!(log.is_watched(&row(b"cow")));
        assert!(log.is_watched(&row(b"dof")));
        assert!(log.is_watched(&row(&[b'd', b'o', b'f', 0xFF])));
        assert!(log.is_watched(&cell(b"dof", b"zzz")));
        assert!(!log.is_watched(&row(b"car")));
        assert!(!log.is_watched(&row(b"ca")));
        assert!(!log.is_watched(&row(b"dog")));
        assert!(!log.is_watched(&cell(b"dog", b"c")));
        assert!(!log.is_watched(&row(b"doga")));
        assert!(!log.is_watched(&row_descriptor("ns.other", b"cow")));
    }

    #[test]
    fn row_range_with_empty_end_runs_to_the_end_of_the_table() {
        let log = watching(vec![row_range(TABLE, b"m", b"")]);
        assert!(log.is_watched(&row(b"m")));
        assert!(log.is_watched(&row(b"zzzz")));
        assert!(log.is_watched(&row(&[0xFF; 8])));
        assert!(log.is_watched(&cell(&[0xFF], b"c")));
        assert!(!log.is_watched(&row(b"l")));
        assert!(!log.is_watched(&row_descriptor("ns.table2", b"")));
        assert!(!log.is_watched(&row_descriptor("ns.tablf", b"")));

        let whole = watching(vec![row_range(TABLE, b"", b"")]);
        assert!(whole.is_watched(&row(b"")));
        assert!(whole.is_watched(&row(&[0xFF])));
        assert!(!whole.is_watched(TABLE.as_bytes()));
    }

    #[test]
    fn empty_and_inverted_row_ranges() {
        let mut log = watching(vec![row_range(TABLE, b"k", b"k")]);
        assert!(!log.has_watches());
        assert!(!log.is_watched(&row(b"k")));
        // Registered once (it is a reference the client asked for), not again.
        assert_eq!(log.references(), &[row_range(TABLE, b"k", b"k")]);
        assert_eq!(log.last_version(), 0);
        log.start_watching(vec![row_range(TABLE, b"k", b"k")], std::iter::empty());
        assert_eq!(log.last_version(), 0);

        let inverted = row_range(TABLE, b"z", b"a");
        assert!(inverted.validate().is_err());
        log.start_watching(vec![inverted], std::iter::empty());
        assert_eq!(log.last_version(), 0);
        assert!(!log.is_watched(&row(b"m")));
    }

    #[test]
    fn exact_row_matches_the_row_and_its_cells_only() {
        let log = watching(vec![exact_row(TABLE, b"row")]);
        assert!(log.is_watched(&row(b"row")));
        assert!(log.is_watched(&cell(b"row", b"")));
        assert!(log.is_watched(&cell(b"row", b"col")));
        assert!(log.is_watched(&cell(b"row", &[0xFF, 0xFF])));
        assert!(!log.is_watched(&row(b"ro")));
        assert!(!log.is_watched(&row(b"rox")));
        assert!(!log.is_watched(&row(b"rows")));
        assert!(!log.is_watched(&row(&[b'r', b'o', b'w', 0x01])));
        assert!(!log.is_watched(&cell(b"rows", b"col")));
        assert!(!log.is_watched(&cell(b"ro", b"col")));
        assert!(!log.is_watched(&row_descriptor("ns.other", b"row")));
        // The 0x00 ambiguity: row "row 00 x" encodes like cell ("row", "x").
        assert!(log.is_watched(&row(b"row\x00x")));
    }

    #[test]
    fn exact_cell_matches_that_cell_only() {
        let log = watching(vec![exact_cell(TABLE, b"row", b"col")]);
        assert!(log.is_watched(&cell(b"row", b"col")));
        assert!(!log.is_watched(&cell(b"row", b"co")));
        assert!(!log.is_watched(&cell(b"row", b"cola")));
        assert!(!log.is_watched(&cell(b"row", b"cok")));
        assert!(!log.is_watched(&cell(b"row", b"col\x00")));
        assert!(!log.is_watched(&cell(b"rox", b"col")));
        assert!(!log.is_watched(&row(b"row")));
        assert!(!log.is_watched(&cell_descriptor("ns.other", b"row", b"col")));
        // The 0x00 ambiguity: row "row 00 col" has the same bytes as cell ("row", "col").
        assert!(log.is_watched(&row(b"row\x00col")));
    }

    #[test]
    fn several_watches_on_several_tables() {
        let log = watching(vec![
            exact_cell("a.one", b"r", b"c"),
            full_table("b.two"),
            exact_row("c.three", b"r"),
            row_prefix("a.one", b"p"),
        ]);
        assert!(log.is_watched(&cell_descriptor("a.one", b"r", b"c")));
        assert!(log.is_watched(&row_descriptor("a.one", b"pq")));
        assert!(log.is_watched(&row_descriptor("b.two", b"x")));
        assert!(log.is_watched(&cell_descriptor("c.three", b"r", b"x")));
        assert!(!log.is_watched(&row_descriptor("a.one", b"r")));
        assert!(!log.is_watched(&row_descriptor("a.one", b"q")));
        assert!(!log.is_watched(&row_descriptor("c.three", b"s")));
        assert!(!log.is_watched(&row_descriptor("d.four", b"r")));
    }

    #[test]
    fn references_with_an_empty_table_are_invalid_and_ignored() {
        for reference in [
            full_table(""),
            row_prefix("", b"r"),
            row_range("", b"a", b"b"),
            exact_row("", b"r"),
            exact_cell("", b"r", b"c"),
        ] {
            assert!(reference.validate().is_err());
            let log = watching(vec![reference]);
            assert!(!log.has_watches());
            assert_eq!(log.last_version(), -1);
            assert!(log.references().is_empty());
        }
        assert!(row_range(TABLE, b"a", b"").validate().is_ok());
        assert!(row_range(TABLE, b"a", b"a").validate().is_ok());
        assert_eq!(exact_cell("x.y", b"", b"").qualified_table_ref(), "x.y");
    }

    // ---- events ------------------------------------------------------------------------------

    #[test]
    fn created_event_lists_new_references_and_the_covered_locked_descriptors() {
        let mut log = LockWatchLog::new(LOG);
        let locked = [
            row(b"b"),
            cell(b"a", b"c"),
            row(b"a"),
            row(b"zz"),
            row_descriptor("ns.other", b"a"),
            row(b"a"),
        ];
        log.start_watching(
            vec![
                exact_row(TABLE, b"a"),
                exact_row(TABLE, b"b"),
                exact_row(TABLE, b"a"),
            ],
            locked.iter(),
        );
        let update = log.update(Some(&version(LOG, -1)), std::iter::empty());
        assert_eq!(
            update,
            LockWatchStateUpdate::Success {
                log_id: LOG,
                last_known_version: 0,
                events: vec![LockWatchEvent::Created {
                    sequence: 0,
                    references: vec![exact_row(TABLE, b"a"), exact_row(TABLE, b"b")],
                    lock_descriptors: vec![row(b"a"), cell(b"a", b"c"), row(b"b")],
                }],
            }
        );
    }

    #[test]
    fn created_event_covers_only_the_new_references() {
        let mut log = LockWatchLog::new(LOG);
        let locked = [row(b"a"), row(b"b")];
        log.start_watching(vec![exact_row(TABLE, b"a")], locked.iter());
        log.start_watching(vec![exact_row(TABLE, b"b")], locked.iter());
        let update = log.update(Some(&version(LOG, 0)), std::iter::empty());
        let LockWatchStateUpdate::Success { events, .. } = update else {
            panic!("expected success")
        };
        assert_eq!(
            events,
            vec![LockWatchEvent::Created {
                sequence: 1,
                references: vec![exact_row(TABLE, b"b")],
                lock_descriptors: vec![row(b"b")],
            }]
        );
        assert_eq!(
            log.references(),
            &[exact_row(TABLE, b"a"), exact_row(TABLE, b"b")]
        );
    }

    #[test]
    fn re_registering_watched_references_logs_nothing() {
        let mut log = watching(vec![full_table(TABLE), exact_row("ns.other", b"r")]);
        assert_eq!(log.last_version(), 0);
        // What every client does every 5 seconds.
        log.start_watching(
            vec![full_table(TABLE), exact_row("ns.other", b"r")],
            std::iter::empty(),
        );
        // Enclosed by an existing watch, though not identical.
        log.start_watching(
            vec![
                exact_row(TABLE, b"x"),
                exact_cell(TABLE, b"r", b"c"),
                row_range(TABLE, b"a", b"b"),
                row_range(TABLE, b"a", b""),
                exact_cell("ns.other", b"r", b"c"),
            ],
            std::iter::empty(),
        );
        log.start_watching(vec![], std::iter::empty());
        assert_eq!(log.last_version(), 0);
        assert_eq!(
            log.references(),
            &[full_table(TABLE), exact_row("ns.other", b"r")]
        );

        // Overlapping but not enclosed: a new watch and a new event.
        log.start_watching(vec![row_prefix("ns.other", b"")], std::iter::empty());
        assert_eq!(log.last_version(), 1);
    }

    #[test]
    fn adjacent_watches_together_enclose_a_spanning_reference() {
        let mut log = watching(vec![
            row_range(TABLE, b"a", b"m"),
            row_range(TABLE, b"m", b"z"),
        ]);
        assert_eq!(log.ranges.ranges.len(), 1);
        log.start_watching(vec![row_range(TABLE, b"c", b"x")], std::iter::empty());
        assert_eq!(log.last_version(), 0);
        log.start_watching(vec![row_range(TABLE, b"c", b"zz")], std::iter::empty());
        assert_eq!(log.last_version(), 1);
    }

    #[test]
    fn lock_and_unlock_log_only_watched_descriptors() {
        let mut log = watching(vec![exact_row(TABLE, b"w")]);
        log.log_lock(
            &[
                row(b"x"),
                cell(b"w", b"2"),
                row(b"w"),
                row(b"w"),
                row_descriptor("ns.other", b"w"),
            ],
            TOKEN,
        );
        log.log_unlock(&[cell(b"w", b"2"), row(b"y")]);
        let update = log.update(Some(&version(LOG, 0)), std::iter::empty());
        let LockWatchStateUpdate::Success { events, .. } = update else {
            panic!("expected success")
        };
        assert_eq!(
            events,
            vec![
                LockWatchEvent::Lock {
                    sequence: 1,
                    lock_descriptors: vec![row(b"w"), cell(b"w", b"2")],
                    lock_token: TOKEN,
                },
                LockWatchEvent::Unlock {
                    sequence: 2,
                    lock_descriptors: vec![cell(b"w", b"2")],
                },
            ]
        );
    }

    #[test]
    fn no_events_for_unwatched_descriptors() {
        let mut log = LockWatchLog::new(LOG);
        log.log_lock(&[row(b"a")], TOKEN);
        log.log_unlock(&[row(b"a")]);
        log.log_lock(&[], TOKEN);
        assert_eq!(log.last_version(), -1);

        log.start_watching(vec![exact_row(TABLE, b"w")], std::iter::empty());
        log.log_lock(&[row(b"a"), row_descriptor("ns.other", b"w")], TOKEN);
        log.log_unlock(&[row(b"a")]);
        log.log_lock(&[], TOKEN);
        log.log_unlock(&[]);
        assert_eq!(log.last_version(), 0);
        assert_eq!(log.events.len(), 1);
    }

    #[test]
    fn snapshot_lists_all_watches_and_the_watched_locked_descriptors() {
        let mut log = LockWatchLog::new(LOG);
        log.start_watching(vec![exact_row(TABLE, b"a")], std::iter::empty());
        log.start_watching(vec![full_table("ns.other")], std::iter::empty());
        log.log_lock(&[row(b"a")], TOKEN);
        let locked = [
            row(b"a"),
            row(b"b"),
            row_descriptor("ns.other", b"x"),
            row(b"a"),
        ];
        assert_eq!(
            log.update(Some(&version(OTHER_LOG, 2)), locked.iter()),
            LockWatchStateUpdate::Snapshot {
                log_id: LOG,
                last_known_version: 2,
                locked: vec![row_descriptor("ns.other", b"x"), row(b"a")],
                lock_watches: vec![exact_row(TABLE, b"a"), full_table("ns.other")],
            }
        );
    }

    // ---- the range set against a naive model --------------------------------------------------

    fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop::sample::select(vec![0x00u8, 0x01, b'a', b'b', 0xFE, 0xFF]),
            0..4,
        )
    }

    fn arb_reference() -> impl Strategy<Value = LockWatchReference> {
        let table = prop::sample::select(vec!["t", "t.a", "t.b", "u"]);
        (table, 0..5u8, arb_bytes(), arb_bytes()).prop_map(|(t, kind, x, y)| match kind {
            0 => full_table(t),
            1 => row_prefix(t, &x),
            2 => row_range(t, &x, &y),
            3 => exact_row(t, &x),
            _ => exact_cell(t, &x, &y),
        })
    }

    fn arb_descriptor() -> impl Strategy<Value = Vec<u8>> {
        let table = prop::sample::select(vec!["t", "t.a", "t.b", "u", "t.", "s"]);
        (table, 0..3u8, arb_bytes(), arb_bytes()).prop_map(|(t, kind, x, y)| match kind {
            0 => row_descriptor(t, &x).to_vec(),
            1 => cell_descriptor(t, &x, &y).to_vec(),
            _ => x,
        })
    }

    /// The definitions, by pattern rather than by ranges.
    fn naive_match(reference: &LockWatchReference, d: &[u8]) -> bool {
        let row_of = |table: &str| -> Option<Vec<u8>> {
            d.strip_prefix(table.as_bytes())?
                .strip_prefix(&[0u8])
                .map(<[u8]>::to_vec)
        };
        match reference {
            LockWatchReference::FullTable {
                qualified_table_ref,
            } => d.starts_with(qualified_table_ref.as_bytes()),
            LockWatchReference::RowPrefix {
                qualified_table_ref,
                row,
            } => row_of(qualified_table_ref).is_some_and(|rest| rest.starts_with(row)),
            LockWatchReference::RowRange {
                qualified_table_ref,
                start_inclusive,
                end_exclusive,
            } => row_of(qualified_table_ref).is_some_and(|rest| {
                rest.as_slice() >= &start_inclusive[..]
                    && (end_exclusive.is_empty() || rest.as_slice() < &end_exclusive[..])
            }),
            LockWatchReference::ExactRow {
                qualified_table_ref,
                row,
            } => row_of(qualified_table_ref).is_some_and(|rest| {
                rest.as_slice() == &row[..]
                    || rest
                        .strip_prefix(&row[..])
                        .is_some_and(|r| r.first() == Some(&0))
            }),
            LockWatchReference::ExactCell {
                qualified_table_ref,
                row,
                col,
            } => d == &cell_descriptor(qualified_table_ref, row, col)[..],
        }
    }

    proptest! {
        #[test]
        fn watched_iff_some_valid_reference_matches(
            references in prop::collection::vec(arb_reference(), 0..6),
            descriptors in prop::collection::vec(arb_descriptor(), 0..40),
        ) {
            let log = watching(references.clone());
            for d in &descriptors {
                let by_range = references
                    .iter()
                    .filter(|r| r.validate().is_ok())
                    .any(|r| r.range().contains(d));
                let by_pattern = references
                    .iter()
                    .filter(|r| r.validate().is_ok())
                    .any(|r| naive_match(r, d));
                prop_assert_eq!(log.is_watched(d), by_range, "descriptor {:?}", d);
                prop_assert_eq!(by_range, by_pattern, "descriptor {:?}", d);
            }
            // The set stays sorted, disjoint and coalesced.
            for pair in log.ranges.ranges.windows(2) {
                let end = pair[0].end.as_ref().expect("only the last range may be unbounded");
                prop_assert!(end < &pair[1].start);
            }
        }

        #[test]
        fn encloses_agrees_with_pointwise_containment(
            references in prop::collection::vec(arb_reference(), 0..6),
            probe in arb_reference(),
            descriptors in prop::collection::vec(arb_descriptor(), 0..60),
        ) {
            prop_assume!(probe.validate().is_ok());
            let log = watching(references);
            let range = probe.range();
            prop_assume!(!range.is_empty());
            if log.ranges.encloses(&range) {
                for d in descriptors.iter().filter(|d| range.contains(d)) {
                    prop_assert!(log.is_watched(d));
                }
                prop_assert!(log.is_watched(&range.start));
            } else {
                // Watching it then must change the set.
                let mut bigger = log.clone();
                bigger.start_watching(vec![probe], std::iter::empty());
                prop_assert_ne!(bigger.ranges, log.ranges);
            }
        }
    }
}

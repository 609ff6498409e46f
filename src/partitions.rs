//! Start-timestamp partitions: each `requestorId` (one AtlasDB client instance) is given a
//! residue mod 16, the least used one, remembered for 5 minutes after its last use, so one
//! client's start timestamps fall in one partition of AtlasDB's transactions table. Kept per
//! namespace by [`crate::namespaces`]; used by [`crate::transactions`].

use std::time::{Duration, Instant};

use uuid::Uuid;

pub const NUM_PARTITIONS: i64 = 16;

/// How long a requestor keeps its residue after its last request (TimeLock: 5 minutes).
pub const PARTITION_MEMORY: Duration = Duration::from_secs(5 * 60);

/// Residues mod 16 per requestor, least-used first.
#[derive(Default)]
pub struct PartitionAllocator {
    by_client: crate::FastHashMap<Uuid, (i64, Instant)>,
    usage: [u32; NUM_PARTITIONS as usize],
}

impl PartitionAllocator {
    /// The requestor's residue, allocating the least used one on first sight.
    pub fn residue_for(&mut self, client: Uuid) -> i64 {
        self.residue_at(client, Instant::now())
    }

    /// [`Self::residue_for`], the requestor last seen at `now`.
    pub fn residue_at(&mut self, client: Uuid, now: Instant) -> i64 {
        if let Some((residue, last)) = self.by_client.get_mut(&client) {
            *last = now;
            return *residue;
        }
        let residue = (0..NUM_PARTITIONS)
            .min_by_key(|r| self.usage[*r as usize])
            .expect("16 partitions");
        self.usage[residue as usize] += 1;
        self.by_client.insert(client, (residue, now));
        residue
    }

    /// Forgets requestors idle for longer than [`PARTITION_MEMORY`].
    pub fn evict_idle(&mut self) {
        let now = Instant::now();
        let usage = &mut self.usage;
        self.by_client.retain(|_, (residue, last)| {
            let keep = now.duration_since(*last) <= PARTITION_MEMORY;
            if !keep {
                usage[*residue as usize] -= 1;
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_least_used_and_sticky() {
        let mut p = PartitionAllocator::default();
        let clients: Vec<Uuid> = (0..32).map(|_| Uuid::new_v4()).collect();
        let residues: Vec<i64> = clients.iter().map(|c| p.residue_for(*c)).collect();
        for r in 0..NUM_PARTITIONS {
            assert_eq!(
                residues.iter().filter(|x| **x == r).count(),
                2,
                "evenly spread"
            );
        }
        for (c, r) in clients.iter().zip(&residues) {
            assert_eq!(p.residue_for(*c), *r, "sticky");
        }
        p.evict_idle();
        assert_eq!(p.by_client.len(), 32, "recently used clients are kept");
    }
}

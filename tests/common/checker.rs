//! The Jepsen-style checker over timestamp operations, shared by the cluster tests
//! (`tests/cluster/leadership.rs`) and the randomized nemesis run (`bench/benches/nemesis.rs`).
//! Every operation is one timestamp a client received, with the real-time interval of the call
//! (from the first attempt to the answer, redirects and retries included).

use std::fmt;
use std::time::Instant;

/// One client operation.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub invoked: Instant,
    pub completed: Instant,
    pub value: i64,
    pub node: String,
}

/// What the checker found, and when: `at` is the offending operation's invocation, so that a
/// caller can show what the cluster went through around it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub message: String,
    pub at: Instant,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Per-client strictly increasing, globally unique, and for operations that do not overlap in
/// real time, the later one has the larger value (linearizability of a counter). The operations
/// are of one counter (one namespace); the first violation found is returned.
pub fn check(ops: &[Op]) -> Result<(), Violation> {
    let mut by_client: std::collections::BTreeMap<usize, Vec<&Op>> = Default::default();
    for op in ops {
        by_client.entry(op.client).or_default().push(op);
    }
    for (client, list) in by_client.iter_mut() {
        // A client's operations in the order it made them.
        list.sort_by_key(|o| o.invoked);
        for pair in list.windows(2) {
            if pair[1].value <= pair[0].value {
                return Err(Violation {
                    message: format!(
                        "client {client}: {} then {} (from {} then {})",
                        pair[0].value, pair[1].value, pair[0].node, pair[1].node
                    ),
                    at: pair[1].invoked,
                });
            }
        }
    }
    let mut by_value: Vec<&Op> = ops.iter().collect();
    by_value.sort_by_key(|o| o.value);
    if let Some(w) = by_value.windows(2).find(|w| w[0].value == w[1].value) {
        return Err(Violation {
            message: format!(
                "timestamp {} issued twice (to client {} by {}, to client {} by {})",
                w[0].value, w[0].client, w[0].node, w[1].client, w[1].node
            ),
            at: w[0].invoked.max(w[1].invoked),
        });
    }
    // Sort by completion; a sweep keeps the largest value among operations completed before
    // each invocation.
    let mut by_completion: Vec<&Op> = ops.iter().collect();
    by_completion.sort_by_key(|o| o.completed);
    let mut by_invocation: Vec<&Op> = ops.iter().collect();
    by_invocation.sort_by_key(|o| o.invoked);
    let mut j = 0;
    let mut max_done: Option<&Op> = None;
    for op in by_invocation {
        while j < by_completion.len() && by_completion[j].completed < op.invoked {
            if max_done.is_none_or(|m| by_completion[j].value > m.value) {
                max_done = Some(by_completion[j]);
            }
            j += 1;
        }
        if let Some(m) = max_done {
            if op.value <= m.value {
                return Err(Violation {
                    message: format!(
                        "{} (from {}) was invoked after {} (from {}) completed, but is not larger",
                        op.value, op.node, m.value, m.node
                    ),
                    at: op.invoked,
                });
            }
        }
    }
    Ok(())
}

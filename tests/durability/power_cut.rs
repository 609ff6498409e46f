//! Power cuts: `kill -9` made to lose what a power cut loses.
//!
//! `tests/powercut/powercut.c` (built here with `cc`, loaded with `LD_PRELOAD`) journals every
//! write under the data dir and every fsync; after each kill the test cuts every file back to
//! what had been synced, as the disk would hold it after a power failure. Clients record every
//! acknowledged timestamp; the high-water mark lives here, outside the data dir. After every
//! restart, every timestamp must exceed everything acknowledged before the cut.
//!
//! Cycles: `TIMELOCK_POWERCUT_CYCLES` (default 200; the documented long run is 1,000+).
//! Negative control: the same loop with `faults.skip_sync` (bound writes not fsynced) must see a
//! violation, which proves the loop can see the bug it guards against.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// What a replay did.
#[derive(Default, Debug)]
struct Cut {
    files_cut: usize,
    bytes_dropped: u64,
    unsynced_overwrites: usize,
}

/// Cuts every file under the data dir back to its last synced state, per the journal, and
/// empties the journal.
fn power_cut(journal: &Path) -> Cut {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    // Per path: the smallest size-before among writes after the last sync.
    let mut undo: HashMap<&str, u64> = HashMap::new();
    let mut overwrites: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (Some(kind), Some(path)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "S" => {
                undo.remove(path);
                overwrites.remove(path);
            }
            "W" => {
                let before: u64 = parts.nth(2).and_then(|v| v.parse().ok()).unwrap_or(0);
                let entry = undo.entry(path).or_insert(before);
                *entry = (*entry).min(before);
            }
            "O" => *overwrites.entry(path).or_default() += 1,
            _ => {}
        }
    }
    let mut cut = Cut {
        unsynced_overwrites: overwrites.values().sum(),
        ..Cut::default()
    };
    for (path, size) in undo {
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) else {
            continue; // deleted since (metadata is durable at once in this model)
        };
        let len = file.metadata().unwrap().len();
        if len > size {
            file.set_len(size).unwrap();
            cut.files_cut += 1;
            cut.bytes_dropped += len - size;
        }
    }
    std::fs::write(journal, "").unwrap();
    cut
}

struct Outcome {
    cycles: usize,
    acknowledged: u64,
    violation: Option<String>,
    cut: Cut,
}

/// Runs up to `cycles` power cuts with 4 clients mid-flight; stops at the first violation.
async fn power_cut_loop(cycles: usize, extra_env: &[(&str, &str)]) -> Outcome {
    let (dir, data) = temp_data_dir();
    std::fs::create_dir_all(&data).unwrap();
    let journal = dir.path().join("powercut.journal");
    let lib = powercut_library();
    let lib = lib.to_str().unwrap();
    let data_str = data.to_str().unwrap().to_string();
    let journal_str = journal.to_str().unwrap().to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("LD_PRELOAD", lib),
        ("POWERCUT_DIR", &data_str),
        ("POWERCUT_JOURNAL", &journal_str),
        // Small reservations: a synced bound write every few requests.
        ("TIMELOCK__TIMESTAMP__RESERVATION", "25"),
    ];
    env.extend_from_slice(extra_env);
    let mut server = TestServer::start(&data, &env);
    let client = client();
    let high_water = Arc::new(AtomicI64::new(0));
    let mut outcome = Outcome {
        cycles: 0,
        acknowledged: 0,
        violation: None,
        cut: Cut::default(),
    };
    let mut rng = 0x2545F4914F6CDD1Du64;
    for cycle in 0..cycles {
        outcome.cycles = cycle + 1;
        // Everything acknowledged before this power cut.
        let floor = high_water.load(Ordering::Acquire);
        let stop = Arc::new(AtomicBool::new(false));
        let violation: Arc<parking_lot::Mutex<Option<String>>> = Default::default();
        let acknowledged = Arc::new(AtomicI64::new(0));
        let mut tasks = Vec::new();
        for c in 0..4 {
            let (client, url, stop, high, violation, acknowledged) = (
                client.clone(),
                server.url("/pc/timestamp/fresh-timestamp"),
                stop.clone(),
                high_water.clone(),
                violation.clone(),
                acknowledged.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut last = floor;
                while !stop.load(Ordering::Acquire) {
                    let Ok(r) = client.post(&url).send().await else {
                        break; // killed
                    };
                    let Ok(text) = r.text().await else { break };
                    let Ok(ts) = text.trim().parse::<i64>() else {
                        continue;
                    };
                    if ts <= last {
                        *violation.lock() = Some(format!(
                            "cycle {cycle}, client {c}: {ts} after {last} (acknowledged before the power cut: up to {floor})"
                        ));
                        break;
                    }
                    last = ts;
                    high.fetch_max(ts, Ordering::AcqRel);
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(20 + rng % 120)).await;
        server.kill9();
        stop.store(true, Ordering::Release);
        for t in tasks {
            t.await.unwrap();
        }
        outcome.acknowledged += acknowledged.load(Ordering::Relaxed) as u64;
        if let Some(v) = violation.lock().take() {
            outcome.violation = Some(v);
            return outcome;
        }
        let cut = power_cut(&journal);
        outcome.cut.files_cut += cut.files_cut;
        outcome.cut.bytes_dropped += cut.bytes_dropped;
        outcome.cut.unsynced_overwrites += cut.unsynced_overwrites;
        server.restart();
    }
    // One last check after the final cut.
    let first = post(&server, "/pc/timestamp/fresh-timestamp")
        .await
        .number();
    let floor = high_water.load(Ordering::Acquire);
    if first <= floor {
        outcome.violation = Some(format!(
            "after the last cut: {first}, acknowledged up to {floor}"
        ));
    }
    drop(dir);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_timestamps_survive_power_cuts() {
    let cycles = std::env::var("TIMELOCK_POWERCUT_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let outcome = power_cut_loop(cycles, &[]).await;
    println!(
        "power cuts: {} cycles, {} timestamps acknowledged, {} files cut back, {} unsynced bytes dropped, {} unsynced overwrites",
        outcome.cycles,
        outcome.acknowledged,
        outcome.cut.files_cut,
        outcome.cut.bytes_dropped,
        outcome.cut.unsynced_overwrites
    );
    assert_eq!(outcome.violation, None);
    assert!(
        outcome.cut.bytes_dropped > 0,
        "the cuts dropped nothing: the library saw no unsynced writes, so the test proves nothing"
    );
    assert!(
        outcome.acknowledged > cycles as u64,
        "clients were barely served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_fsync_loses_acknowledged_timestamps() {
    let outcome = power_cut_loop(50, &[("TIMELOCK__FAULTS__SKIP_SYNC", "true")]).await;
    println!(
        "negative control (faults.skip_sync): violation after {} cycles: {:?}",
        outcome.cycles, outcome.violation
    );
    assert!(
        outcome.violation.is_some(),
        "without fsync, power cuts must lose acknowledged timestamps; the loop saw nothing in {} cycles",
        outcome.cycles
    );
}

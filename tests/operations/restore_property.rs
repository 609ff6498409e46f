//! The restore property (issue 20): over random sequences of handing out timestamps (which
//! creates namespaces on first use), online backups, restores (with and without a floor, in
//! place or onto a lost disk) and restarts (graceful or kill -9), no namespace ever hands out a
//! timestamp at or below one it handed out before. The test plays the operator of the runbook:
//! it keeps the high-water mark of every namespace outside the server, gives the highest as
//! `--fast-forward-to` when it restores with a floor, and fast-forwards a fenced namespace past
//! that namespace's own mark before using it.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use proptest::prelude::*;

const NAMESPACES: [&str; 4] = ["n0", "n1", "n2", "n3"];

#[derive(Debug, Clone)]
enum Op {
    /// Take `count` timestamps from a namespace (created on first use).
    Issue { ns: usize, count: i64 },
    /// An online backup.
    Backup,
    /// Restore one of the backups taken so far.
    Restore {
        which: usize,
        floor: bool,
        lose_disk: bool,
    },
    /// Restart the server, gracefully or by kill -9.
    Restart { kill: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..NAMESPACES.len(), 1..40i64).prop_map(|(ns, count)| Op::Issue { ns, count }),
        2 => Just(Op::Backup),
        2 => (0..8usize, any::<bool>(), any::<bool>())
            .prop_map(|(which, floor, lose_disk)| Op::Restore { which, floor, lose_disk }),
        1 => any::<bool>().prop_map(|kill| Op::Restart { kill }),
    ]
}

struct World {
    server: TestServer,
    backups: std::path::PathBuf,
    taken: Vec<String>,
    /// The highest timestamp each namespace has handed out, kept outside the server.
    seen: BTreeMap<&'static str, i64>,
}

impl World {
    /// Takes `count` timestamps from `ns`, fast-forwarding it first if it is fenced, and checks
    /// that every one is above what it handed out before.
    async fn issue(&mut self, ns: &'static str, count: i64) {
        let path = format!("/{ns}/timestamp/fresh-timestamps?number={count}");
        let mut r = post(&self.server, &path).await;
        if r.status == 500 && r.json()["errorName"] == "TimeLock:NamespaceFenced" {
            let mark = self.seen.get(ns).copied().unwrap_or(0).max(1);
            let ff = post(
                &self.server,
                &format!("/{ns}/timestamp-management/fast-forward?currentTimestamp={mark}"),
            )
            .await;
            assert_eq!(ff.status, 204, "{ff:?}");
            r = post(&self.server, &path).await;
        }
        assert_eq!(r.status, 200, "{ns}: {r:?}");
        let range = r.json();
        let (lower, upper) = (
            range["lowerBound"].as_i64().unwrap(),
            range["upperBound"].as_i64().unwrap(),
        );
        let before = self.seen.get(ns).copied().unwrap_or(0);
        assert!(
            lower > before,
            "{ns} handed out {lower}..={upper} after {before}: a timestamp went back"
        );
        self.seen.insert(ns, upper);
    }

    async fn apply(&mut self, op: &Op, dir: &Path) {
        match *op {
            Op::Issue { ns, count } => self.issue(NAMESPACES[ns], count).await,
            Op::Backup => {
                let name = format!("b{}", self.taken.len());
                let r =
                    send(client().post(self.server.url(&format!("/admin/backups?name={name}"))))
                        .await;
                assert_eq!(r.status, 200, "{r:?}");
                self.taken.push(name);
            }
            Op::Restore {
                which,
                floor,
                lose_disk,
            } => {
                if self.taken.is_empty() {
                    return;
                }
                let name = self.taken[which % self.taken.len()].clone();
                self.server.terminate();
                let data = self.server.data_dir.clone();
                if lose_disk {
                    std::fs::remove_dir_all(&data).unwrap();
                }
                let mut command = Command::new(BIN);
                command
                    .args(["backup", "restore", &name, "--yes", "--data-dir"])
                    .arg(&data)
                    .arg("--backup-dir")
                    .arg(&self.backups)
                    .current_dir(dir)
                    .stdin(Stdio::null());
                if floor {
                    let highest = self.seen.values().copied().max().unwrap_or(0).max(1);
                    command.args(["--fast-forward-to", &highest.to_string()]);
                }
                let out = command.output().unwrap();
                assert!(
                    out.status.success(),
                    "restore failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                self.server.restart();
            }
            Op::Restart { kill } => {
                if kill {
                    self.server.kill9();
                } else {
                    self.server.terminate();
                }
                self.server.restart();
            }
        }
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    let server = TestServer::start(
        &data,
        &[
            ("TIMELOCK__BACKUP__DIR", backups.to_str().unwrap()),
            ("TIMELOCK__TIMESTAMP__RESERVATION", "20"),
        ],
    );
    let mut world = World {
        server,
        backups,
        taken: Vec::new(),
        seen: BTreeMap::new(),
    };
    for op in &ops {
        world.apply(op, dir.path()).await;
        // After every step, every namespace used so far continues above its high-water mark.
        let used: Vec<&'static str> = world.seen.keys().copied().collect();
        for ns in used {
            world.issue(ns, 1).await;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        max_shrink_iters: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_namespace_goes_back_across_backups_restores_and_restarts(
        ops in proptest::collection::vec(op(), 4..14)
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}

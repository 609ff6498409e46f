//! The etcd bound store against a real etcd (Debian's `etcd-server`, installed by `./dev`) on
//! loopback: records round-trip and survive a new client; a leader-guarded store writes only
//! while its election key is current, so a deposed leader cannot extend a bound and its
//! allocator fail-stops.

use crate::common;

use std::sync::Arc;

use common::etcd::start_etcd;

use etcd_client::Client;
use timelock::metrics::Metrics;
use timelock::storage::etcd::{EtcdStore, LeaderGuard};
use timelock::storage::{BoundStore, NamespaceRecord};
use timelock::timestamp::{AllocatorLimits, TimestampService};

#[tokio::test]
async fn records_round_trip_through_etcd() {
    let etcd = start_etcd().await;
    let endpoints = vec![etcd.endpoint.clone()];
    let store = EtcdStore::connect(&endpoints, "/timelock/").await.unwrap();
    assert!(store.load_all().await.unwrap().is_empty());
    store
        .put(
            "b",
            NamespaceRecord {
                bound: 42,
                invalidated: true,
                fenced: false,
            },
        )
        .await
        .unwrap();
    store
        .put(
            "a",
            NamespaceRecord {
                bound: 7,
                invalidated: false,
                fenced: true,
            },
        )
        .await
        .unwrap();
    store
        .put(
            "a",
            NamespaceRecord {
                bound: 9,
                invalidated: false,
                fenced: false,
            },
        )
        .await
        .unwrap();
    // A fresh client (a restarted node) sees exactly what was written, in name order.
    let other = EtcdStore::connect(&endpoints, "/timelock/").await.unwrap();
    assert_eq!(
        other.load_all().await.unwrap(),
        vec![
            (
                "a".to_string(),
                NamespaceRecord {
                    bound: 9,
                    invalidated: false,
                    fenced: false
                }
            ),
            (
                "b".to_string(),
                NamespaceRecord {
                    bound: 42,
                    invalidated: true,
                    fenced: false
                }
            ),
        ]
    );
    // Prefixes isolate clusters.
    let elsewhere = EtcdStore::connect(&endpoints, "/other/").await.unwrap();
    assert!(elsewhere.load_all().await.unwrap().is_empty());
    assert!(store.describe().contains(&etcd.endpoint));
}

#[tokio::test]
async fn a_deposed_leader_cannot_extend_a_bound() {
    let etcd = start_etcd().await;
    let endpoints = vec![etcd.endpoint.clone()];
    let mut client = Client::connect(&endpoints, None).await.unwrap();
    let lease = client.lease_grant(30, None).await.unwrap().id();
    let won = client
        .campaign("/timelock/leader", "node-1", lease)
        .await
        .unwrap();
    let key = won.leader().expect("leader key");
    let guard = LeaderGuard {
        key: key.key().to_vec(),
        revision: key.rev(),
    };
    let store: Arc<dyn BoundStore> = Arc::new(
        EtcdStore::connect(&endpoints, "/timelock/")
            .await
            .unwrap()
            .with_leader_guard(guard),
    );

    let limits = AllocatorLimits {
        reservation: 10,
        low_water_mark: 0,
        max_per_request: 5,
    };
    let service = Arc::new(TimestampService::new(
        Arc::from("ns"),
        NamespaceRecord::default(),
        limits,
        store.clone(),
        Metrics::new(),
    ));
    let mut last = 0;
    for _ in 0..7 {
        last = service.fresh_timestamps(5).await.unwrap().upper; // several guarded bound writes
    }
    let durable = store.load_all().await.unwrap()[0].1.bound;
    assert!(last <= durable);

    // Leadership ends (the lease is revoked, as when a node is cut off and its lease expires).
    client.lease_revoke(lease).await.unwrap();
    let err = loop {
        match service.fresh_timestamps(5).await {
            Ok(range) => last = range.upper,
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("no longer the leader"), "{err}");
    assert!(service.is_fail_stopped());
    assert!(
        last <= durable,
        "nothing issued above the last bound written as leader"
    );
    assert_eq!(
        store.load_all().await.unwrap()[0].1.bound,
        durable,
        "the bound did not move"
    );

    // A new leader (another lease) can write; the old guard still cannot.
    let lease2 = client.lease_grant(30, None).await.unwrap().id();
    let won2 = client
        .campaign("/timelock/leader", "node-2", lease2)
        .await
        .unwrap();
    let key2 = won2.leader().unwrap();
    let new_leader = EtcdStore::connect(&endpoints, "/timelock/")
        .await
        .unwrap()
        .with_leader_guard(LeaderGuard {
            key: key2.key().to_vec(),
            revision: key2.rev(),
        });
    new_leader
        .put(
            "ns",
            NamespaceRecord {
                bound: durable + 100,
                invalidated: false,
                fenced: false,
            },
        )
        .await
        .unwrap();
    assert!(store
        .put(
            "ns",
            NamespaceRecord {
                bound: durable + 200,
                invalidated: false,
                fenced: false
            }
        )
        .await
        .is_err());
    assert_eq!(
        new_leader.load_all().await.unwrap()[0].1.bound,
        durable + 100
    );
}

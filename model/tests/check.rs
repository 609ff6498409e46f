//! The model checked exhaustively (breadth first, every reachable state within the bounds of
//! each configuration), and four mutants caught: without the request-path lease check, with
//! bound writes not conditional on the key's revision, with a hand-off that deletes the key
//! before it stops serving, with the bound read before the key is created.

use std::time::Instant;

use stateright::{Checker, HasDiscoveries, Model};
use timelock_model::{Action, Protocol};

const ONE_SERVER: &str = "one server per namespace";
const RISING: &str = "timestamps only rise";

fn check_all(name: &str, model: Protocol) {
    let started = Instant::now();
    let checker = model.checker().spawn_bfs().join();
    println!(
        "{name}: {} states ({} unique), depth {}, {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed().as_secs_f64()
    );
    assert!(checker.is_done(), "the whole state space was explored");
    // Both safety properties hold in every state; both `sometimes` properties have examples
    // (leadership moves, by expiry and by hand-off, and the new term serves), so the checks
    // are not vacuous.
    checker.assert_properties();
}

/// Checks `mutant` until `property` fails; returns the counterexample's actions.
fn counterexample(name: &str, mutant: Protocol, property: &'static str) -> Vec<Action> {
    let started = Instant::now();
    let checker = mutant
        .checker()
        .finish_when(HasDiscoveries::AnyOf([property].into()))
        .spawn_bfs()
        .join();
    let path = checker.assert_any_discovery(property);
    println!(
        "{name}: \"{property}\" fails after {} states, {:.1} s:\n{path}",
        checker.state_count(),
        started.elapsed().as_secs_f64()
    );
    path.into_actions()
}

#[test]
fn with_crashes_no_two_nodes_serve_a_namespace_and_timestamps_only_rise() {
    check_all("one namespace, crashes", Protocol::with_crashes());
}

#[test]
fn with_two_namespaces_on_one_lease_no_two_nodes_serve_one_and_timestamps_only_rise() {
    check_all("two namespaces", Protocol::two_namespaces());
}

#[test]
fn with_lost_acknowledgements_no_two_nodes_serve_a_namespace_and_timestamps_only_rise() {
    check_all("lost acknowledgements", Protocol::with_lost_acks());
}

#[test]
fn without_the_request_path_lease_check_the_checker_finds_the_bug() {
    for (name, model) in [
        ("one namespace, crashes", Protocol::with_crashes()),
        ("two namespaces", Protocol::two_namespaces()),
        ("lost acknowledgements", Protocol::with_lost_acks()),
    ] {
        let mutant = model.without_lease_check();
        counterexample(name, mutant.clone(), ONE_SERVER);
        // The shortest counterexample is a paused leader: its lease expires in etcd and
        // another node takes the namespace while the first still believes it holds its term.
        let actions = counterexample(name, mutant, RISING);
        assert!(
            actions.iter().any(|a| matches!(a, Action::Expire(_))),
            "{actions:?}"
        );
    }
}

#[test]
fn with_unguarded_bound_writes_the_checker_finds_a_stale_bound() {
    // The lease check alone does not save a bound write still on its way when the term ends:
    // applied after the next term's, it lowers the stored bound.
    let actions = counterexample(
        "unguarded bound writes",
        Protocol::with_crashes().with_unguarded_writes(),
        RISING,
    );
    assert!(
        actions.iter().any(|a| matches!(a, Action::Apply(_))),
        "{actions:?}"
    );
}

#[test]
fn with_a_hand_off_that_deletes_before_it_stops_two_nodes_serve() {
    let actions = counterexample(
        "delete before stop",
        Protocol::with_crashes().deleting_before_stopping(),
        ONE_SERVER,
    );
    assert!(
        actions.iter().any(|a| matches!(a, Action::HandOff { .. })),
        "{actions:?}"
    );
}

#[test]
fn with_the_bound_read_before_the_key_is_created_the_checker_finds_a_stale_bound() {
    // Between the read and the create the old term's last bound write lands (or the old term
    // ends and a term in between writes): the new term starts at or below an issued timestamp.
    let actions = counterexample(
        "load before create",
        Protocol::with_crashes().loading_before_creating(),
        RISING,
    );
    let load = actions
        .iter()
        .rposition(|a| matches!(a, Action::Load { .. }))
        .expect("a load");
    assert!(
        actions[load..]
            .iter()
            .any(|a| matches!(a, Action::Apply(_))),
        "{actions:?}"
    );
}

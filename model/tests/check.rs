//! The model checked exhaustively (breadth first, every reachable state within the bounds of
//! each configuration), and the mutant without the request-path lease check caught.

use std::time::Instant;

use stateright::{Checker, HasDiscoveries, Model};
use timelock_model::{Action, Protocol};

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

#[test]
fn with_crashes_no_two_nodes_serve_a_namespace_and_timestamps_only_rise() {
    check_all("one namespace, crashes", Protocol::with_crashes());
}

#[test]
fn with_two_namespaces_on_one_lease_no_two_nodes_serve_one_and_timestamps_only_rise() {
    check_all("two namespaces", Protocol::two_namespaces());
}

#[test]
fn without_the_request_path_lease_check_the_checker_finds_the_bug() {
    for (name, model) in [
        ("one namespace, crashes", Protocol::with_crashes()),
        ("two namespaces", Protocol::two_namespaces()),
    ] {
        let started = Instant::now();
        let checker = model
            .without_lease_check()
            .checker()
            .finish_when(HasDiscoveries::AllFailures)
            .spawn_bfs()
            .join();
        println!(
            "{name}, without the lease check: counterexamples after {} states, {:.1} s",
            checker.state_count(),
            started.elapsed().as_secs_f64()
        );
        let two = checker.assert_any_discovery("one server per namespace");
        println!("two servers:\n{two}");
        let stale = checker.assert_any_discovery("timestamps only rise");
        println!("a timestamp below an earlier one:\n{stale}");
        // The shortest counterexample is a paused leader: its lease expires in etcd and another
        // node takes the namespace while the first still believes it holds its term.
        let actions = stale.into_actions();
        assert!(
            actions.iter().any(|a| matches!(a, Action::Expire(_))),
            "{actions:?}"
        );
    }
}

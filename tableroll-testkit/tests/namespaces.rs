//! Handoffs between processes in different PID namespaces (containers that share the
//! coordination directory and the network but not their process tables). The kernel reports
//! a peer it cannot see with pid 0; that must be taken as "not visible", not as an error.
//! Needs root for `unshare --pid`, as CI and this project's machines have.

mod util;

use util::{assert_hello, http_get, inherited_ids, listen_addr, Peer, TestDir};

/// A serving owner with one TCP listener; returns it and its address.
fn owner(dir: &TestDir, in_namespace: bool) -> (Peer, String) {
    let args = ["--id", "old", "--listen", "web=tcp:127.0.0.1:0", "--serve"];
    let mut owner = match in_namespace {
        true => Peer::start_in_new_pid_namespace(dir.path(), &args),
        false => Peer::start(dir.path(), &args),
    };
    let addr = listen_addr(&owner.wait_for("listening"), "web");
    owner.wait_for("ready");
    (owner, addr)
}

fn hand_over(owner_in_namespace: bool) {
    let dir = TestDir::new();
    let (mut old, addr) = owner(&dir, owner_in_namespace);
    let listen = format!("web=tcp:{addr}");
    let args = ["--id", "new", "--listen", &listen, "--serve"];
    let mut new = match owner_in_namespace {
        true => Peer::start(dir.path(), &args),
        false => Peer::start_in_new_pid_namespace(dir.path(), &args),
    };
    assert_eq!(inherited_ids(&new.wait_for("inherited")), ["web"]);
    new.wait_for("ready");
    old.wait_for("upgrade_complete");
    assert_eq!(dir.owner(), "new");
    assert_hello(http_get(&addr, "/"), "new");
    old.expect_clean_exit();
}

#[test]
fn a_newcomer_that_cannot_see_the_owner_takes_over() {
    // The newcomer in a child namespace: the owner sees its pid, it sees the owner's as 0.
    hand_over(false);
}

#[test]
fn an_owner_that_cannot_see_the_newcomer_hands_over() {
    // The owner in a child namespace: it sees the newcomer's pid as 0.
    hand_over(true);
}

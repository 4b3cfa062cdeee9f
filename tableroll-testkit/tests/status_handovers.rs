//! What [`tableroll::inspect`] (the reading behind `tableroll status`) reports while real
//! processes hand over to each other: at every moment one of them holds the sockets, so it must
//! never report a group without an owner: the owner it names is alive, or it reports the
//! newcomer taking over. The conformance peer is the group; the inspection is
//! repeated, as a monitor polling `tableroll status` would, for as long as a handover lasts.
//! Nothing here sleeps; the number of looks per handover is bounded only to end a hung run.

mod util;

use tableroll::inspect::{inspect, DirectoryStatus};
use util::{listen_addr, Peer, TestDir};

/// Handovers watched.
const GENERATIONS: usize = 15;
/// A bound on the looks at one handover, to fail rather than spin if it never ends.
const MAX_LOOKS: usize = 20_000;

/// One line about a report that says there is no owner.
fn no_owner(status: &DirectoryStatus) -> String {
    let sockets: Vec<String> = status.sockets.iter().map(|s| format!("{}={:?}", s.id, s.state)).collect();
    format!(
        "owner file {:?} id {:?} alive {}, lock {:?}, handover {:?}, sockets [{}]",
        status.owner.file,
        status.owner.id,
        status.owner.alive,
        status.lock.held,
        status.handover,
        sockets.join(" ")
    )
}

#[test]
fn a_group_handing_over_never_reads_as_without_owner() {
    let dir = TestDir::new();
    let mut owner = Peer::start(dir.path(), &["--id", "g0", "--listen", "web=tcp:127.0.0.1:0"]);
    let listen = format!("web=tcp:{}", listen_addr(&owner.wait_for("listening"), "web"));
    owner.wait_for("ready");
    let (mut looks, mut wrong) = (0, Vec::new());
    for generation in 1..=GENERATIONS {
        let mut next = Peer::start(dir.path(), &["--id", &format!("g{generation}"), "--listen", &listen]);
        let mut looks_here = 0;
        // At least one look, then until the newcomer is ready and the old owner let go.
        loop {
            looks_here += 1;
            assert!(looks_here <= MAX_LOOKS, "handover {generation} did not end");
            let status = inspect(dir.path()).expect("inspecting the directory");
            if !status.owner.alive && status.handover.is_none() {
                wrong.push(format!("handover {generation}: {}", no_owner(&status)));
            }
            if next.has_pending("ready") && owner.has_pending("upgrade_complete") {
                break;
            }
        }
        looks += looks_here;
        next.wait_for("ready");
        owner.wait_for("upgrade_complete");
        owner.kill();
        owner = next;
    }
    assert!(wrong.is_empty(), "{} of {looks} looks found no owner:\n{}", wrong.len(), wrong.join("\n"));
}

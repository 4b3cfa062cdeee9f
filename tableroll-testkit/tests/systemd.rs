//! The `systemd` feature against a fake `NOTIFY_SOCKET`: a datagram socket of the test's, given
//! to real peer processes as systemd would give it to a `Type=notify` service.

mod util;

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use util::{inherited_ids, Peer, TestDir, TIMEOUT};

/// A fake systemd notification socket.
struct FakeSystemd {
    socket: UnixDatagram,
}

impl FakeSystemd {
    fn bind(path: &Path) -> FakeSystemd {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        FakeSystemd { socket }
    }

    /// The next notification, as its `KEY=VALUE` lines.
    fn receive(&self, from: &Peer) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).unwrap_or_else(|e| from.fail(&format!("no notification: {e}")));
        String::from_utf8(buf[..n].to_vec()).unwrap().lines().map(str::to_owned).collect()
    }

    fn assert_nothing_pending(&self) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let pending = self.socket.recv(&mut buf).map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
        assert!(pending.is_err(), "unexpected notification: {pending:?}");
        self.socket.set_nonblocking(false).unwrap();
    }
}

fn start(dir: &TestDir, id: &str, notify: &Path, extra: &[&str]) -> Peer {
    let args = [&["--id", id, "--listen", "web=tcp:127.0.0.1:0", "--serve"], extra].concat();
    Peer::start_with_env(dir.path(), &args, &[("NOTIFY_SOCKET", notify.as_os_str())])
}

#[test]
fn ready_and_stopping_are_reported_at_the_right_moments() {
    let dir = TestDir::new();
    let systemd_old = FakeSystemd::bind(&dir.join("notify-old"));
    let mut old = start(&dir, "old", &dir.join("notify-old"), &[]);
    old.wait_for("ready");
    let ready = systemd_old.receive(&old);
    assert_eq!(ready[..2], ["READY=1".to_string(), format!("MAINPID={}", old.pid())]);
    assert!(ready[2].starts_with("STATUS="), "{ready:?}");

    // A newcomer that holds everything it inherited but never becomes ready: it must not
    // report readiness, and the owner must not report stopping. Then it is killed.
    let systemd_stuck = FakeSystemd::bind(&dir.join("notify-stuck"));
    let mut stuck = start(&dir, "stuck", &dir.join("notify-stuck"), &["--no-ready"]);
    assert_eq!(inherited_ids(&stuck.wait_for("inherited")), ["web"]);
    stuck.wait_for("listening");
    systemd_stuck.assert_nothing_pending();
    systemd_old.assert_nothing_pending();
    stuck.kill();

    let systemd_new = FakeSystemd::bind(&dir.join("notify-new"));
    let mut new = start(&dir, "new", &dir.join("notify-new"), &[]);
    new.wait_for("ready");
    assert_eq!(systemd_new.receive(&new)[..2], ["READY=1".to_string(), format!("MAINPID={}", new.pid())]);
    old.wait_for("upgrade_complete");
    // The first notification since READY=1: the failed handoff reported nothing.
    assert_eq!(systemd_old.receive(&old)[0], "STOPPING=1");
    old.expect_clean_exit();
    systemd_old.assert_nothing_pending();
}

#[test]
fn a_notify_socket_nobody_listens_on_stops_nothing() {
    let dir = TestDir::new();
    let mut old = start(&dir, "old", &dir.join("nobody-listens"), &[]);
    old.wait_for("ready");
    let mut new = start(&dir, "new", &dir.join("nobody-listens-either"), &[]);
    new.wait_for("ready");
    old.wait_for("upgrade_complete");
    old.expect_clean_exit();
    assert_eq!(dir.owner(), "new");
}

//! The unit files in `docs/systemd/` pass `systemd-analyze verify` (from Debian's systemd
//! package) without a word: copies of them whose `ExecStart=` names the `tableroll` binary
//! cargo built (and the test server for the program), since `verify` checks that each command
//! exists and is executable. `verify` loads the units from the files and needs no running
//! systemd.

use std::path::Path;
use std::process::Command;

const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

/// The unit files as shipped, with the installed paths replaced by the built binaries.
fn copy_units(into: &Path) {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/systemd");
    let tableroll = env!("CARGO_BIN_EXE_tableroll");
    let server = env!("CARGO_BIN_EXE_activated_server");
    for name in ["app-run.socket", "app-run@.service", "app-run-fdstore@.service", "app@.service"] {
        let text = std::fs::read_to_string(docs.join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"));
        let text = text
            .replace("ExecStart=/usr/local/bin/tableroll ", &format!("ExecStart={tableroll} "))
            .replace("-- /usr/local/bin/server", &format!("-- {server}"))
            .replace("ExecStart=/usr/local/bin/app\n", &format!("ExecStart={server}\n"));
        assert!(!text.contains("ExecStart=/usr/local"), "{name}: an ExecStart= left unreplaced");
        std::fs::write(into.join(name), text).unwrap();
    }
}

#[test]
fn the_documented_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    copy_units(dir.path());
    // Both instances of each template, and the socket unit with the service it starts.
    let units = [
        "app-run.socket",
        "app-run@1.service",
        "app-run@2.service",
        "app-run-fdstore@1.service",
        "app@1.service",
    ];
    let output = Command::new(SYSTEMD_ANALYZE)
        .args(["verify", "--man=no"])
        .args(units.iter().map(|unit| dir.path().join(unit)))
        .output()
        .unwrap_or_else(|e| panic!("running {SYSTEMD_ANALYZE} (Debian's systemd package): {e}"));
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && said.is_empty(), "systemd-analyze verify: {}\n{said}", output.status);
}

//! The group's journal (`<dir>/journal`, read with `tableroll::inspect::read_journal`): whole
//! lines from concurrent members, a bounded size across rotation, every event of an upgrade,
//! and upgrades that go on when the journal cannot be written.

mod util;

use std::collections::BTreeMap;
use std::io::Write;

use tableroll::inspect::{read_journal, JournalEntry};
use util::{assert_hello, http_get, inherited_ids, serving, Peer, TestDir};

const UPGRADES: usize = 50;
/// The journal's cap (`coordination::journal_file::CAP`): a part never holds much more.
const CAP: usize = 256 * 1024;

/// The events of member `id`, in order.
fn events_of<'a>(entries: &'a [JournalEntry], id: &str) -> Vec<&'a str> {
    entries.iter().filter(|e| e.id == id).map(|e| e.event.as_str()).collect()
}

/// A line of the test's own, as a foreign program might append.
fn filler_line(i: usize) -> String {
    format!("{{\"ts\":0,\"event\":\"filler\",\"id\":\"test\",\"pid\":1,\"n\":{i}}}\n")
}

#[test]
fn fifty_upgrades_with_concurrent_newcomers_leave_whole_lines_in_a_bounded_journal() {
    let dir = TestDir::new();
    // Nearly full: the upgrades below rotate it while several members write.
    let mut filler = std::fs::File::create(dir.join("journal")).unwrap();
    let mut filled = 0;
    let mut fillers = 0;
    while filled < CAP - 4096 {
        let line = filler_line(fillers);
        filler.write_all(line.as_bytes()).unwrap();
        filled += line.len();
        fillers += 1;
    }
    drop(filler);

    let (mut owner, addr) = serving(&dir, "p0", "127.0.0.1:0", &[]);
    let listen = format!("web=tcp:{addr}");
    for i in 1..=UPGRADES {
        // A newcomer that never becomes ready and the real next one start together: whichever
        // takes the lock first, the other waits for it, and three members write at once.
        let mut doomed =
            Peer::start(dir.path(), &["--id", &format!("k{i}"), "--listen", &listen, "--no-ready"]);
        let mut next = Peer::start(dir.path(), &["--id", &format!("p{i}"), "--listen", &listen, "--serve"]);
        assert_eq!(inherited_ids(&doomed.wait_for("inherited")), ["web"]);
        doomed.kill();
        next.wait_for("ready");
        owner.wait_for("upgrade_complete");
        owner.expect_clean_exit();
        owner = next;
    }
    assert_hello(http_get(&addr, "/"), &format!("p{UPGRADES}"));

    let mut bytes = Vec::new();
    for part in ["journal.1", "journal"] {
        let content = std::fs::read(dir.join(part)).unwrap_or_else(|e| panic!("{part}: {e}"));
        assert!(content.len() <= CAP + 1024, "{part} holds {} bytes", content.len());
        assert!(content.ends_with(b"\n"), "{part} ends inside a line");
        bytes.extend(content);
    }
    let read = read_journal(dir.path()).unwrap();
    assert_eq!(read.skipped, 0, "torn or interleaved lines");
    assert_eq!(read.entries.len(), bytes.iter().filter(|&&b| b == b'\n').count());
    let fillers_kept = read.entries.iter().filter(|e| e.event == "filler").count();
    assert_eq!(fillers_kept, fillers, "one rotation loses nothing");

    for i in 0..UPGRADES {
        let id = format!("p{i}");
        let events = events_of(&read.entries, &id);
        // The doomed newcomer of the next upgrade may have joined from this one (and failed,
        // killed), and so may the one after if the next won the lock first.
        let failed = events.iter().filter(|&&e| e == "handoff_failed").count();
        assert!(failed <= 2, "{id}: {events:?}");
        let events: Vec<&str> = events.into_iter().filter(|&e| e != "handoff_failed").collect();
        assert_eq!(events, ["joined", "committed", "handed_over", "stepped_down", "stopped"], "{id}");
        assert_eq!(events_of(&read.entries, &format!("k{}", i + 1)), ["joined"], "k{}", i + 1);
    }
    let mut by_id: BTreeMap<&str, &JournalEntry> = BTreeMap::new();
    for entry in read.entries.iter().filter(|e| e.event == "committed") {
        by_id.insert(&entry.id, entry);
    }
    for i in 1..=UPGRADES {
        let committed = by_id[format!("p{i}").as_str()];
        assert!(committed.number("ready_ms").is_some(), "{committed:?}");
        assert_eq!(committed.text("previous"), Some(format!("p{}", i - 1).as_str()), "{committed:?}");
    }
}

#[test]
fn upgrades_go_on_when_the_journal_cannot_be_written() {
    for blocker in ["a directory", "a named pipe nobody reads"] {
        let dir = TestDir::new();
        let path = dir.join("journal");
        match blocker {
            "a directory" => std::fs::create_dir(&path).unwrap(),
            _ => rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap(),
        }
        let (mut old, addr) = serving(&dir, "old", "127.0.0.1:0", &[]);
        let (_new, _) = serving(&dir, "new", &addr, &[]);
        old.wait_for("upgrade_complete");
        old.expect_clean_exit();
        assert_hello(http_get(&addr, "/"), "new");
        assert_eq!(dir.owner(), "new", "with {blocker} as the journal");
    }
}

#[test]
fn a_damaged_journal_is_read_around_and_appended_to() {
    let dir = TestDir::new();
    std::fs::write(dir.join("journal"), b"\xff\xfe not json\n{\"event\":\"no id\"}\n").unwrap();
    let (mut old, addr) = serving(&dir, "old", "127.0.0.1:0", &[]);
    let (_new, _) = serving(&dir, "new", &addr, &[]);
    old.wait_for("upgrade_complete");
    old.expect_clean_exit();
    let read = read_journal(dir.path()).unwrap();
    assert_eq!(read.skipped, 2);
    assert_eq!(events_of(&read.entries, "new"), ["joined", "committed"]);
    assert_eq!(
        events_of(&read.entries, "old"),
        ["joined", "committed", "handed_over", "stepped_down", "stopped"]
    );
}

#[test]
fn a_line_cut_short_by_a_full_disk_costs_no_other_line() {
    let dir = TestDir::new();
    let (mut old, addr) = serving(&dir, "old", "127.0.0.1:0", &[]);
    // The newcomer may write 8 KiB (`ulimit -f 16`, in 512-byte blocks) and finds the journal
    // 30 bytes short of that: its first line is cut short there, as on a full disk (the kernel
    // writes what fits, then refuses), and the signal the limit raises is ignored.
    const LIMIT: usize = 16 * 512;
    let path = dir.join("journal");
    let len = usize::try_from(std::fs::metadata(&path).unwrap().len()).unwrap();
    let (head, tail) = ("{\"ts\":0,\"event\":\"filler\",\"id\":\"test\",\"pid\":1,\"pad\":\"", "\"}\n");
    let pad = "x".repeat(LIMIT - 30 - len - head.len() - tail.len());
    let mut journal = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    journal.write_all(format!("{head}{pad}{tail}").as_bytes()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), (LIMIT - 30) as u64);

    let listen = format!("web=tcp:{addr}");
    let mut new = Peer::start_after_shell(
        dir.path(),
        "trap '' XFSZ; ulimit -f 16",
        &["--id", "new", "--listen", &listen, "--serve"],
    );
    new.wait_for("ready");
    old.wait_for("upgrade_complete");
    old.expect_clean_exit();
    assert_hello(http_get(&addr, "/"), "new");

    let bytes = std::fs::read(&path).unwrap();
    let cut = &bytes[LIMIT - 30..LIMIT];
    assert!(
        cut.starts_with(b"{\"") && !cut.contains(&b'\n'),
        "no line was cut at the limit: {:?}",
        String::from_utf8_lossy(cut)
    );
    let read = read_journal(dir.path()).unwrap();
    assert_eq!(read.skipped, 1, "only the cut line is lost");
    assert_eq!(events_of(&read.entries, "new"), Vec::<&str>::new(), "the newcomer could write nothing whole");
    assert_eq!(
        events_of(&read.entries, "old"),
        ["joined", "committed", "handed_over", "stepped_down", "stopped"]
    );
}

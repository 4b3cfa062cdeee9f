use serde_json::{json, Value};

use super::*;

/// A journal entry of member `id` (pid `pid`): `event` with `fields`.
fn entry(id: &str, pid: u32, event: &str, fields: Value) -> JournalEntry {
    let mut line = json!({ "ts": 1.0, "event": event, "id": id, "pid": pid });
    if let (Value::Object(line), Value::Object(fields)) = (&mut line, fields) {
        line.extend(fields);
    }
    serde_json::from_value(line).expect("a journal entry")
}

fn joined(id: &str, pid: u32, from: Option<&str>) -> JournalEntry {
    entry(id, pid, "joined", json!({ "from": from, "descriptors": 1, "join_ms": 1.0 }))
}

fn committed(id: &str, pid: u32, previous: Option<&str>) -> JournalEntry {
    entry(id, pid, "committed", json!({ "previous": previous, "ready_ms": 1.0 }))
}

fn handed_over(from: &str, new_owner: &str, newcomer_pid: u32) -> JournalEntry {
    entry(from, 10, "handed_over", json!({ "new_owner": new_owner, "newcomer_pid": newcomer_pid }))
}

/// The owner `old` gave up its handoff to process `newcomer_pid`.
fn handoff_failed(newcomer_pid: u32, kind: &str, reason: &str) -> JournalEntry {
    entry(
        "old",
        10,
        "handoff_failed",
        json!({ "newcomer_pid": newcomer_pid, "kind": kind, "reason": reason }),
    )
}

fn stepped_down(from: &str, new_owner: &str, after_probation: bool) -> JournalEntry {
    entry(from, 10, "stepped_down", json!({ "new_owner": new_owner, "after_probation": after_probation }))
}

/// Feeds `entries` to a judge of an attempt against the live owner `old`; the first verdict.
fn judge(entries: &[JournalEntry]) -> (Judge, Option<Verdict>) {
    let mut judge = Judge::new(Some("old".into()), true);
    let verdict = entries.iter().find_map(|e| judge.see(e));
    (judge, verdict)
}

fn failure(verdict: Option<Verdict>) -> (Reason, Newcomer, String) {
    match verdict {
        Some(Verdict::Failed { reason, newcomer, message }) => (reason, newcomer, message),
        other => panic!("not a failure: {other:?}"),
    }
}

fn succeeded(new_owner: &str, how: Success) -> Option<Verdict> {
    Some(Verdict::Succeeded { new_owner: new_owner.into(), how })
}

#[test]
fn a_commit_succeeds_once_the_owner_stepped_down_in_either_order() {
    let (mut waiting, verdict) = judge(&[joined("new", 20, Some("old")), committed("new", 20, Some("old"))]);
    assert_eq!(verdict, None, "the owner's decision is awaited");
    assert_eq!(waiting.see(&stepped_down("old", "new", false)), succeeded("new", Success::SteppedDown));

    // The old owner writes its lines before the newcomer writes `committed`.
    let (_, verdict) = judge(&[
        joined("new", 20, Some("old")),
        handed_over("old", "new", 20),
        stepped_down("old", "new", false),
    ]);
    assert_eq!(verdict, succeeded("new", Success::SteppedDown));
}

#[test]
fn with_probation_the_verdict_waits_for_its_end() {
    let on_probation = entry("old", 10, "on_probation", json!({ "new_owner": "new", "window_ms": 100.0 }));
    let (mut waiting, verdict) =
        judge(&[joined("new", 20, Some("old")), committed("new", 20, Some("old")), on_probation.clone()]);
    assert_eq!(verdict, None);
    assert!(waiting.progress().contains("probation of old has not ended"), "{}", waiting.progress());
    assert_eq!(waiting.see(&stepped_down("old", "new", true)), succeeded("new", Success::ProbationPassed));

    let (mut waiting, _) = judge(&[joined("new", 20, Some("old")), on_probation]);
    let rolled_back = entry("old", 10, "rolled_back", json!({ "failed_owner": "new", "took_ms": 2.0 }));
    let (reason, newcomer, message) = failure(waiting.see(&rolled_back));
    assert_eq!((reason, newcomer.id.as_deref()), (Reason::RolledBack, Some("new")));
    assert!(message.starts_with("rolled back: new died during the probation of old"), "{message}");
}

#[test]
fn ready_failures_are_worded_by_kind() {
    for (kind, expected, word) in [
        ("OwnerRefused", Reason::Refused, "refused: "),
        ("Timeout", Reason::TimedOut, "timed out: "),
        ("Io", Reason::ReadyFailed, "new (pid 20) could not become the owner (Io): "),
    ] {
        let failed = entry("new", 20, "ready_failed", json!({ "kind": kind, "reason": "the reason" }));
        let (reason, newcomer, message) = failure(judge(&[joined("new", 20, Some("old")), failed]).1);
        assert_eq!(reason, expected);
        assert_eq!(newcomer, Newcomer { id: Some("new".into()), pid: Some(20) });
        assert!(message.starts_with(word) && message.contains("the reason"), "{message}");
    }
}

#[test]
fn the_owner_giving_up_explains_the_newcomer_end() {
    let gave_up = handoff_failed(20, "Protocol", "a wrong byte");
    let refused = entry("new", 20, "ready_failed", json!({ "kind": "OwnerRefused", "reason": "closed" }));
    let (mut waiting, verdict) = judge(&[joined("new", 20, Some("old")), gave_up.clone()]);
    assert_eq!(verdict, None, "the newcomer's own end decides");
    let (reason, _, message) = failure(waiting.see(&refused));
    assert_eq!(reason, Reason::Refused);
    assert!(message.ends_with("(old gave up the handoff: Protocol: a wrong byte)"), "{message}");

    // A process the handoff failed for, that never joined, and exited.
    let (mut waiting, verdict) = judge(&[gave_up]);
    assert_eq!(verdict, None);
    assert_eq!(waiting.newcomer().and_then(|n| n.pid), Some(20));
    let (reason, _, message) = failure(waiting.newcomer_died());
    assert_eq!(reason, Reason::HandoffFailed);
    assert!(message.starts_with("the handoff to pid 20 failed"), "{message}");
}

#[test]
fn the_owners_upgrade_timeout_passing_decides_the_attempt_timed_out() {
    let gave_up = handoff_failed(20, "Timeout", "late");
    let (_, verdict) = judge(&[joined("new", 20, Some("old")), gave_up]);
    let (reason, _, message) = failure(verdict);
    assert_eq!(reason, Reason::TimedOut);
    assert!(message.starts_with("timed out: old gave up waiting for new (pid 20)"), "{message}");
    // A timeout for another process's handoff says nothing of this one.
    let other = handoff_failed(21, "Timeout", "late");
    assert_eq!(judge(&[joined("new", 20, Some("old")), other]).1, None);
}

#[test]
fn a_newcomer_that_stops_or_dies_before_ready_fails_the_attempt() {
    let (_, verdict) = judge(&[joined("new", 20, Some("old")), entry("new", 20, "stopped", json!({}))]);
    assert_eq!(failure(verdict).0, Reason::Stopped);

    let (mut waiting, verdict) = judge(&[joined("new", 20, Some("old"))]);
    assert_eq!(verdict, None);
    let (reason, _, message) = failure(waiting.newcomer_died());
    assert_eq!((reason, message.as_str()), (Reason::Died, "new (pid 20) died before it was ready"));

    // Its exit unseen, another process joining after it tells the same.
    let (_, verdict) = judge(&[joined("new", 20, Some("old")), joined("next", 21, Some("old"))]);
    let (reason, newcomer, message) = failure(verdict);
    assert_eq!((reason, newcomer.id.as_deref()), (Reason::Died, Some("new")));
    assert!(message.contains("next came after it"), "{message}");
}

#[test]
fn the_newcomer_dying_after_it_took_over_is_for_the_owner_to_judge() {
    let (mut waiting, _) = judge(&[joined("new", 20, Some("old")), committed("new", 20, Some("old"))]);
    assert_eq!(waiting.newcomer_died(), None);
    assert_eq!(waiting.owner_died(), succeeded("new", Success::FromGone));
}

#[test]
fn only_attempts_from_the_owner_count() {
    let (mut waiting, verdict) = judge(&[
        joined("elsewhere", 30, Some("other")),
        committed("elsewhere", 30, Some("other")),
        entry("elsewhere", 30, "stopped", json!({})),
    ]);
    assert_eq!(verdict, None);
    assert_eq!(waiting.newcomer(), None);
    assert_eq!(waiting.newcomer_died(), None, "nothing to die");
    assert_eq!(waiting.owner_died(), None, "no commit yet");
    assert_eq!(waiting.progress(), "no newcomer joined from old");
}

#[test]
fn without_a_live_owner_the_first_to_join_is_judged_at_its_commit() {
    let mut judge = Judge::new(None, false);
    assert_eq!(judge.see(&joined("first", 20, None)), None);
    assert_eq!(judge.see(&joined("second", 21, None)), None, "the lock lets one in: the first decides");
    assert_eq!(judge.see(&committed("first", 20, None)), succeeded("first", Success::NoOwner));

    // An owner given but found dead: its decision is not awaited.
    let mut judge = Judge::new(Some("old".into()), false);
    assert_eq!(judge.see(&joined("new", 20, Some("old"))), None);
    assert_eq!(judge.see(&committed("new", 20, Some("old"))), succeeded("new", Success::NoOwner));
}

#[test]
fn an_owner_that_changed_before_it_was_read_is_found_in_the_entries() {
    let entries =
        [joined("new", 20, Some("old")), handed_over("old", "new", 20), committed("new", 20, Some("old"))];
    assert_eq!(owner_before(&entries, "new"), Some(("old".to_owned(), Some(10))));
    assert_eq!(owner_before(&entries, "old"), None);
    assert_eq!(owner_before(&entries[..1], "new"), None);
}

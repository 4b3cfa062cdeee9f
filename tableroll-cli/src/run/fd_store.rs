//! `--fd-store`: the owner's listeners kept in systemd's file descriptor store of its unit, so
//! that the unit started again after every process of it died (`Restart=`) is passed them back
//! as socket activation, and adopts them: connections that came meanwhile wait in the backlog.
//!
//! Each listener goes as one `FDSTORE=1` message named after its `--listen` (systemd drops a
//! socket it already holds); a name no longer listened on is removed with `FDSTOREREMOVE=1`, and
//! so is a name whose stored socket may not be the one listened on now, before it is stored.
//! A message that cannot be sent is logged: the instance serves on either way.

use std::os::fd::OwnedFd;

use serde_json::json;

use super::log::Log;

/// Stores each listener under its name; what was stored under a name in `replace` is removed
/// first (it may be another socket than the one listened on now). Logs what was done.
pub fn store(listeners: &[(String, OwnedFd)], replace: &[String], log: &Log) {
    for (name, fd) in listeners {
        let replaced = replace.contains(name);
        if replaced {
            if let Err(e) = tableroll::systemd::remove_stored_fd(name) {
                removal_failed(name, &e, log);
            }
        }
        match tableroll::systemd::store_fd(name, fd) {
            Ok(true) => log.event(
                "fd_stored",
                &format!("listener {name} stored in systemd's file descriptor store"),
                json!({ "name": name, "replaced": replaced }),
            ),
            Ok(false) => {
                log.event(
                    "fd_store_unavailable",
                    "--fd-store: NOTIFY_SOCKET is not set (not run by systemd?); nothing stored",
                    json!({}),
                );
                return;
            }
            Err(e) => log.event(
                "fd_store_failed",
                &format!("could not store listener {name} with systemd: {e}"),
                json!({ "name": name }),
            ),
        }
    }
}

/// Removes the descriptors stored under each of `names`; logs what was done.
pub fn remove(names: &[String], log: &Log) {
    for name in names {
        match tableroll::systemd::remove_stored_fd(name) {
            Ok(true) => log.event(
                "fd_store_removed",
                &format!("{name} removed from systemd's file descriptor store: no --listen has that name"),
                json!({ "name": name }),
            ),
            Ok(false) => return,
            Err(e) => removal_failed(name, &e, log),
        }
    }
}

/// Logs that the descriptor stored under `name` could not be removed, and why.
fn removal_failed(name: &str, error: &dyn std::fmt::Display, log: &Log) {
    let message = format!("could not remove {name} from systemd's file descriptor store: {error}");
    log.event("fd_store_failed", &message, json!({ "name": name }));
}

//! Who may take part in a handoff with this process: [`PeerPolicy`], checked against the peer
//! credentials the kernel recorded for the other end of each upgrade connection.

use std::os::unix::net::UnixStream;

use crate::error::{Error, Result};
use crate::sys::peer_cred::{effective_uid, peer_cred};

/// Which processes may connect to this process's upgrade socket and receive its descriptors,
/// checked with `SO_PEERCRED` on every connection before anything is sent (and, on the
/// newcomer's side, applied to the owner it connects to).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerPolicy {
    /// Processes of this process's effective user, and root. The default.
    #[default]
    SameUserOrRoot,
    /// Any user that can reach the socket (it is created mode 0600, so the file system still
    /// restricts who can).
    AnyUser,
    /// Only these user ids.
    Uids(Vec<u32>),
}

impl PeerPolicy {
    fn allows(&self, uid: u32) -> bool {
        match self {
            PeerPolicy::SameUserOrRoot => uid == 0 || uid == effective_uid(),
            PeerPolicy::AnyUser => true,
            PeerPolicy::Uids(uids) => uids.contains(&uid),
        }
    }

    /// Whether the process at the other end of `stream` may take part; `reading` names the
    /// credentials read for an error (the owner's, or a newcomer's).
    pub(crate) fn check(&self, stream: &UnixStream, reading: &'static str) -> Result<()> {
        let cred = peer_cred(stream).map_err(|e| Error::io(reading, e))?;
        if self.allows(cred.uid) {
            Ok(())
        } else {
            Err(Error::peer_refused(cred.pid_number(), cred.uid))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_user_is_allowed_and_a_list_can_exclude_it() {
        let (a, _b) = UnixStream::pair().unwrap();
        PeerPolicy::SameUserOrRoot.check(&a, "test").unwrap();
        PeerPolicy::AnyUser.check(&a, "test").unwrap();
        let me = effective_uid();
        PeerPolicy::Uids(vec![me]).check(&a, "test").unwrap();
        let other = me.wrapping_add(1);
        assert!(matches!(
            (PeerPolicy::Uids(vec![other]).check(&a, "test")).map_err(|e| e.kind()),
            Err(crate::ErrorKind::PeerRefused)
        ));
    }
}

//! Every system call the library makes beyond std, in one private layer.
//!
//! The layers above speak in owned descriptors and domain words; here is where those become
//! `poll(2)`, `flock(2)`, pidfds, peer credentials, `SCM_RIGHTS` messages, Unix socket binds and
//! connects, the kernel's tables under `/proc`, `O_NOFOLLOW` opens, inotify, eventfds and pipes.
//! Each function retries `EINTR` where a retry is the only sensible answer, and returns
//! `std::io::Error` with the OS error intact.

pub(crate) mod files;
pub(crate) mod flock;
pub(crate) mod inotify;
pub(crate) mod lock_table;
pub(crate) mod peer_cred;
pub(crate) mod pidfd;
pub(crate) mod poll;
pub(crate) mod scm_rights;
pub(crate) mod socket_table;
pub(crate) mod stream;
pub(crate) mod unix_socket;
pub(crate) mod wake;

//! The supervisor's own socket activation: listening sockets that systemd passed to `tableroll
//! run` itself (from a socket unit, or back from the unit's file descriptor store), adopted as
//! the `--listen` of the same name when no running instance handed that one over.
//!
//! The variables are read as `sd_listen_fds(3)` reads them: only if `LISTEN_PID` is this
//! process, `LISTEN_FDS` descriptors from 3 on, named by `LISTEN_FDNAMES` (each `unknown` if it
//! is not set). The descriptors are taken, close-on-exec, and the variables removed, while the
//! supervisor still runs one thread: no readiness command or watchdog sees them, and the
//! program gets only the activation the supervisor gives it.
//!
//! Taking the descriptors is this command's second `unsafe` block (the other is in `exec`).

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use rustix::io::{fcntl_setfd, FdFlags};
use rustix::net::{sockopt, AddressFamily, SocketType};
use serde_json::json;

use super::args::{Listen, SocketSpec};
use super::exec::{inherited_open, FIRST_FD};
use super::log::Log;

/// The most descriptors accepted from `LISTEN_FDS`, far more than anyone listens on: a larger
/// number is a mistake, not a reason to walk thousands of descriptor numbers.
const MAX_LISTEN_FDS: usize = 4096;

/// The name `sd_listen_fds_with_names(3)` gives a descriptor `LISTEN_FDNAMES` does not name.
const UNNAMED: &str = "unknown";

/// One descriptor passed by socket activation, and its name.
pub struct Activated {
    name: String,
    fd: OwnedFd,
    /// The number it was passed as, for log lines.
    number: RawFd,
}

/// What the supervisor was passed by socket activation (nothing, if it was not activated).
pub struct Activation {
    fds: Vec<Activated>,
}

/// What adoption did: the `--listen` names now served by an activated socket, and the
/// activated names no `--listen` uses (their descriptors were closed), and the `--listen` names
/// of which an activated descriptor was closed in favour of another socket (the inherited one, or
/// the first of two passed under one name): with `--fd-store`, what is stored under those names
/// is replaced, so that a socket no longer used does not stay in the store.
#[derive(Debug, Default)]
pub struct Adopted {
    pub names: Vec<String>,
    pub unused: Vec<String>,
    pub replaced: Vec<String>,
}

/// Whether [`Activation::take_from_env`] ran in this process.
static TAKEN: AtomicBool = AtomicBool::new(false);

impl Activation {
    /// Takes the descriptors passed to this process, if `LISTEN_PID` names it, and removes
    /// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` from the environment (also when they
    /// were not for this process, as `sd_listen_fds(1)` does). Call it before any other thread
    /// starts: the environment is changed.
    ///
    /// # Errors
    ///
    /// The variables are for this process but malformed (a `LISTEN_FDS` that is not a count,
    /// names that do not match it), a passed descriptor is not open, or it ran before.
    pub fn take_from_env() -> anyhow::Result<Activation> {
        let var = |name: &str| std::env::var(name).ok();
        let (pid, count, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(name);
        }
        let parsed = parse(std::process::id(), pid.as_deref(), count.as_deref(), names.as_deref())
            .map_err(|e| anyhow::anyhow!("the socket activation passed to tableroll run: {e}"))?;
        let Some(names) = parsed else { return Ok(Activation { fds: Vec::new() }) };
        if TAKEN.swap(true, Ordering::SeqCst) {
            anyhow::bail!("the activated descriptors were already taken");
        }
        let mut fds = Vec::with_capacity(names.len());
        for (number, name) in (FIRST_FD..).zip(names) {
            let fd =
                take(number).with_context(|| format!("taking descriptor {number} ({name}) of LISTEN_FDS"))?;
            fds.push(Activated { name, fd, number });
        }
        Ok(Activation { fds })
    }

    /// Puts each activated socket that a `--listen` of the same name asks for into the
    /// upgrader's store, unless the running instance handed that name over (its socket wins,
    /// and the activated one is closed). The others are closed. Every step is logged.
    ///
    /// # Errors
    ///
    /// An activated socket is not what its `--listen` asks for (another kind, or another
    /// address), or the store refused it.
    pub fn adopt(
        self,
        upgrader: &tableroll::Upgrader,
        listens: &[Listen],
        log: &Log,
    ) -> anyhow::Result<Adopted> {
        let mut adopted = Adopted::default();
        for Activated { name, fd, number } in self.fds {
            let fields = json!({ "name": name, "fd": number });
            let Some(listen) = listens.iter().find(|l| l.name == name) else {
                let message =
                    format!("closing activated descriptor {number} ({name}): no --listen has that name");
                log.event("activation_unused", &message, fields);
                adopted.unused.push(name);
                continue;
            };
            if upgrader.inherited_ids().contains(&name) {
                let message = format!(
                    "closing activated descriptor {number} ({name}): the running instance handed \
                     {name} over, and its socket is kept"
                );
                log.event("activation_superseded", &message, fields);
                adopted.replaced.push(name);
                continue;
            }
            if adopted.names.contains(&name) {
                let message = format!(
                    "closing activated descriptor {number}: {name} was passed twice, the first is kept"
                );
                log.event("activation_unused", &message, fields);
                adopted.replaced.push(name);
                continue;
            }
            let address = insert(upgrader, listen, fd).with_context(|| {
                format!("adopting descriptor {number} ({name}) passed by socket activation")
            })?;
            log.event(
                "adopted",
                &format!("adopted descriptor {number} passed by socket activation as listener {name}"),
                json!({ "name": name, "fd": number, "address": address }),
            );
            adopted.names.push(name);
        }
        Ok(adopted)
    }
}

/// Checks the values of `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` for process `pid`: the
/// names of the descriptors from 3 on, or `None` if the variables are not for this process.
fn parse(
    pid: u32,
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
) -> Result<Option<Vec<String>>, String> {
    let Some(listen_pid) = listen_pid else { return Ok(None) };
    match listen_pid.parse::<u32>() {
        Ok(p) if p == pid => {}
        Ok(_) => return Ok(None),
        Err(_) => return Err(format!("LISTEN_PID {listen_pid:?} is not a pid")),
    }
    let listen_fds = listen_fds.ok_or("LISTEN_PID is this process but LISTEN_FDS is not set")?;
    let count = match listen_fds.parse::<usize>() {
        Ok(n) if n <= MAX_LISTEN_FDS => n,
        _ => return Err(format!("LISTEN_FDS {listen_fds:?} is not a number from 0 to {MAX_LISTEN_FDS}")),
    };
    match listen_fdnames {
        None => Ok(Some(vec![UNNAMED.to_string(); count])),
        Some(names) => {
            let names: Vec<String> = names.split(':').map(str::to_string).collect();
            if names.len() != count && !(count == 0 && names == [""]) {
                return Err(format!("LISTEN_FDNAMES has {} names for LISTEN_FDS={count}", names.len()));
            }
            Ok(Some(names.into_iter().take(count).collect()))
        }
    }
}

/// Takes descriptor `number`, passed by socket activation, and makes it close-on-exec.
#[allow(unsafe_code)]
fn take(number: RawFd) -> io::Result<OwnedFd> {
    if !inherited_open(number)? {
        return Err(io::Error::other("it is not open, or it is close-on-exec (not passed through exec)"));
    }
    // SAFETY: `number` is open and not close-on-exec, so it came through `exec` (std and rustix
    // open everything close-on-exec); LISTEN_PID names this process, so it was passed to it
    // to take, and this is the one place that takes it, once (`take_from_env` checks TAKEN).
    // Nothing else in this process owns it or closes descriptors it does not own.
    let fd = unsafe { OwnedFd::from_raw_fd(number) };
    fcntl_setfd(&fd, FdFlags::CLOEXEC)?;
    Ok(fd)
}

/// What an activated descriptor turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    TcpListener(SocketAddr),
    Udp(SocketAddr),
    UnixListener(Option<PathBuf>),
    /// Anything else, described.
    Other(String),
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::TcpListener(addr) => write!(f, "a TCP listener on {addr}"),
            Found::Udp(addr) => write!(f, "a UDP socket on {addr}"),
            Found::UnixListener(Some(path)) => write!(f, "a Unix stream listener at {}", path.display()),
            Found::UnixListener(None) => {
                f.write_str("a Unix stream listener without a path (abstract or unnamed)")
            }
            Found::Other(what) => f.write_str(what),
        }
    }
}

/// Checks `fd` against `listen` and stores it under its name; the address, for the log.
fn insert(upgrader: &tableroll::Upgrader, listen: &Listen, fd: OwnedFd) -> anyhow::Result<String> {
    let (found, fd) = identify(fd).context("looking at the socket")?;
    fits(&listen.socket, &found).map_err(|wanted| {
        anyhow::anyhow!("it is {found}, but --listen {} asks for {wanted}", listen.describe())
    })?;
    let fds = upgrader.fds();
    let name = listen.name.as_str();
    match &listen.socket {
        SocketSpec::Tcp(_) => drop(fds.get_or_insert_with(name, || Ok(TcpListener::from(fd)))?),
        SocketSpec::Udp(_) => drop(fds.get_or_insert_with(name, || Ok(UdpSocket::from(fd)))?),
        SocketSpec::Unix(_) => drop(fds.get_or_insert_with(name, || Ok(UnixListener::from(fd)))?),
    }
    Ok(match found {
        Found::TcpListener(addr) | Found::Udp(addr) => addr.to_string(),
        other => other.to_string(),
    })
}

/// What `fd` is: a TCP or Unix stream listener, a UDP socket (with its address), or else what.
fn identify(fd: OwnedFd) -> io::Result<(Found, OwnedFd)> {
    let kind = match sockopt::socket_type(&fd) {
        Ok(kind) => kind,
        Err(rustix::io::Errno::NOTSOCK) => return Ok((Found::Other("not a socket".into()), fd)),
        Err(e) => return Err(e.into()),
    };
    let domain = sockopt::socket_domain(&fd)?;
    let inet = domain == AddressFamily::INET || domain == AddressFamily::INET6;
    let listening = kind == SocketType::STREAM && sockopt::socket_acceptconn(&fd)?;
    Ok(if inet && listening {
        let listener = TcpListener::from(fd);
        (Found::TcpListener(listener.local_addr()?), listener.into())
    } else if inet && kind == SocketType::DGRAM {
        let socket = UdpSocket::from(fd);
        (Found::Udp(socket.local_addr()?), socket.into())
    } else if domain == AddressFamily::UNIX && listening {
        let listener = UnixListener::from(fd);
        let path = listener.local_addr()?.as_pathname().map(Path::to_path_buf);
        (Found::UnixListener(path), listener.into())
    } else {
        let what = match (inet, domain == AddressFamily::UNIX, kind) {
            (true, _, SocketType::STREAM) => "a TCP socket that is not listening".to_string(),
            (_, true, SocketType::STREAM) => "a Unix stream socket that is not listening".to_string(),
            (_, true, SocketType::DGRAM) => "a Unix datagram socket".to_string(),
            _ => format!("a socket of family {} and type {}", domain.as_raw(), kind.as_raw()),
        };
        (Found::Other(what), fd)
    })
}

/// Whether `found` is what `spec` asks for, as the library's store decides whether a stored
/// socket fits (a port 0 accepts any port; either unspecified address matches the other);
/// if not, what `spec` asks for, in words.
fn fits(spec: &SocketSpec, found: &Found) -> Result<(), String> {
    let inet_fits = |wanted: &str, actual: &SocketAddr| -> Result<bool, String> {
        let wanted: Vec<SocketAddr> =
            wanted.to_socket_addrs().map_err(|e| format!("{wanted}, which does not resolve: {e}"))?.collect();
        Ok(wanted.iter().any(|w| {
            let ip = w.ip() == actual.ip() || (w.ip().is_unspecified() && actual.ip().is_unspecified());
            ip && (w.port() == 0 || w.port() == actual.port())
        }))
    };
    let same_path = |wanted: &Path, actual: &Path| {
        wanted == actual || std::path::absolute(wanted).ok() == std::path::absolute(actual).ok()
    };
    match (spec, found) {
        (SocketSpec::Tcp(wanted), Found::TcpListener(actual)) if inet_fits(wanted, actual)? => Ok(()),
        (SocketSpec::Udp(wanted), Found::Udp(actual)) if inet_fits(wanted, actual)? => Ok(()),
        (SocketSpec::Unix(wanted), Found::UnixListener(Some(actual))) if same_path(wanted, actual) => Ok(()),
        (SocketSpec::Tcp(wanted), _) => Err(format!("a TCP listener on {wanted}")),
        (SocketSpec::Udp(wanted), _) => Err(format!("a UDP socket on {wanted}")),
        (SocketSpec::Unix(wanted), _) => Err(format!("a Unix stream listener at {}", wanted.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_count_only_for_this_process() {
        assert_eq!(parse(7, None, Some("1"), Some("web")), Ok(None));
        assert_eq!(parse(7, Some("8"), Some("1"), Some("web")), Ok(None));
        assert_eq!(
            parse(7, Some("7"), Some("2"), Some("web:admin")),
            Ok(Some(vec!["web".into(), "admin".into()]))
        );
        assert_eq!(parse(7, Some("7"), Some("2"), None), Ok(Some(vec!["unknown".into(), "unknown".into()])));
        assert_eq!(parse(7, Some("7"), Some("0"), Some("")), Ok(Some(vec![])));
    }

    #[test]
    fn malformed_variables_for_this_process_are_errors() {
        for (pid, fds, names) in [
            (Some("seven"), Some("1"), None),
            (Some("7"), None, None),
            (Some("7"), Some("-1"), None),
            (Some("7"), Some("x"), None),
            (Some("7"), Some("4097"), None),
            (Some("7"), Some("99999999999999999999999"), None),
            (Some("7"), Some("2"), Some("web")),
            (Some("7"), Some("1"), Some("web:admin")),
        ] {
            let parsed = parse(7, pid, fds, names);
            assert!(parsed.is_err(), "{pid:?} {fds:?} {names:?}: {parsed:?}");
        }
    }

    #[test]
    fn sockets_are_identified_and_checked_against_the_spec() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let (found, _) = identify(tcp.into()).unwrap();
        assert_eq!(found, Found::TcpListener(SocketAddr::from(([127, 0, 0, 1], port))));
        assert_eq!(fits(&SocketSpec::Tcp(format!("127.0.0.1:{port}")), &found), Ok(()));
        assert_eq!(fits(&SocketSpec::Tcp("127.0.0.1:0".into()), &found), Ok(()));
        let other_port = if port == 1 { 2 } else { port - 1 };
        let wrong = fits(&SocketSpec::Tcp(format!("127.0.0.1:{other_port}")), &found);
        assert_eq!(wrong, Err(format!("a TCP listener on 127.0.0.1:{other_port}")));
        assert!(fits(&SocketSpec::Udp(format!("127.0.0.1:{port}")), &found).is_err());

        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (found, _) = identify(udp.into()).unwrap();
        assert!(matches!(found, Found::Udp(_)), "{found:?}");
        assert!(fits(&SocketSpec::Udp("127.0.0.1:0".into()), &found).is_ok());
        assert!(fits(&SocketSpec::Tcp("127.0.0.1:0".into()), &found).is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.sock");
        let unix = UnixListener::bind(&path).unwrap();
        let (found, _) = identify(unix.into()).unwrap();
        assert_eq!(found, Found::UnixListener(Some(path.clone())));
        assert!(fits(&SocketSpec::Unix(path.clone()), &found).is_ok());
        assert!(fits(&SocketSpec::Unix(dir.path().join("other.sock")), &found).is_err());

        let (connected, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let (found, _) = identify(connected.into()).unwrap();
        assert_eq!(found.to_string(), "a Unix stream socket that is not listening");
        let file = std::fs::File::open("/dev/null").unwrap();
        let (found, _) = identify(file.into()).unwrap();
        assert_eq!(found.to_string(), "not a socket");
    }
}

//! systemd's readiness protocol (`sd_notify(3)`): `READY=1` once the agent serves, `STOPPING=1`
//! when it shuts down, sent as one datagram to the unix socket named by `NOTIFY_SOCKET`.
//!
//! The variable is taken out of the environment at start ([`take_socket_from_env`]), so the
//! processes the agent starts (shims, runc, containers) never inherit it: runc has its own
//! `NOTIFY_SOCKET` handling for containers, and systemd would ignore their messages anyway
//! (`NotifyAccess=main`). Without the variable every notification is a no-op.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;

/// The environment variable systemd sets for `Type=notify` services.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

static SOCKET: OnceLock<Option<OsString>> = OnceLock::new();

/// Reads `NOTIFY_SOCKET` and removes it from the environment. Call once, while the process is
/// still single-threaded (before the tokio runtime starts).
pub fn take_socket_from_env() {
    let socket = std::env::var_os(NOTIFY_SOCKET);
    if socket.is_some() {
        std::env::remove_var(NOTIFY_SOCKET);
    }
    let _ = SOCKET.set(socket);
}

/// Tells the service manager that the agent is ready (its API serves).
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={status}\n"));
}

/// Tells the service manager that the agent is stopping.
pub fn stopping() {
    notify("STOPPING=1\n");
}

fn notify(message: &str) {
    let Some(Some(socket)) = SOCKET.get() else {
        return;
    };
    match send(socket, message) {
        Ok(()) => tracing::debug!(socket = ?socket, message, "notified the service manager"),
        Err(e) => tracing::warn!(
            socket = ?socket,
            error = %e,
            "notifying the service manager (sd_notify) failed"
        ),
    }
}

/// Sends `message` as one datagram to `socket`: a path, or `@name` for an abstract socket.
fn send(socket: &OsStr, message: &str) -> io::Result<()> {
    let bytes = socket.as_bytes();
    let addr = match bytes.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        Some((b'/', _)) => SocketAddr::from_pathname(socket)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {socket:?} is neither an absolute path nor @abstract"),
            ))
        }
    };
    let sent = UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", message.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// A fresh, empty directory for this test's sockets.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("kubenode-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn sends_one_datagram_to_a_path_socket() {
        let dir = scratch("notify-path");
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=x\n").unwrap();
        assert_eq!(recv(&sock), "READY=1\nSTATUS=x\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("kubenode-notify-test-{}", std::process::id());
        let sock =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send(OsStr::new(&format!("@{name}")), "STOPPING=1\n").unwrap();
        assert_eq!(recv(&sock), "STOPPING=1\n");
    }

    #[test]
    fn rejects_a_relative_socket_name_and_a_missing_listener() {
        let e = send(OsStr::new("relative.sock"), "READY=1\n").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let dir = scratch("notify-absent");
        assert!(send(dir.join("absent.sock").as_os_str(), "READY=1\n").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

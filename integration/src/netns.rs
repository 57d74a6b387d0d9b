//! Network namespaces ("nodes", "pods", "clients") and veth links between them.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context;

use crate::cmd::{run, run_ok};

const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// A named network namespace (`ip netns add`), with its loopback up. On drop every process still
/// inside it is killed and the namespace is deleted, also after a panic.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `<tag>` (use a [`crate::unique_tag`], optionally with a suffix).
    pub fn new(name: &str) -> anyhow::Result<Netns> {
        run_ok(Command::new("ip").args(["netns", "add", name]), IP_TIMEOUT)
            .with_context(|| format!("creating netns {name}"))?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its path, `/run/netns/<name>`, for CNI and OCI specs.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `argv` inside the namespace with a 60 s timeout (a non-zero exit is not an error).
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<Output> {
        self.exec_timeout(argv, Duration::from_secs(60))
    }

    /// Runs `argv` inside the namespace with the given timeout.
    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        run(&mut self.command(argv), timeout)
    }

    /// A `Command` that runs `argv` inside the namespace (for callers that spawn it themselves).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// Runs a shell script inside the namespace; a non-zero exit is an error. Returns stdout.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        let out = run_ok(
            &mut self.command(&["sh", "-c", script]),
            Duration::from_secs(60),
        )
        .with_context(|| format!("in netns {}", self.name))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a new thread that has entered the namespace (only that thread does: the
    /// test runner's threads keep their namespace).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let file = std::fs::File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    use std::os::fd::AsRawFd;
                    // SAFETY: setns(2) on an open netns file descriptor; it changes only this thread's
                    // network namespace, and the thread ends with `f`.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(anyhow::anyhow!(
                            "setns: {}",
                            std::io::Error::last_os_error()
                        ));
                    }
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the thread in the namespace panicked"))?
        })
    }

    /// `ip <args>` inside the namespace; a non-zero exit is an error.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = run_ok(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            IP_TIMEOUT,
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = run(
            Command::new("ip").args(["netns", "pids", &self.name]),
            IP_TIMEOUT,
        ) {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill(2) with a pid read from `ip netns pids`; no memory is involved.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = run(
            Command::new("ip").args(["netns", "del", &self.name]),
            IP_TIMEOUT,
        );
    }
}

fn ip_in(ns: Option<&Netns>, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.arg("-n").arg(ns.name());
    }
    run_ok(cmd.args(args), IP_TIMEOUT)?;
    Ok(())
}

/// Creates a veth pair `a_if` (in `a`, or the host for `None`) ↔ `b_if` (in `b`), both up.
/// Deleting either end (or its namespace) deletes the pair.
pub fn veth(a: Option<&Netns>, a_if: &str, b: Option<&Netns>, b_if: &str) -> anyhow::Result<()> {
    let mut args = vec!["link", "add", a_if];
    if let Some(a) = a {
        args.extend(["netns", a.name()]);
    }
    args.extend(["type", "veth", "peer", "name", b_if]);
    if let Some(b) = b {
        args.extend(["netns", b.name()]);
    }
    run_ok(Command::new("ip").args(&args), IP_TIMEOUT)
        .with_context(|| format!("creating veth {a_if} <-> {b_if}"))?;
    link_up(a, a_if)?;
    link_up(b, b_if)
}

/// `ip addr add <cidr> dev <ifname>` in `ns` (or the host).
pub fn ip_addr_add(ns: Option<&Netns>, ifname: &str, cidr: &str) -> anyhow::Result<()> {
    ip_in(ns, &["addr", "add", cidr, "dev", ifname])
}

/// `ip link set <ifname> up` in `ns` (or the host).
pub fn link_up(ns: Option<&Netns>, ifname: &str) -> anyhow::Result<()> {
    ip_in(ns, &["link", "set", ifname, "up"])
}

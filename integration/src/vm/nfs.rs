//! A userspace NFSv4 server for VM guests: nfs-ganesha (VFS backend) on `127.0.0.1:2049`
//! exporting a temporary directory as `/export` (a guest reaches it as `10.0.2.2:/export`).
//!
//! The port is fixed (a pod's `nfs` volume has no port field, so the guest mounts on 2049): test
//! processes take turns through a lock file, held for the server's lifetime.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::lock::FileLock;
use crate::TestDir;

/// The server's address on the host.
pub const NFS_ADDR: &str = "127.0.0.1:2049";
/// The export's NFSv4 pseudo path.
pub const EXPORT_PATH: &str = "/export";
const LOCK_FILE: &str = "/run/lock/kubenode-test-nfs.lock";
const GANESHA: &str = "ganesha.nfsd";

/// A running ganesha; stopped (and its directories removed) on drop.
#[derive(Debug)]
pub struct NfsServer {
    child: Option<Child>,
    dir: TestDir,
    _lock: FileLock,
}

fn port_open() -> bool {
    let addr: SocketAddr = NFS_ADDR.parse().expect("valid address");
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

impl NfsServer {
    /// Starts ganesha in the foreground with an `EXPORT` of `/tmp/kn-<tag>/export` (mode 0777,
    /// `No_Root_Squash`, read-write) and waits (≤ 20 s) until it accepts connections.
    pub fn start(tag: &str) -> anyhow::Result<NfsServer> {
        std::fs::create_dir_all(Path::new(LOCK_FILE).parent().unwrap_or(Path::new("/")))?;
        let lock = FileLock::acquire(Path::new(LOCK_FILE))?;
        if port_open() {
            bail!("{NFS_ADDR} is already in use by something other than this test's server");
        }
        let dir = TestDir::new(tag)?;
        let export = dir.join("export");
        std::fs::create_dir_all(&export)?;
        std::fs::create_dir_all(dir.join("recovery"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&export, std::fs::Permissions::from_mode(0o777))?;
        let conf = dir.join("ganesha.conf");
        std::fs::write(
            &conf,
            format!(
                "NFS_CORE_PARAM {{ Protocols = 4; NFS_Port = 2049; Bind_addr = 127.0.0.1; \
                 Enable_NLM = false; Enable_RQUOTA = false; }}\n\
                 NFSv4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = {}; }}\n\
                 EXPORT {{ Export_Id = 1; Path = {}; Pseudo = {EXPORT_PATH}; Access_Type = RW; \
                 Squash = No_Root_Squash; Protocols = 4; Transports = TCP; FSAL {{ Name = VFS; }} }}\n",
                dir.join("recovery").display(),
                export.display()
            ),
        )?;
        let child = Command::new(GANESHA)
            .arg("-F")
            .arg("-f")
            .arg(&conf)
            .arg("-L")
            .arg(dir.join("ganesha.log"))
            .arg("-p")
            .arg(dir.join("ganesha.pid"))
            .args(["-N", "NIV_EVENT"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("ganesha.stderr"))?)
            .spawn()
            .context("starting ganesha.nfsd (apt-get install nfs-ganesha nfs-ganesha-vfs)")?;
        let mut server = NfsServer {
            child: Some(child),
            dir,
            _lock: lock,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("ganesha.nfsd exited ({status}):\n{}", server.log());
            }
            if port_open() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "ganesha.nfsd did not listen on {NFS_ADDR} within 20 s:\n{}",
            server.log()
        )
    }

    /// The exported directory on the host.
    pub fn export_dir(&self) -> PathBuf {
        self.dir.join("export")
    }

    /// ganesha's log (and its stderr).
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!("{}{}", read("ganesha.log"), read("ganesha.stderr"))
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first (ganesha shuts down cleanly), SIGKILL after 5 s.
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

//! Booting a kernel + initramfs under qemu (TCG: this machine's KVM guests hang) with a hard
//! timeout, the serial console streamed to a log file, and the guest's result read from markers
//! it prints there. qemu is killed when the [`Vm`] is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The qemu binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// A guest line `KNVM:PASS <step> [details]` reports a passed step.
pub const PASS: &str = "KNVM:PASS ";
/// A guest line `KNVM:FAIL <step>: <why>` reports a failed step.
pub const FAIL: &str = "KNVM:FAIL ";
/// A guest line `KNVM:DONE` says the guest finished (it powers off next).
pub const DONE: &str = "KNVM:DONE";

/// How to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs (cpio).
    pub initrd: PathBuf,
    /// Where the serial console is written.
    pub console_log: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Extra kernel command-line arguments.
    pub append: String,
    /// qemu is killed after this long, whatever the guest does.
    pub timeout: Duration,
}

/// A running qemu; killed on drop.
#[derive(Debug)]
pub struct Vm {
    child: Option<Child>,
    console_log: PathBuf,
    started: Instant,
    deadline: Instant,
}

/// What the guest reported on its console.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Markers {
    /// Passed steps, in order.
    pub passed: Vec<String>,
    /// Failed steps and why.
    pub failed: Vec<(String, String)>,
    /// Whether the guest printed [`DONE`].
    pub done: bool,
}

/// Reads the markers out of a console log (a marker may follow kernel noise on the same line).
pub fn parse_markers(console: &str) -> Markers {
    let mut m = Markers::default();
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(i) = line.find(PASS) {
            // `KNVM:PASS <step> [details]`: the step is the first word.
            let rest = line[i + PASS.len()..].trim();
            m.passed.push(
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        } else if let Some(i) = line.find(FAIL) {
            let rest = &line[i + FAIL.len()..];
            let (step, why) = rest.split_once(':').unwrap_or((rest, ""));
            m.failed
                .push((step.trim().to_string(), why.trim().to_string()));
        } else if line.contains(DONE) {
            m.done = true;
        }
    }
    m
}

/// Whether qemu is installed (the reason it is not otherwise).
pub fn qemu_missing() -> Option<String> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(QEMU).is_file()))
        .unwrap_or(false);
    (!found).then(|| format!("{QEMU} is not installed (apt-get install qemu-system-x86)"))
}

impl Vm {
    /// Starts qemu: no KVM, no display, no reboot (a guest `poweroff` or panic ends qemu), the
    /// first serial port into `console_log`, a user-mode network on a virtio NIC (the guest is
    /// 10.0.2.15, the host's loopback is 10.0.2.2).
    pub fn boot(cfg: &VmConfig) -> anyhow::Result<Vm> {
        let _ = std::fs::remove_file(&cfg.console_log);
        let qemu_log = cfg.console_log.with_extension("qemu.log");
        let stderr = std::fs::File::create(&qemu_log)?;
        let child = Command::new(QEMU)
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-machine", "q35", "-cpu", "max"])
            .args(["-m", &cfg.memory_mib.to_string()])
            .args(["-smp", &cfg.cpus.to_string()])
            .arg("-kernel")
            .arg(&cfg.kernel)
            .arg("-initrd")
            .arg(&cfg.initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 panic=-1 {}", cfg.append))
            .arg("-serial")
            .arg(format!("file:{}", cfg.console_log.display()))
            .args([
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-pci,netdev=n0",
            ])
            .args(["-no-reboot", "-monitor", "none"])
            .stdin(Stdio::null())
            .stdout(stderr.try_clone()?)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {QEMU} (apt-get install qemu-system-x86)"))?;
        let started = Instant::now();
        Ok(Vm {
            child: Some(child),
            console_log: cfg.console_log.clone(),
            started,
            deadline: started + cfg.timeout,
        })
    }

    /// The console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console_log).unwrap_or_default()).into_owned()
    }

    /// Waits until the guest prints [`DONE`], qemu exits, or the timeout passes (then qemu is
    /// killed); returns the markers. Only a failure to boot or finish is an error: the caller
    /// judges the markers.
    pub fn wait(&mut self) -> anyhow::Result<Markers> {
        loop {
            let console = self.console();
            let markers = parse_markers(&console);
            let exited = match self.child.as_mut() {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if markers.done || exited {
                if markers.done {
                    // Give the guest a moment to power off, then make sure qemu is gone.
                    let until = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < until
                        && self
                            .child
                            .as_mut()
                            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                self.kill();
                if !markers.done {
                    bail!(
                        "the guest stopped after {:?} without finishing; console tail:\n{}",
                        self.started.elapsed(),
                        crate::agent::tail(&console, 60)
                    );
                }
                return Ok(markers);
            }
            if Instant::now() >= self.deadline {
                self.kill();
                bail!(
                    "the guest did not finish within {:?}; console tail:\n{}",
                    self.deadline - self.started,
                    crate::agent::tail(&console, 60)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// How long the guest has run.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The console log file.
    pub fn console_log(&self) -> &Path {
        &self.console_log
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_after_kernel_noise() {
        let console = "[    1.0] virtio_net: ok\nKNVM:PASS boot\r\n[ 2.1] x KNVM:PASS agent-up (uptime 3.5 s)\n\
                       KNVM:FAIL pod: not Running: Pending\nKNVM:DONE\n";
        let m = parse_markers(console);
        assert_eq!(m.passed, vec!["boot", "agent-up"]);
        assert_eq!(
            m.failed,
            vec![("pod".to_string(), "not Running: Pending".to_string())]
        );
        assert!(m.done);
    }

    #[test]
    fn an_unfinished_console_is_not_done() {
        let m = parse_markers("KNVM:PASS boot\n");
        assert!(!m.done);
        assert!(m.failed.is_empty());
    }
}

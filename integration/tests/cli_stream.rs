//! The local CLI's streams (docs/architecture.md, "Node API"; issue 18's "Local CLI parity"),
//! against a real agent, through its unix socket:
//!
//! - `kubenode exec -i` with stdin piped: `cat` echoes it and ends with it; stdout and stderr
//!   stay apart; the exit code passes through (`exit 3`, with client-go's `command terminated
//!   with exit code 3`); `-t` without `-i`, or with stdin not a terminal, falls back to no
//!   terminal as kubectl (the latter with its message); an unknown pod is an error;
//! - `kubenode exec` without `-i`/`-t` streams: the command's first line is seen while the
//!   command still runs (it waits for a file the test makes only after seeing that line), then
//!   the rest; stdout and stderr apart, the exit code (4) ours after client-go's message;
//!   `--timeout` ends the session with an error naming it, the output so far printed, and the
//!   agent stops the command;
//! - `kubenode exec -it` under a pseudo-terminal (openpty, of 33x77): the container has a
//!   terminal (`tty`, `TERM=xterm` as containerd's, `stty size` says 33 77 once the first
//!   size is applied: a line makes it say the size again), the local terminal is in raw mode during the
//!   session and restored after it, a resize (TIOCSWINSZ + SIGWINCH) reaches the container
//!   (`stty size` says 40 100), Ctrl-D ends the shell's input and its exit code (5) is ours;
//! - `kubenode port-forward pod/NAME :http :9999`: `Forwarding from 127.0.0.1:P -> 8080` (the
//!   named port resolved, a port picked), an HTTP request through it answered by the pod's
//!   httpd (also through ::1 when the host has it); a connection to the port nothing listens on
//!   in the pod prints the agent's `error forwarding port 9999 ...` and the listeners keep
//!   serving; SIGINT ends it; bad port specs and an unknown pod are refused with kubectl's
//!   messages;
//! - `kubenode port-forward` ends when the pod goes: the pod's manifest removed, it exits with
//!   status 1 and kubectl's `lost connection to pod` naming the pod, its listener closed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use kubenode_integration::agent::bin;
use kubenode_integration::pods::{all_running, pod_yaml, with_agent};
use kubenode_integration::{privileged, run_tests, Spawned, TestAgent};
use nix::sys::termios::{tcgetattr, LocalFlags};

fn main() {
    run_tests(vec![privileged(
        "cli_exec_stdin_tty_and_port_forward",
        cli_streams,
    )])
}

/// `kubenode ARGS` against `agent`'s socket.
fn kubenode(agent: &TestAgent, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("KUBENODE_RUN_DIR", agent.dir.join("run"));
    cmd
}

/// Waits (bounded) for `child` to exit: its exit code.
fn wait_exit(child: &mut Child) -> anyhow::Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("kubenode did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kubenode ARGS` with `stdin` piped in: exit code, stdout, stderr.
fn with_stdin(
    agent: &TestAgent,
    args: &[&str],
    stdin: &[u8],
) -> anyhow::Result<(i32, String, String)> {
    let mut cmd = kubenode(agent, args);
    cmd.stdin(Stdio::piped());
    let mut cli = Spawned::spawn(cmd)?;
    let mut pipe = cli.child.stdin.take().context("stdin")?;
    pipe.write_all(stdin)?;
    drop(pipe);
    let code = cli.wait_exit("kubenode")?;
    Ok((code, cli.out(), cli.err()))
}

fn cli_streams() -> anyhow::Result<()> {
    with_agent("kcs", |agent| {
        let yaml = pod_yaml(
            "cs",
            &agent.image,
            r#"  containers:
  - name: c
    image: IMAGE
    command: ["sh", "-c", "mkdir -p /tmp/www && echo pf-hello > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www"]
    ports: [{containerPort: 8080, name: http}]
"#,
        );
        agent.write_manifest("cs.yaml", &yaml)?;
        let name = agent.pod_name("cs");
        agent.wait_pod(&name, Duration::from_secs(60), "Running", all_running)?;
        exec_stdin(agent, &name)?;
        exec_streamed(agent, &name)?;
        exec_tty(agent, &name)?;
        port_forward(agent, &name)?;
        port_forward_pod_gone(agent, &name)
    })
}

fn exec_streamed(agent: &TestAgent, name: &str) -> anyhow::Result<()> {
    let mut cli = Spawned::spawn(kubenode(
        agent,
        &[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            "rm -f /tmp/go-b; echo a; while [ ! -e /tmp/go-b ]; do sleep 0.1; done; \
             echo b; echo to-err >&2; exit 4",
        ],
    ))?;
    cli.wait_for("the first line while the command runs", |out, _| {
        out.contains("a\n")
    })?;
    // the command cannot have printed more: it waits for the file made only now
    ensure!(
        cli.out() == "a\n" && cli.child.try_wait()?.is_none(),
        "before the file: {:?} {:?}",
        cli.out(),
        cli.err()
    );
    agent.kubenode_ok(&["exec", name, "--", "touch", "/tmp/go-b"])?;
    let code = cli.wait_exit("kubenode exec")?;
    ensure!(
        (code, cli.out(), cli.err())
            == (
                4,
                "a\nb\n".into(),
                "to-err\ncommand terminated with exit code 4\n".into()
            ),
        "exec streamed: {code} {:?} {:?}",
        cli.out(),
        cli.err()
    );
    // --timeout: the session ends with an error, what was printed before it stays
    let got = agent.kubenode(&[
        "exec",
        "--timeout",
        "10",
        name,
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 6001",
    ])?;
    let (out, err) = (
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&got.stderr),
    );
    ensure!(
        got.status.code() == Some(1)
            && out == "started\n"
            && err.contains("the command did not end within 10s (--timeout)"),
        "exec --timeout: {:?} {out:?} {err:?}",
        got.status
    );
    // and the agent stops the command
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ps = agent.kubenode_ok(&["exec", name, "--", "ps", "-o", "args"])?;
        if !ps.contains("sleep 6001") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the timed-out command still runs: {ps}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn exec_stdin(agent: &TestAgent, name: &str) -> anyhow::Result<()> {
    let got = with_stdin(
        agent,
        &["exec", "-i", name, "--", "cat"],
        b"hello through stdin\n",
    )?;
    ensure!(
        got == (0, "hello through stdin\n".into(), String::new()),
        "exec -i cat: {got:?}"
    );
    let got = with_stdin(
        agent,
        &[
            "exec",
            "-i",
            name,
            "-c",
            "c",
            "--",
            "sh",
            "-c",
            "cat; echo to-err >&2; exit 3",
        ],
        b"x\n",
    )?;
    ensure!(
        got.0 == 3 && got.1 == "x\n" && got.2 == "to-err\ncommand terminated with exit code 3\n",
        "exec -i exit 3: {got:?}"
    );
    let got = with_stdin(agent, &["exec", "-t", name, "--", "echo", "hi"], b"")?;
    ensure!(
        got == (0, "hi\n".into(), String::new()),
        "exec -t without -i (no terminal, as kubectl): {got:?}"
    );
    let got = with_stdin(
        agent,
        &[
            "exec",
            "-it",
            name,
            "--",
            "sh",
            "-c",
            "test -t 0 || echo no-tty",
        ],
        b"",
    )?;
    ensure!(
        got.0 == 0
            && got.1 == "no-tty\n"
            && got.2.contains(
                "Unable to use a TTY - input is not a terminal or the right kind of file"
            ),
        "exec -it with a pipe: {got:?}"
    );
    let got = with_stdin(agent, &["exec", "-i", "nope", "--", "true"], b"")?;
    ensure!(
        got.0 != 0 && got.2.contains("pods \"nope\" not found"),
        "exec -i into an unknown pod: {got:?}"
    );
    Ok(())
}

fn exec_tty(agent: &TestAgent, name: &str) -> anyhow::Result<()> {
    let size = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 77,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None)?;
    let before = tcgetattr(&pty.slave)?;
    let mut cmd = kubenode(
        agent,
        &[
            "exec",
            "-it",
            name,
            "--",
            "sh",
            "-c",
            "echo term-$TERM; tty; stty size; while read x; do stty size; done; exit 5",
        ],
    );
    cmd.stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave.try_clone()?));
    let child = cmd.spawn().context("spawning kubenode exec -it")?;
    // everything the terminal shows, read from the master side
    let master = std::fs::File::from(pty.master.try_clone()?);
    let mut cli = Spawned::with_output(child, master);
    cli.wait_for("the terminal in the container", |out, _| {
        out.contains("/dev/pts/")
    })?;
    // containerd's exec with a terminal sets its type
    ensure!(cli.out().contains("term-xterm"), "TERM: {:?}", cli.out());
    // the command may start before the first size (sent on the resize channel as the session
    // opens) is applied to its terminal: the first `stty size` may see none yet, so each line
    // makes the shell print the size again, until the local terminal's shows
    let mut input = std::fs::File::from(pty.master.try_clone()?);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli.out().contains("33 77") {
        if Instant::now() > deadline {
            bail!(
                "the terminal's size did not reach the container: {:?}",
                cli.out()
            );
        }
        input.write_all(b"\n")?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = tcgetattr(&pty.slave)?;
    ensure!(
        !during.local_flags.contains(LocalFlags::ICANON)
            && !during.local_flags.contains(LocalFlags::ECHO),
        "the local terminal is not in raw mode: {:?}",
        during.local_flags
    );
    // a resize: the new size on the terminal, then SIGWINCH (the terminal is not the CLI's
    // controlling one, so the kernel sends none)
    let bigger = libc::winsize {
        ws_row: 40,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` we own.
    if unsafe { libc::ioctl(pty.master.as_raw_fd(), libc::TIOCSWINSZ, &bigger) } < 0 {
        bail!("TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }
    // SAFETY: kill(2) on our own child.
    if unsafe { libc::kill(cli.child.id() as i32, libc::SIGWINCH) } < 0 {
        bail!("SIGWINCH: {}", std::io::Error::last_os_error());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    // each line makes the shell print its size again, until the new one shows
    while !cli.out().contains("40 100") {
        if Instant::now() > deadline {
            bail!("the resize did not reach the container: {:?}", cli.out());
        }
        input.write_all(b"\n")?;
        std::thread::sleep(Duration::from_millis(200));
    }
    input.write_all(b"\x04")?; // Ctrl-D: end of the shell's input
    let code = wait_exit(&mut cli.child)?;
    ensure!(code == 5, "exec -it exit code {code}: {:?}", cli.out());
    let after = tcgetattr(&pty.slave)?;
    ensure!(
        after.local_flags == before.local_flags
            && after.input_flags == before.input_flags
            && after.output_flags == before.output_flags,
        "the local terminal was not restored: {:?} vs {:?}",
        after.local_flags,
        before.local_flags
    );
    Ok(())
}

/// One HTTP request to `addr`: the whole answer.
fn http_get(addr: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: pf\r\n\r\n")?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The port of `Forwarding from <host>:<port> -> <remote>` in `out`.
fn forwarded(out: &str, host: &str, remote: u16) -> Option<u16> {
    out.lines().find_map(|l| {
        let rest = l.strip_prefix(&format!("Forwarding from {host}:"))?;
        let (port, r) = rest.split_once(" -> ")?;
        (r == remote.to_string()).then(|| port.parse().ok())?
    })
}

fn port_forward(agent: &TestAgent, name: &str) -> anyhow::Result<()> {
    // refused before listening: kubectl's messages
    for (args, why) in [
        (
            vec!["port-forward", name, "abc:80"],
            "error parsing local port 'abc'",
        ),
        (
            vec!["port-forward", name, "8080:0"],
            "remote port must be > 0",
        ),
        (
            vec!["port-forward", name, "metrics"],
            "does not have a named port 'metrics'",
        ),
        (
            vec!["port-forward", "nope", "80"],
            "pods \"nope\" not found",
        ),
    ] {
        let got = with_stdin(agent, &args, b"")?;
        ensure!(got.0 != 0 && got.2.contains(why), "{args:?}: {got:?}");
    }
    let pod = format!("pod/{name}");
    let pf = Spawned::spawn(kubenode(agent, &["port-forward", &pod, ":http", ":9999"]))?;
    pf.wait_for("both ports forwarded", |out, _| {
        forwarded(out, "127.0.0.1", 8080).is_some() && forwarded(out, "127.0.0.1", 9999).is_some()
    })?;
    let out = pf.out();
    let web = forwarded(&out, "127.0.0.1", 8080).context("web port")?;
    let closed = forwarded(&out, "127.0.0.1", 9999).context("closed port")?;
    ensure!(web != 0 && closed != 0, "{out}");
    // httpd may not listen yet when the pod turns Running: retry (bounded)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_get(&format!("127.0.0.1:{web}")) {
            Ok(page) if page.contains("pf-hello") => break,
            other if Instant::now() > deadline => {
                bail!("no page through the forward: {other:?}; {:?}", pf.err())
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    ensure!(
        pf.out()
            .contains(&format!("Handling connection for {web}\n")),
        "{:?}",
        pf.out()
    );
    // nothing listens on 9999 in the pod: the connection ends, the agent's error is printed
    let _ = http_get(&format!("127.0.0.1:{closed}"));
    pf.wait_for("the refused port's error", |_, err| {
        err.contains(&format!(
            "an error occurred forwarding {closed} -> 9999: error forwarding port 9999 to pod {name}, uid "
        ))
    })?;
    // and the listeners keep serving
    let page = http_get(&format!("127.0.0.1:{web}"))?;
    ensure!(page.contains("pf-hello"), "after the error: {page:?}");
    if let Some(v6) = forwarded(&pf.out(), "[::1]", 8080) {
        ensure!(v6 == web, "::1 listens on {v6}, 127.0.0.1 on {web}");
        let page = http_get(&format!("[::1]:{web}"))?;
        ensure!(page.contains("pf-hello"), "through ::1: {page:?}");
    }
    let _ = http_get(&format!("127.0.0.1:{closed}"));
    let page = http_get(&format!("127.0.0.1:{web}"))?;
    ensure!(page.contains("pf-hello"), "after a second error: {page:?}");
    // SIGINT ends it, and with it the listeners
    let mut pf = pf;
    // SAFETY: kill(2) on our own child.
    if unsafe { libc::kill(pf.child.id() as i32, libc::SIGINT) } < 0 {
        bail!("SIGINT: {}", std::io::Error::last_os_error());
    }
    let code = wait_exit(&mut pf.child)?;
    ensure!(
        code == 0,
        "port-forward after SIGINT: exit {code}, {:?}",
        pf.err()
    );
    ensure!(
        TcpStream::connect(format!("127.0.0.1:{web}")).is_err(),
        "the listener outlived the command"
    );
    Ok(())
}

/// Removing the pod's manifest ends a port-forward to it with an error naming the pod.
fn port_forward_pod_gone(agent: &TestAgent, name: &str) -> anyhow::Result<()> {
    let mut pf = Spawned::spawn(kubenode(agent, &["port-forward", name, ":8080"]))?;
    pf.wait_for("the port forwarded", |out, _| {
        forwarded(out, "127.0.0.1", 8080).is_some()
    })?;
    let port = forwarded(&pf.out(), "127.0.0.1", 8080).context("the local port")?;
    let page = http_get(&format!("127.0.0.1:{port}"))?;
    ensure!(page.contains("pf-hello"), "before the removal: {page:?}");
    agent.remove_manifest("cs.yaml")?;
    let code = pf.wait_exit("port-forward after the pod's removal")?;
    // deleted, or seen finished on its way out: either way named
    let lost = format!("kubenode: lost connection to pod {name} in namespace default: the pod ");
    ensure!(
        code == 1 && pf.err().contains(&lost),
        "port-forward after the pod's removal: exit {code}, {:?}",
        pf.err()
    );
    ensure!(
        TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
        "the listener outlived the command"
    );
    Ok(())
}

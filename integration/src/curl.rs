//! `curl` to the kubelet's HTTPS port (:10250) from the node's network namespace, as a client on
//! the node's network reaches it: what the tests of that server ask it with.

use std::time::Duration;

use anyhow::Context;

use crate::agent::NODE_IP;
use crate::{run, TestAgent};

/// What [`curl_kubelet`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletReply {
    /// curl's exit code: 0 when a response came, whatever its status; else why none did (35:
    /// the TLS handshake failed, 28: the time ran out, …).
    pub exit_code: i32,
    /// The last response's HTTP status; 0 when no response came.
    pub status: u16,
    /// The last response's body.
    pub body: String,
    /// Where the last response redirects to, absolute (curl's `%{redirect_url}`); empty when it
    /// does not redirect, or when `-L` followed the redirect.
    pub redirect: String,
}

/// `curl -sk --path-as-is --max-time 60 EXTRA https://<node>:10250<path>` in the agent's node
/// namespace (`-k`: the serving certificate is not checked; `--path-as-is`: `path` is sent as
/// written, `..` and `.` included). `extra` adds credentials (`--cert`/`--key`, `-H
/// "Authorization: …"`), a method (`-X POST`), `-L` or TLS versions.
///
/// A failed transfer (no response, a refused handshake) is a reply with a non-zero
/// `exit_code` and status 0, not an error; an error is curl not running or writing nothing.
pub fn curl_kubelet(agent: &TestAgent, path: &str, extra: &[&str]) -> anyhow::Result<KubeletReply> {
    let url = format!("https://{NODE_IP}:10250{path}");
    // the body, then the redirect target and the status, a line each
    let mut argv = vec!["curl", "-sk", "--path-as-is", "--max-time", "60"];
    argv.extend_from_slice(&["-w", "\n%{redirect_url}\n%{http_code}"]);
    argv.extend_from_slice(extra);
    argv.push(&url);
    let out = run(&mut agent.node.command(&argv), Duration::from_secs(90))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (rest, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (body, redirect) = rest.rsplit_once('\n').unwrap_or(("", rest));
    let status: u16 = status.trim().parse().with_context(|| {
        format!(
            "curl {path}: no status: {text:?} {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(KubeletReply {
        exit_code: out.status.code().unwrap_or(-1),
        status,
        body: body.to_string(),
        redirect: redirect.trim().to_string(),
    })
}

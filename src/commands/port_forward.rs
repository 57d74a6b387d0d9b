//! `kubenode port-forward POD [LOCAL:]REMOTE...`: local TCP ports forwarded to ports of a pod,
//! as `kubectl port-forward`.
//!
//! Each `[LOCAL:]REMOTE` is parsed as kubectl's `parsePorts` (`8080`, `8080:80`, `:80` for a
//! port the system picks; REMOTE may be a container port's name). Every address of `--address`
//! (`localhost`: 127.0.0.1 and ::1) listens on LOCAL and prints `Forwarding from ADDR -> REMOTE`;
//! each accepted connection (`Handling connection for LOCAL`) becomes a port-forward session
//! on the agent's socket (`/portForward/...`, the handler `kubectl port-forward` reaches on
//! :10250, [`kubenode_kubelet::api::ApiClient::port_forward`]) to `localhost:REMOTE` in the
//! pod's network namespace. A connection that fails (nothing listens on REMOTE) prints the
//! agent's `error forwarding port ...` and the listener keeps serving others (kubectl 1.32
//! gives up on its whole connection instead: here each connection has a session of its own).
//! Runs until interrupted (Ctrl-C), or until the pod goes: as kubectl's `lost connection to
//! pod`, it ends with an error naming the pod (the listeners closed, exit status 1) when the pod
//! is deleted (looked up on the agent every [`POD_CHECK_INTERVAL`]: gone, replaced by a pod of
//! the same name, or finished), when the agent cannot be reached, or when a session's
//! connection breaks without the agent closing it.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kubenode_kubelet::api::{ApiClient, ClientError};
use tokio::sync::mpsc;

use super::AgentRef;

/// Options of `kubenode port-forward`.
#[derive(clap::Args, Debug)]
pub struct PortForwardArgs {
    /// The pod: `NAME` or `pod/NAME`.
    pub pod: String,
    /// `[LOCAL:]REMOTE`: LOCAL left out is REMOTE; empty or 0 lets the system pick; REMOTE
    /// may be a container port's name.
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// Addresses to listen on (comma-separated): IP addresses or `localhost` (127.0.0.1 and ::1).
    #[arg(long, default_value = "localhost", value_delimiter = ',')]
    pub address: Vec<String>,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub agent: AgentRef,
}

/// One forwarded port (kubectl's `ForwardedPort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedPort {
    /// The local port (0: the system picks one).
    pub local: u16,
    /// The pod's port.
    pub remote: u16,
}

/// An address to listen on, and whether failing to listen there fails the port (an address
/// given explicitly) or only when every address fails (`localhost`'s two, as kubectl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ListenAddress {
    ip: IpAddr,
    required: bool,
}

/// While forwarding, the pod is looked up on the agent this often (to end when it goes).
pub const POD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Runs `kubenode port-forward` until interrupted, or until the pod goes (an error).
pub async fn run(args: PortForwardArgs) -> anyhow::Result<()> {
    let name = pod_name(&args.pod)?;
    let addresses = listen_addresses(&args.address)?;
    let client = args.agent.client();
    let pods = client.pods().await?;
    let pod = super::get_pod(&pods, &args.namespace, name)?;
    let specs = args
        .ports
        .iter()
        .map(|p| resolve_named_port(p, pod))
        .collect::<Result<Vec<_>, _>>()?;
    let ports = parse_ports(&specs)?;
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    if phase != "Running" {
        anyhow::bail!("unable to forward port because pod is not running. Current status={phase}");
    }

    let uid = pod.metadata.uid.clone();
    // why the forwarding ends, from the pod's watch or a session
    let (lost_tx, mut lost_rx) = mpsc::channel::<String>(1);
    let mut tasks = Vec::new();
    let mut listening = false;
    for mut port in ports {
        let mut errors = Vec::new();
        let mut any = false;
        let mut failed_required = false;
        for addr in &addresses {
            let listener =
                match tokio::net::TcpListener::bind(SocketAddr::new(addr.ip, port.local)).await {
                    Ok(l) => l,
                    Err(e) => {
                        let e = format!(
                            "unable to create listener: Error listen tcp {}: {e}",
                            SocketAddr::new(addr.ip, port.local)
                        );
                        failed_required |= addr.required;
                        errors.push(e);
                        continue;
                    }
                };
            let local = listener.local_addr()?;
            // the port picked for the first address is the port of the others
            port.local = local.port();
            println!("Forwarding from {local} -> {}", port.remote);
            any = true;
            tasks.push(tokio::spawn(serve(
                listener,
                port,
                client.clone(),
                args.namespace.clone(),
                name.to_string(),
                lost_tx.clone(),
            )));
        }
        if !any || failed_required {
            eprintln!(
                "Unable to listen on port {}: Listeners failed to create with the following errors: [{}]",
                port.local,
                errors.join(" ")
            );
        } else {
            for e in &errors {
                eprintln!("{e}");
            }
        }
        listening |= any;
    }
    let _ = std::io::stdout().flush();
    if !listening {
        anyhow::bail!(
            "unable to listen on any of the requested ports: [{}]",
            args.ports.join(" ")
        );
    }
    tasks.push(tokio::spawn(watch_pod(
        client,
        args.namespace.clone(),
        name.to_string(),
        uid,
        lost_tx,
    )));
    let ended = tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(anyhow::Error::from),
        Some(why) = lost_rx.recv() => Err(anyhow::anyhow!(
            "lost connection to pod {name} in namespace {}: {why}",
            args.namespace
        )),
    };
    // the listeners close with their tasks
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    ended
}

/// Looks the pod up every [`POD_CHECK_INTERVAL`] until it is gone ([`pod_gone`]) or the agent
/// cannot say, then sends why on `lost`.
async fn watch_pod(
    client: ApiClient,
    namespace: String,
    name: String,
    uid: Option<String>,
    lost: mpsc::Sender<String>,
) {
    let mut tick = tokio::time::interval(POD_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let why = match client.pods().await {
            Ok(pods) => pod_gone(&pods, &namespace, &name, uid.as_deref()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = why {
            let _ = lost.send(why).await;
            return;
        }
    }
}

/// Why the pod `namespace/name` forwarded to (of `uid`, when it had one) is no longer among
/// `pods`: deleted, replaced by a pod of the same name, or finished (`Succeeded`/`Failed`).
fn pod_gone(pods: &[Pod], namespace: &str, name: &str, uid: Option<&str>) -> Option<String> {
    let Some(pod) = super::find_pod(pods, namespace, name) else {
        return Some("the pod was deleted".into());
    };
    let now = pod.metadata.uid.as_deref();
    if uid.is_some() && now != uid {
        return Some(format!(
            "the pod was deleted (the pod of that name now has uid {})",
            now.unwrap_or_default()
        ));
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some(phase @ ("Succeeded" | "Failed")) => Some(format!("the pod has finished ({phase})")),
        _ => None,
    }
}

/// Accepts connections on `listener` until aborted, each forwarded on a session of its own; a
/// session that lost the agent (unreachable, or the connection broke) is sent on `lost`.
async fn serve(
    listener: tokio::net::TcpListener,
    port: ForwardedPort,
    client: ApiClient,
    namespace: String,
    pod: String,
    lost: mpsc::Sender<String>,
) {
    loop {
        let conn = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                eprintln!("error accepting connection on port {}: {e}", port.local);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        println!("Handling connection for {}", port.local);
        let _ = std::io::stdout().flush();
        let (client, namespace, pod) = (client.clone(), namespace.clone(), pod.clone());
        let lost = lost.clone();
        tokio::spawn(async move {
            match client
                .port_forward(&namespace, &pod, port.remote, conn)
                .await
            {
                Ok(()) => {}
                Err(
                    e @ (ClientError::Lost { .. }
                    | ClientError::Connect { .. }
                    | ClientError::Timeout { .. }),
                ) => {
                    let _ = lost.try_send(e.to_string());
                }
                Err(e) => eprintln!(
                    "an error occurred forwarding {} -> {}: {e}",
                    port.local, port.remote
                ),
            }
        });
    }
}

/// The pod's name from `NAME` or `pod/NAME` (kubectl's `TYPE/NAME`; only pods are forwarded).
fn pod_name(arg: &str) -> anyhow::Result<&str> {
    let name = match arg.split_once('/') {
        None => arg,
        Some(("pod" | "pods" | "po", name)) => name,
        Some((kind, _)) => anyhow::bail!(
            "kubenode port-forward forwards to pods only (NAME or pod/NAME), not {kind:?}"
        ),
    };
    if name.is_empty() {
        anyhow::bail!("a pod name is required");
    }
    Ok(name)
}

/// `--address` as kubectl's `parseAddresses`: `localhost` is 127.0.0.1 and ::1 (either may
/// fail alone), anything else must be an IP address (which must then be listened on).
fn listen_addresses(addresses: &[String]) -> anyhow::Result<Vec<ListenAddress>> {
    let mut out = Vec::new();
    for a in addresses {
        let a = a.trim();
        if a == "localhost" {
            for ip in [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ] {
                out.push(ListenAddress {
                    ip,
                    required: false,
                });
            }
        } else {
            let ip: IpAddr = a
                .parse()
                .map_err(|_| anyhow::anyhow!("{a} is not a valid IP"))?;
            out.push(ListenAddress { ip, required: true });
        }
    }
    let mut seen = Vec::new();
    out.retain(|a| {
        let new = !seen.contains(&a.ip);
        seen.push(a.ip);
        new
    });
    if out.is_empty() {
        anyhow::bail!("--address: at least one address is required");
    }
    Ok(out)
}

/// A REMOTE given as a container port's name turned into its number (kubectl's
/// `convertPodNamedPortToNumber`): `http` becomes `8080`, `9000:http` becomes `9000:8080`.
fn resolve_named_port(spec: &str, pod: &Pod) -> anyhow::Result<String> {
    let (local, remote) = spec.split_once(':').unwrap_or((spec, spec));
    if remote.parse::<i64>().is_ok() || spec.matches(':').count() > 1 {
        return Ok(spec.to_string());
    }
    let number = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(remote))
        .map(|p| p.container_port)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "Pod '{}' does not have a named port '{remote}'",
                pod.metadata.name.as_deref().unwrap_or_default()
            )
        })?;
    Ok(if local != remote {
        format!("{local}:{number}")
    } else {
        number.to_string()
    })
}

/// Parses `[LOCAL:]REMOTE` specs as kubectl's `parsePorts`, with its messages.
pub fn parse_ports(specs: &[String]) -> anyhow::Result<Vec<ForwardedPort>> {
    let mut out = Vec::new();
    for spec in specs {
        let parts: Vec<&str> = spec.split(':').collect();
        let (local, remote) = match parts.as_slice() {
            [one] => (*one, *one),
            ["", remote] => ("0", *remote),
            [local, remote] => (*local, *remote),
            _ => anyhow::bail!("invalid port format '{spec}'"),
        };
        let local = parse_u16(local)
            .map_err(|e| anyhow::anyhow!("error parsing local port '{local}': {e}"))?;
        let remote = parse_u16(remote)
            .map_err(|e| anyhow::anyhow!("error parsing remote port '{remote}': {e}"))?;
        if remote == 0 {
            anyhow::bail!("remote port must be > 0");
        }
        out.push(ForwardedPort { local, remote });
    }
    Ok(out)
}

/// A port number as Go's `strconv.ParseUint(s, 10, 16)`, with its error text (digits only:
/// no sign, no space).
fn parse_u16(s: &str) -> Result<u16, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
    }
    s.parse()
        .map_err(|_| format!("strconv.ParseUint: parsing {s:?}: value out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(specs: &[&str]) -> Result<Vec<(u16, u16)>, String> {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        parse_ports(&specs)
            .map(|v| v.into_iter().map(|p| (p.local, p.remote)).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ports_as_kubectl() {
        assert_eq!(
            parse(&["8080", "9000:80", ":443", "0:22"]),
            Ok(vec![(8080, 8080), (9000, 80), (0, 443), (0, 22)])
        );
        for (bad, why) in [
            (
                "abc:80",
                r#"error parsing local port 'abc': strconv.ParseUint: parsing "abc": invalid syntax"#,
            ),
            (
                "80:abc",
                r#"error parsing remote port 'abc': strconv.ParseUint: parsing "abc": invalid syntax"#,
            ),
            (
                "70000",
                r#"error parsing local port '70000': strconv.ParseUint: parsing "70000": value out of range"#,
            ),
            (
                "8080:70000",
                r#"error parsing remote port '70000': strconv.ParseUint: parsing "70000": value out of range"#,
            ),
            ("8080:0", "remote port must be > 0"),
            ("0", "remote port must be > 0"),
            ("1:2:3", "invalid port format '1:2:3'"),
            (
                "80:",
                r#"error parsing remote port '': strconv.ParseUint: parsing "": invalid syntax"#,
            ),
            (
                "-1:80",
                r#"error parsing local port '-1': strconv.ParseUint: parsing "-1": invalid syntax"#,
            ),
            (
                "+80",
                r#"error parsing local port '+80': strconv.ParseUint: parsing "+80": invalid syntax"#,
            ),
        ] {
            assert_eq!(parse(&[bad]), Err(why.to_string()), "{bad}");
        }
    }

    #[test]
    fn named_ports_from_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [
                {"name": "a", "image": "x"},
                {"name": "b", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]},
            ]},
        }))
        .unwrap();
        let r = |s: &str| resolve_named_port(s, &pod).map_err(|e| e.to_string());
        assert_eq!(r("http").as_deref(), Ok("8080"));
        assert_eq!(r("9000:http").as_deref(), Ok("9000:8080"));
        assert_eq!(r(":http").as_deref(), Ok(":8080"));
        assert_eq!(r("9000:80").as_deref(), Ok("9000:80"));
        assert_eq!(
            r("metrics"),
            Err("Pod 'web' does not have a named port 'metrics'".into())
        );
    }

    #[test]
    fn a_pod_gone_deleted_replaced_or_finished() {
        let pod = |uid: &str, phase: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": "default", "uid": uid},
                "status": {"phase": phase},
            }))
            .unwrap()
        };
        let gone = |pods: &[Pod]| pod_gone(pods, "default", "web", Some("u1"));
        assert_eq!(gone(&[pod("u1", "Running")]), None);
        assert_eq!(gone(&[pod("u1", "Pending")]), None);
        assert_eq!(gone(&[]).as_deref(), Some("the pod was deleted"));
        assert_eq!(
            pod_gone(&[pod("u1", "Running")], "other", "web", Some("u1")).as_deref(),
            Some("the pod was deleted"),
            "another namespace's pod is not it"
        );
        assert_eq!(
            gone(&[pod("u2", "Running")]).as_deref(),
            Some("the pod was deleted (the pod of that name now has uid u2)")
        );
        assert_eq!(
            gone(&[pod("u1", "Failed")]).as_deref(),
            Some("the pod has finished (Failed)")
        );
        assert_eq!(
            pod_gone(&[pod("u9", "Running")], "default", "web", None),
            None,
            "a pod that had no uid is known by its name"
        );
    }

    #[test]
    fn addresses_and_pod_names() {
        let a = |v: &[&str]| {
            listen_addresses(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map(|v| {
                    v.into_iter()
                        .map(|a| (a.ip.to_string(), a.required))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            a(&["localhost"]),
            Ok(vec![("127.0.0.1".into(), false), ("::1".into(), false)])
        );
        assert_eq!(
            a(&["localhost", "127.0.0.1", "10.0.0.1"]),
            Ok(vec![
                ("127.0.0.1".into(), false),
                ("::1".into(), false),
                ("10.0.0.1".into(), true)
            ])
        );
        assert_eq!(
            a(&["example.com"]),
            Err("example.com is not a valid IP".into())
        );
        assert_eq!(pod_name("web").unwrap(), "web");
        assert_eq!(pod_name("pod/web").unwrap(), "web");
        assert!(pod_name("svc/web")
            .unwrap_err()
            .to_string()
            .contains("pods only"));
        assert!(pod_name("pod/").is_err());
    }
}

//! The stand-in API server (`kubenode_integration::apiserver`) driven by the real `kubectl`
//! (1.32 on this image), so that what it answers is what a real API server answers to a real
//! client; plus raw HTTP where kubectl cannot reach (a watch from an expired version, UID
//! preconditions). Unprivileged: runs as any user. Every kubectl is bounded in time; each test
//! has its own server and directory, removed at the end.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use kubenode_integration::apiserver::{ApiServer, Options};
use kubenode_integration::{run, run_tests, unique_tag, TestDir, Trial};
use serde_json::{json, Value};

use kubenode_integration::kubectl::{self, KUBECTL};

fn main() {
    let missing = !kubectl::present();
    if missing {
        eprintln!("note: `kubectl` is not installed: the stand-in API server tests are skipped (install the kubectl package)");
    }
    let t = |name: &str, f: fn() -> anyhow::Result<()>| {
        Trial::test(name, move || f().map_err(|e| format!("{e:#}").into()))
            .with_ignored_flag(missing)
    };
    run_tests(vec![
        t("create_and_get_pods_wide", create_and_get_pods_wide),
        t(
            "unknown_field_is_refused_by_strict_validation",
            unknown_field_refused,
        ),
        t("nodes_get_and_describe", nodes_get_and_describe),
        t("delete_is_graceful_then_final_with_uid", graceful_delete),
        t("get_watch_sees_a_change", get_watch_sees_a_change),
        t("stale_update_is_a_conflict", stale_update_conflict),
        t(
            "expired_watch_is_410_and_bookmarks",
            expired_watch_and_bookmarks,
        ),
        t(
            "strategic_patch_merges_conditions_by_type",
            strategic_patch_conditions,
        ),
        t("label_and_field_selectors", selectors),
        t("services_table", services_table),
        t("kn_apiserver_binary_serves_kubectl", binary),
        t("paused_server_keeps_its_objects", pause_resume),
        t("binding_puts_a_pod_into_the_nodes_watch", binding),
    ])
}

/// A stand-in, a directory with its kubeconfig, and kubectl pointed at them.
struct Lab {
    server: ApiServer,
    dir: TestDir,
    kubeconfig: PathBuf,
}

impl Lab {
    fn new() -> anyhow::Result<Lab> {
        Lab::with(Options::default())
    }

    fn with(opts: Options) -> anyhow::Result<Lab> {
        let server = ApiServer::start_with("127.0.0.1:0".parse()?, opts)?;
        let dir = TestDir::new(&unique_tag("api"))?;
        let kubeconfig = dir.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig)?;
        Ok(Lab {
            server,
            dir,
            kubeconfig,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KUBECTL);
        cmd.args(kubectl::common_args(&self.kubeconfig, self.dir.path()))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path());
        cmd
    }

    /// Runs kubectl (30 s at most); Ok(stdout) on success, Err(stderr) on failure.
    fn kubectl(&self, args: &[&str]) -> anyhow::Result<Result<String, String>> {
        kubectl::outcome(&mut self.command(args), self.dir.path())
    }

    /// Runs kubectl and requires success.
    fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        match self.kubectl(args)? {
            Ok(out) => Ok(out),
            Err(e) => bail!("kubectl {args:?} failed: {e}"),
        }
    }

    /// Runs kubectl and requires a failure; returns stderr.
    fn fails(&self, args: &[&str]) -> anyhow::Result<String> {
        match self.kubectl(args)? {
            Ok(out) => bail!("kubectl {args:?} succeeded, expected a failure: {out}"),
            Err(e) => Ok(e),
        }
    }

    /// `kubectl create -f` of a YAML (or JSON) document written to the lab directory.
    fn create(&self, name: &str, doc: &str) -> anyhow::Result<String> {
        let path = self.dir.join(name);
        std::fs::write(&path, doc)?;
        self.ok(&["create", "-f", path.to_str().context("path")?])
    }

    /// A raw HTTP request; returns the status code and the body text.
    fn http(
        &self,
        method: &str,
        path: &str,
        ct: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        http(self.server.addr(), method, path, ct, body)
    }

    fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let (code, body) = self.http("GET", path, "", "")?;
        ensure!(code == 200, "GET {path}: {code} {body}");
        Ok(serde_json::from_str(&body)?)
    }
}

/// HTTP/1.1 with `Connection: close`, reading to the end (chunked bodies decoded).
fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    ct: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let ct_line = if ct.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {ct}\r\n")
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n{ct_line}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status code")?
        .parse()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("bad chunk")?;
        let n = usize::from_str_radix(size.trim(), 16)?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeName: node-a
  containers:
  - name: c
    image: busybox:1.36
    ports:
    - containerPort: 80
";

const NODE: &str = r#"apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {kubernetes.io/hostname: node-a, node-role.kubernetes.io/worker: ""}
status:
  conditions:
  - {type: Ready, status: "True", reason: KubeletReady, message: kubelet is posting ready status, lastHeartbeatTime: "2026-01-01T00:00:00Z", lastTransitionTime: "2026-01-01T00:00:00Z"}
  - {type: MemoryPressure, status: "False", reason: KubeletHasSufficientMemory, message: kubelet has sufficient memory available, lastHeartbeatTime: "2026-01-01T00:00:00Z", lastTransitionTime: "2026-01-01T00:00:00Z"}
  addresses:
  - {type: InternalIP, address: 10.0.0.1}
  - {type: Hostname, address: node-a}
  capacity: {cpu: "2", memory: 4Gi, pods: "110"}
  allocatable: {cpu: "2", memory: 4Gi, pods: "110"}
  nodeInfo: {kubeletVersion: v1.34.0-kubenode, osImage: Debian GNU/Linux 13 (trixie), kernelVersion: 6.12.0, containerRuntimeVersion: "kubenode://0.1.0", machineID: m, systemUUID: s, bootID: b, kubeProxyVersion: "", operatingSystem: linux, architecture: amd64}
"#;

const RUNNING: &str = r#"{"status":{"phase":"Running","podIP":"10.1.0.5","podIPs":[{"ip":"10.1.0.5"}],
  "conditions":[{"type":"PodScheduled","status":"True"},{"type":"Ready","status":"True"}],
  "containerStatuses":[{"name":"c","ready":true,"restartCount":2,"image":"busybox:1.36","imageID":"",
    "state":{"running":{"startedAt":"2026-01-01T00:00:00Z"}}}]}}"#;

/// The header and the rows of kubectl's table output, split on runs of 2+ spaces.
fn table(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

fn create_and_get_pods_wide() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    ensure!(lab.create("pod.yaml", POD)?.trim() == "pod/web created");
    let t = table(&lab.ok(&["get", "pods"])?);
    ensure!(
        t[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{t:?}"
    );
    ensure!(t[1][..4] == ["web", "0/1", "Pending", "0"], "{t:?}");
    lab.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        RUNNING,
    ])?;
    let t = table(&lab.ok(&["get", "pods", "-o", "wide"])?);
    ensure!(
        t[0] == [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ],
        "{t:?}"
    );
    ensure!(t.len() == 2, "{t:?}");
    let row = &t[1];
    ensure!(row[..4] == ["web", "1/1", "Running", "2"], "{row:?}");
    ensure!(
        row[5..] == ["10.1.0.5", "node-a", "<none>", "<none>"],
        "{row:?}"
    );
    // the stored object: defaults and metadata set by the server, as upstream
    let pod = lab.get_json("/api/v1/namespaces/default/pods/web")?;
    ensure!(pod["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    ensure!(pod["metadata"]["generation"] == 1);
    ensure!(pod["spec"]["containers"][0]["ports"][0]["protocol"] == "TCP");
    ensure!(pod["status"]["qosClass"] == "BestEffort");
    // a second create is AlreadyExists; a pod in a missing namespace is NotFound
    let err = lab.fails(&["create", "-f", lab.dir.join("pod.yaml").to_str().unwrap()])?;
    ensure!(
        err.contains("Error from server (AlreadyExists)")
            && err.contains(r#"pods "web" already exists"#),
        "{err}"
    );
    let err = lab.fails(&[
        "-n",
        "nope",
        "create",
        "-f",
        lab.dir.join("pod.yaml").to_str().unwrap(),
    ])?;
    ensure!(err.contains(r#"namespaces "nope" not found"#), "{err}");
    let err = lab.fails(&["run", "Web", "--image=busybox"])?;
    ensure!(
        err.contains(r#"The Pod "Web" is invalid: metadata.name: Invalid value: "Web": a lowercase RFC 1123 subdomain must consist of"#),
        "{err}"
    );
    Ok(())
}

fn unknown_field_refused() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let bad = POD.replace(
        "    image: busybox:1.36\n",
        "    image: busybox:1.36\n    bogus: 1\n",
    );
    let path = lab.dir.join("bad.yaml");
    std::fs::write(&path, bad)?;
    let err = lab.fails(&["create", "-f", path.to_str().unwrap()])?;
    ensure!(
        err.contains(r#"Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field "spec.containers[0].bogus""#),
        "{err}"
    );
    // --validate=warn: created, the field dropped, a Warning header kubectl prints
    let out = run(
        &mut lab.command(&["create", "--validate=warn", "-f", path.to_str().unwrap()]),
        Duration::from_secs(30),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    ensure!(
        stderr.contains(r#"Warning: unknown field "spec.containers[0].bogus""#),
        "{stderr}"
    );
    let pod = lab.get_json("/api/v1/namespaces/default/pods/web")?;
    ensure!(pod["spec"]["containers"][0].get("bogus").is_none(), "{pod}");
    // a body of the wrong type is a 400 naming the field
    let (code, body) = lab.http(
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"spec":{"containers":[{"name":"c","image":5}]}}"#,
    )?;
    ensure!(code == 400, "{code} {body}");
    let status: Value = serde_json::from_str(&body)?;
    ensure!(status["reason"] == "BadRequest" && status["kind"] == "Status");
    ensure!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("spec.containers[0].image"),
        "{body}"
    );
    Ok(())
}

fn nodes_get_and_describe() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    lab.create("node.yaml", NODE)?;
    lab.create("pod.yaml", POD)?;
    let t = table(&lab.ok(&["get", "nodes"])?);
    ensure!(
        t[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{t:?}"
    );
    ensure!(
        t[1][..3] == ["node-a", "Ready", "worker"] && t[1][4] == "v1.34.0-kubenode",
        "{t:?}"
    );
    let t = table(&lab.ok(&["get", "nodes", "-o", "wide"])?);
    ensure!(
        t[0][5..]
            == [
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME"
            ],
        "{t:?}"
    );
    ensure!(
        t[1][5..]
            == [
                "10.0.0.1",
                "<none>",
                "Debian GNU/Linux 13 (trixie)",
                "6.12.0",
                "kubenode://0.1.0"
            ],
        "{t:?}"
    );
    // the node's Lease and an Event about the node, as a kubelet posts them
    let uid = lab.ok(&["get", "node", "node-a", "-o", "jsonpath={.metadata.uid}"])?;
    lab.create(
        "lease.yaml",
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: node-a, namespace: kube-node-lease}\nspec: {holderIdentity: node-a, leaseDurationSeconds: 40, renewTime: \"2026-01-01T00:00:00.000000Z\"}\n",
    )?;
    lab.create(
        "event.yaml",
        &format!("apiVersion: v1\nkind: Event\nmetadata: {{name: node-a.starting, namespace: default}}\ninvolvedObject: {{kind: Node, name: node-a, uid: {uid}, apiVersion: v1}}\nreason: Starting\nmessage: Starting kubenode.\ntype: Normal\nsource: {{component: kubelet, host: node-a}}\ncount: 1\nfirstTimestamp: \"2026-01-01T00:00:00Z\"\nlastTimestamp: \"2026-01-01T00:00:00Z\"\n"),
    )?;
    let t = table(&lab.ok(&["get", "leases", "-n", "kube-node-lease"])?);
    ensure!(
        t[0] == ["NAME", "HOLDER", "AGE"] && t[1][..2] == ["node-a", "node-a"],
        "{t:?}"
    );
    let t = table(&lab.ok(&["get", "events", "-o", "wide"])?);
    ensure!(
        t[0] == [
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "SUBOBJECT",
            "SOURCE",
            "MESSAGE",
            "FIRST SEEN",
            "COUNT",
            "NAME"
        ],
        "{t:?}"
    );
    ensure!(
        t[1][1..]
            == [
                "Normal",
                "Starting",
                "node/node-a",
                "kubelet, node-a",
                "Starting kubenode.",
                t[1][0].as_str(),
                "1",
                "node-a.starting"
            ],
        "{t:?}"
    );
    let d = lab.ok(&["describe", "node", "node-a"])?;
    for want in [
        "HolderIdentity:  node-a",
        "Normal  Starting",
        "Starting kubenode.",
        "Name:               node-a",
        "KubeletReady",
        "kubelet is posting ready status",
        "InternalIP:  10.0.0.1",
        "Kubelet Version:            v1.34.0-kubenode",
        "Non-terminated Pods:          (1 in total)",
    ] {
        ensure!(d.contains(want), "describe lacks {want:?}:\n{d}");
    }
    // the node's status, patched as the kubelet does (strategic, conditions by type)
    lab.ok(&[
        "patch", "node", "node-a", "--subresource=status", "--type=strategic", "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady"}]}}"#,
    ])?;
    let t = table(&lab.ok(&["get", "nodes"])?);
    ensure!(t[1][1] == "NotReady", "{t:?}");
    let node = lab.get_json("/api/v1/nodes/node-a")?;
    ensure!(
        node["status"]["conditions"].as_array().map(Vec::len) == Some(2),
        "{node}"
    );
    // a PUT of the main resource does not change the status
    let mut put = node.clone();
    put["status"]["conditions"] = json!([]);
    put["spec"]["unschedulable"] = json!(true);
    let (code, body) = lab.http(
        "PUT",
        "/api/v1/nodes/node-a",
        "application/json",
        &put.to_string(),
    )?;
    ensure!(code == 200, "{code} {body}");
    let after: Value = serde_json::from_str(&body)?;
    ensure!(after["status"] == node["status"] && after["spec"]["unschedulable"] == true);
    let t = table(&lab.ok(&["get", "nodes"])?);
    ensure!(t[1][1] == "NotReady,SchedulingDisabled", "{t:?}");
    Ok(())
}

fn graceful_delete() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    lab.create("pod.yaml", POD)?;
    let uid = lab.ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"])?;
    lab.ok(&["delete", "pod", "web", "--wait=false"])?;
    let got = lab.ok(&[
        "get",
        "pod",
        "web",
        "-o",
        "jsonpath={.metadata.deletionTimestamp} {.metadata.deletionGracePeriodSeconds}",
    ])?;
    let (ts, grace) = got.split_once(' ').context("two fields")?;
    ensure!(
        ts.parse::<jiff::Timestamp>().is_ok() && grace == "30",
        "{got}"
    );
    let t = table(&lab.ok(&["get", "pods"])?);
    ensure!(t[1][2] == "Terminating", "{t:?}");
    // the kubelet's final DELETE: grace 0 with a UID precondition
    let path = "/api/v1/namespaces/default/pods/web";
    let wrong = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
        "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}});
    let (code, body) = lab.http("DELETE", path, "application/json", &wrong.to_string())?;
    ensure!(code == 409, "{code} {body}");
    let status: Value = serde_json::from_str(&body)?;
    ensure!(status["reason"] == "Conflict");
    ensure!(
        status["message"]
            == format!("Operation cannot be fulfilled on pods \"web\": Precondition failed: UID in precondition: 00000000-0000-0000-0000-000000000000, UID in object meta: {uid}"),
        "{body}"
    );
    let right = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}});
    let (code, body) = lab.http("DELETE", path, "application/json", &right.to_string())?;
    ensure!(code == 200, "{code} {body}");
    let err = lab.fails(&["get", "pod", "web"])?;
    ensure!(
        err.contains(r#"Error from server (NotFound): pods "web" not found"#),
        "{err}"
    );
    // an unbound pod has no kubelet to wait for: deleted at once
    lab.create("pod2.yaml", &POD.replace("  nodeName: node-a\n", ""))?;
    lab.ok(&["delete", "pod", "web", "--wait=false"])?;
    ensure!(lab.fails(&["get", "pod", "web"])?.contains("NotFound"));
    Ok(())
}

fn get_watch_sees_a_change() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    lab.create("pod.yaml", POD)?;
    let mut cmd = lab.command(&[
        "get",
        "pods",
        "-w",
        "--output-watch-events",
        "--request-timeout=8s",
    ]);
    let watcher = std::thread::spawn(move || run(&mut cmd, Duration::from_secs(30)));
    // wait until kubectl's watch is open on the server, then change the pod
    let mut open = false;
    for _ in 0..400 {
        if lab.server.watch_count() > 0 {
            open = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    ensure!(open, "kubectl's watch never reached the server");
    lab.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        RUNNING,
    ])?;
    let out = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watch thread panicked"))??;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let t = table(&text);
    ensure!(t[0][..3] == ["EVENT", "NAME", "READY"], "{text}");
    ensure!(
        t.iter()
            .any(|r| r[..4] == ["ADDED", "web", "0/1", "Pending"]),
        "{text}"
    );
    ensure!(
        t.iter()
            .any(|r| r[..4] == ["MODIFIED", "web", "1/1", "Running"]),
        "{text}"
    );
    Ok(())
}

fn stale_update_conflict() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    lab.create("pod.yaml", POD)?;
    let old = lab.ok(&["get", "pod", "web", "-o", "json"])?;
    let old_path = lab.dir.join("old.json");
    std::fs::write(&old_path, &old)?;
    lab.ok(&["label", "pod", "web", "tier=front"])?;
    let err = lab.fails(&["replace", "-f", old_path.to_str().unwrap()])?;
    ensure!(
        err.contains(r#"Error from server (Conflict): error when replacing"#)
            && err.contains(r#"Operation cannot be fulfilled on pods "web": the object has been modified; please apply your changes to the latest version and try again"#),
        "{err}"
    );
    // an update that changes nothing writes nothing: same resourceVersion
    let cur = lab.get_json("/api/v1/namespaces/default/pods/web")?;
    let rv = lab.server.resource_version();
    let (code, body) = lab.http(
        "PUT",
        "/api/v1/namespaces/default/pods/web",
        "application/json",
        &cur.to_string(),
    )?;
    ensure!(code == 200, "{code} {body}");
    ensure!(lab.server.resource_version() == rv);
    let v: Value = serde_json::from_str(&body)?;
    ensure!(v["metadata"]["resourceVersion"] == cur["metadata"]["resourceVersion"]);
    Ok(())
}

fn watch_lines(body: &str) -> anyhow::Result<Vec<Value>> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("watch line {l:?}")))
        .collect()
}

fn expired_watch_and_bookmarks() -> anyhow::Result<()> {
    let lab = Lab::with(Options {
        history: 4,
        bookmark_interval: Duration::from_millis(200),
        ..Options::default()
    })?;
    lab.create("pod.yaml", POD)?;
    let first = lab.server.resource_version();
    for i in 0..6 {
        lab.ok(&["label", "--overwrite", "pod", "web", &format!("n={i}")])?;
    }
    let now = lab.server.resource_version();
    // from a version older than the window: one ERROR event with a 410 Expired Status
    let (code, body) = lab.http(
        "GET",
        &format!(
            "/api/v1/namespaces/default/pods?watch=1&resourceVersion={first}&timeoutSeconds=5"
        ),
        "",
        "",
    )?;
    ensure!(code == 200, "{code} {body}");
    let events = watch_lines(&body)?;
    ensure!(events.len() == 1 && events[0]["type"] == "ERROR", "{body}");
    let st = &events[0]["object"];
    ensure!(
        st["kind"] == "Status" && st["code"] == 410 && st["reason"] == "Expired",
        "{body}"
    );
    ensure!(
        st["message"] == format!("too old resource version: {first} ({})", now - 4),
        "{body}"
    );
    // inside the window: exactly the later changes, in order; then bookmarks
    let from = now - 2;
    let (code, body) = lab.http(
        "GET",
        &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=1"),
        "",
        "",
    )?;
    ensure!(code == 200, "{code} {body}");
    let events = watch_lines(&body)?;
    let changes: Vec<&Value> = events.iter().filter(|e| e["type"] != "BOOKMARK").collect();
    ensure!(changes.len() == 2, "{body}");
    for (e, rv) in changes.iter().zip([from + 1, from + 2]) {
        ensure!(
            e["type"] == "MODIFIED"
                && e["object"]["metadata"]["resourceVersion"] == json!(rv.to_string()),
            "{body}"
        );
    }
    let bookmarks: Vec<&Value> = events.iter().filter(|e| e["type"] == "BOOKMARK").collect();
    ensure!(!bookmarks.is_empty(), "no bookmark: {body}");
    ensure!(
        bookmarks[0]["object"]["metadata"]["resourceVersion"] == json!(now.to_string()),
        "{body}"
    );
    ensure!(bookmarks[0]["object"]["kind"] == "Pod", "{body}");
    // a streaming list: the objects, the initial-events-end bookmark, then changes
    let (code, body) = lab.http(
        "GET",
        "/api/v1/namespaces/default/pods?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
        "",
        "",
    )?;
    ensure!(code == 200, "{code} {body}");
    let events = watch_lines(&body)?;
    ensure!(
        events[0]["type"] == "ADDED" && events[0]["object"]["metadata"]["name"] == "web",
        "{body}"
    );
    ensure!(events[1]["type"] == "BOOKMARK", "{body}");
    ensure!(
        events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true",
        "{body}"
    );
    ensure!(
        events[1]["object"]["metadata"]["resourceVersion"] == json!(now.to_string()),
        "{body}"
    );
    let (code, body) = lab.http(
        "GET",
        "/api/v1/namespaces/default/pods?watch=1&sendInitialEvents=true",
        "",
        "",
    )?;
    ensure!(
        code == 422
            && body.contains("sendInitialEvents requires setting allowWatchBookmarks to true"),
        "{code} {body}"
    );
    // a label selector on the watch: the pod leaving it is a DELETED to that watch
    let (code, body) = lab.http(
        "GET",
        &format!("/api/v1/namespaces/default/pods?watch=1&resourceVersion={from}&labelSelector=n%3D4&timeoutSeconds=1"),
        "",
        "",
    )?;
    ensure!(code == 200);
    let types: Vec<String> = watch_lines(&body)?
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .collect();
    ensure!(types == ["ADDED", "DELETED"], "{types:?} {body}");
    Ok(())
}

fn strategic_patch_conditions() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    lab.create("pod.yaml", POD)?;
    lab.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        RUNNING,
    ])?;
    lab.ok(&[
        "patch", "pod", "web", "--subresource=status", "--type=strategic", "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"ContainersNotReady"},{"type":"Initialized","status":"True"}]}}"#,
    ])?;
    let pod = lab.get_json("/api/v1/namespaces/default/pods/web")?;
    ensure!(
        pod["status"]["conditions"]
            == json!([
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                {"type": "Initialized", "status": "True"}]),
        "{}",
        pod["status"]
    );
    ensure!(pod["status"]["podIP"] == "10.1.0.5");
    // a merge patch replaces the list
    lab.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ])?;
    let pod = lab.get_json("/api/v1/namespaces/default/pods/web")?;
    ensure!(pod["status"]["conditions"] == json!([{"type": "Ready", "status": "True"}]));
    // the main resource ignores status; the status subresource ignores everything else
    lab.ok(&[
        "patch",
        "pod",
        "web",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ])?;
    lab.ok(&[
        "patch", "pod", "web", "--subresource=status", "--type=json", "-p",
        r#"[{"op":"add","path":"/metadata/labels/sneaky","value":"x"},{"op":"replace","path":"/status/phase","value":"Succeeded"}]"#,
    ])?;
    let pod = lab.get_json("/api/v1/namespaces/default/pods/web")?;
    ensure!(
        pod["status"]["phase"] == "Succeeded" && pod["metadata"]["labels"].get("sneaky").is_none(),
        "{pod}"
    );
    // a pod's spec is immutable but for images (and a few fields)
    lab.ok(&["set", "image", "pod/web", "c=busybox:1.37"])?;
    let err = lab.fails(&[
        "patch",
        "pod",
        "web",
        "--type=strategic",
        "-p",
        r#"{"spec":{"nodeName":"node-b"}}"#,
    ])?;
    ensure!(
        err.contains(r#"The Pod "web" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"#),
        "{err}"
    );
    let pod = lab.get_json("/api/v1/namespaces/default/pods/web")?;
    ensure!(
        pod["spec"]["containers"][0]["image"] == "busybox:1.37"
            && pod["spec"]["nodeName"] == "node-a"
    );
    Ok(())
}

fn services_table() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    lab.create(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.10\n  selector: {app: web, tier: front}\n  ports:\n  - {port: 80, nodePort: 30080}\n  - {port: 53, protocol: UDP, nodePort: 30053}\n",
    )?;
    let t = table(&lab.ok(&["get", "svc", "-o", "wide"])?);
    ensure!(
        t[0] == [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ],
        "{t:?}"
    );
    ensure!(
        t[1][..5]
            == [
                "web",
                "NodePort",
                "10.96.0.10",
                "<none>",
                "80:30080/TCP,53:30053/UDP"
            ],
        "{t:?}"
    );
    ensure!(t[1][6] == "app=web,tier=front", "{t:?}");
    // the controller's objects, written by a test
    lab.create(
        "ep.yaml",
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets:\n- addresses: [{ip: 10.1.0.5}, {ip: 10.1.0.6}, {ip: 10.1.0.7}]\n  ports: [{port: 80}, {port: 53, protocol: UDP}]\n",
    )?;
    let t = table(&lab.ok(&["get", "endpoints"])?);
    ensure!(t[0] == ["NAME", "ENDPOINTS", "AGE"], "{t:?}");
    ensure!(
        t[1][1] == "10.1.0.5:80,10.1.0.6:80,10.1.0.7:80 + 3 more...",
        "{t:?}"
    );
    lab.create(
        "eps.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-abc12, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{port: 80, name: http}]\nendpoints:\n- addresses: [10.1.0.5]\n  conditions: {ready: true}\n  nodeName: node-a\n",
    )?;
    let t = table(&lab.ok(&["get", "endpointslices"])?);
    ensure!(
        t[0] == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        "{t:?}"
    );
    ensure!(
        t[1][..4] == ["web-abc12", "IPv4", "80", "10.1.0.5"],
        "{t:?}"
    );
    // `get all` reaches pods and services through the `all` category
    lab.create("pod.yaml", POD)?;
    let all = lab.ok(&["get", "all", "-o", "name"])?;
    ensure!(
        all.lines().collect::<Vec<_>>() == ["pod/web", "service/web"],
        "{all}"
    );
    Ok(())
}

fn selectors() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    lab.create("a.yaml", &POD.replace("name: web\n", "name: a\n"))?;
    lab.create(
        "b.yaml",
        &POD.replace("name: web\n", "name: b\n")
            .replace("app: web", "app: db")
            .replace("node-a", "node-b"),
    )?;
    lab.create(
        "c.yaml",
        &POD.replace("name: web\n", "name: c\n")
            .replace("  labels: {app: web}\n", "")
            .replace("  nodeName: node-a\n", ""),
    )?;
    let names = |args: &[&str]| -> anyhow::Result<Vec<String>> {
        let mut a = vec!["get", "pods", "-o", "name"];
        a.extend_from_slice(args);
        Ok(lab
            .ok(&a)?
            .lines()
            .map(|l| l.trim_start_matches("pod/").to_string())
            .collect())
    };
    ensure!(names(&["-l", "app=web"])? == ["a"]);
    ensure!(names(&["-l", "app in (web,db)"])? == ["a", "b"]);
    ensure!(names(&["-l", "!app"])? == ["c"]);
    ensure!(names(&["-l", "app!=web"])? == ["b", "c"]);
    ensure!(names(&["-l", "app notin (db),app"])? == ["a"]);
    ensure!(names(&["--field-selector", "spec.nodeName=node-b"])? == ["b"]);
    ensure!(names(&["--field-selector", "spec.nodeName="])? == ["c"]);
    ensure!(names(&["--field-selector", "metadata.name!=a,status.phase=Pending"])? == ["b", "c"]);
    ensure!(
        names(&[
            "-A",
            "--field-selector",
            "metadata.namespace=default,spec.nodeName=node-a"
        ])? == ["a"]
    );
    let err = lab.fails(&["get", "pods", "--field-selector", "spec.foo=x"])?;
    ensure!(err.contains("field label not supported: spec.foo"), "{err}");
    let err = lab.fails(&["get", "nodes", "--field-selector", "spec.nodeName=x"])?;
    ensure!(
        err.contains("field label not supported: spec.nodeName"),
        "{err}"
    );
    Ok(())
}

/// The `kn-apiserver` binary: listens on a free port, writes a kubeconfig kubectl can use, and
/// exits cleanly on SIGTERM.
fn binary() -> anyhow::Result<()> {
    let dir = TestDir::new(&unique_tag("apb"))?;
    let kubeconfig = dir.join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kn-apiserver"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // kill it whatever happens below
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let mut written = false;
    for _ in 0..400 {
        if std::fs::read_to_string(&kubeconfig).is_ok_and(|k| k.contains("current-context")) {
            written = true;
            break;
        }
        if child.try_wait()?.is_some() {
            bail!("kn-apiserver exited early");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let mut reap = Reap(child);
    ensure!(written, "kn-apiserver wrote no kubeconfig");
    let mut cmd = Command::new(KUBECTL);
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(["--request-timeout=10s", "get", "namespaces", "-o", "name"])
        .env("HOME", dir.path());
    let out = run(&mut cmd, Duration::from_secs(30))?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        names.lines().collect::<Vec<_>>()
            == [
                "namespace/default",
                "namespace/kube-node-lease",
                "namespace/kube-public",
                "namespace/kube-system"
            ],
        "{names}"
    );
    // SIGTERM: a clean exit
    let rc = send_sigterm(pid)?;
    ensure!(rc, "kill -TERM failed");
    let mut status = None;
    for _ in 0..400 {
        if let Some(s) = reap.0.try_wait()? {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let status = status.context("kn-apiserver did not exit on SIGTERM")?;
    ensure!(status.success(), "kn-apiserver exited with {status}");
    Ok(())
}

/// `kill -TERM <pid>` through the kill(1) command.
fn send_sigterm(pid: u32) -> anyhow::Result<bool> {
    let out = run(
        Command::new("kill").args(["-TERM", &pid.to_string()]),
        Duration::from_secs(10),
    )?;
    Ok(out.status.success())
}

/// An API server that goes away and comes back (fault tests): kubectl fails while it is away,
/// the objects and versions survive, a watch from before resumes, one from the future gets
/// upstream's "Too large resource version".
fn pause_resume() -> anyhow::Result<()> {
    let mut lab = Lab::new()?;
    lab.create("pod.yaml", POD)?;
    let uid = lab.ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"])?;
    let rv = lab.server.resource_version();
    lab.server.pause();
    let err = lab.fails(&["get", "pod", "web"])?;
    ensure!(err.contains("was refused"), "{err}");
    lab.server.resume()?;
    ensure!(lab.ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"])? == uid);
    lab.ok(&["label", "pod", "web", "back=yes"])?;
    let (code, body) = lab.http(
        "GET",
        &format!("/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1"),
        "",
        "",
    )?;
    ensure!(code == 200);
    let events = watch_lines(&body)?;
    ensure!(
        events.len() == 1 && events[0]["type"] == "MODIFIED",
        "{body}"
    );
    ensure!(
        events[0]["object"]["metadata"]["labels"]["back"] == "yes",
        "{body}"
    );
    let future = lab.server.resource_version() + 10;
    let (code, body) = lab.http(
        "GET",
        &format!(
            "/api/v1/namespaces/default/pods?watch=1&resourceVersion={future}&timeoutSeconds=1"
        ),
        "",
        "",
    )?;
    ensure!(code == 200);
    let events = watch_lines(&body)?;
    let st = &events[0]["object"];
    ensure!(
        events[0]["type"] == "ERROR" && st["code"] == 504 && st["reason"] == "Timeout",
        "{body}"
    );
    ensure!(
        st["message"]
            == format!(
                "Too large resource version: {future}, current: {}",
                future - 10
            ),
        "{body}"
    );
    ensure!(
        st["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge",
        "{body}"
    );
    Ok(())
}

/// A scheduler's binding: the pod enters a kubelet's watch (`spec.nodeName=<node>`) as ADDED,
/// scheduled; a second binding is a 409.
fn binding() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    lab.create("pod.yaml", &POD.replace("  nodeName: node-a\n", ""))?;
    let rv = lab.server.resource_version();
    let bind = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-a"}});
    let path = "/api/v1/namespaces/default/pods/web/binding";
    let (code, body) = lab.http("POST", path, "application/json", &bind.to_string())?;
    ensure!(code == 201, "{code} {body}");
    let (code, body) = lab.http(
        "GET",
        &format!("/api/v1/pods?watch=1&resourceVersion={rv}&fieldSelector=spec.nodeName%3Dnode-a&timeoutSeconds=1"),
        "",
        "",
    )?;
    ensure!(code == 200);
    let events = watch_lines(&body)?;
    ensure!(events.len() == 1 && events[0]["type"] == "ADDED", "{body}");
    let pod = &events[0]["object"];
    ensure!(pod["spec"]["nodeName"] == "node-a", "{body}");
    ensure!(
        pod["status"]["conditions"].as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True")),
        "{body}"
    );
    let (code, body) = lab.http("POST", path, "application/json", &bind.to_string())?;
    ensure!(code == 409, "{code} {body}");
    let st: Value = serde_json::from_str(&body)?;
    ensure!(
        st["message"]
            == r#"Operation cannot be fulfilled on pods/binding "web": pod web is already assigned to node "node-a""#,
        "{body}"
    );
    Ok(())
}

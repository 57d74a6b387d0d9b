//! `kubenode describe pod`: kubectl's describe layout for a pod and its events.

use std::fmt::Write;

use k8s_openapi::api::core::v1::{Container, ContainerState, ContainerStatus, Event, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use kubenode_kubelet::events::{describe_event, DESCRIBE_EVENT_COLUMNS};

fn rfc1123z(t: &Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S %z").to_string()
}

fn field(out: &mut String, indent: usize, name: &str, value: impl std::fmt::Display) {
    let label = format!("{name}:");
    // kubectl's tabwriter puts top-level values at column 18 and nested ones at column 20.
    let column = if indent == 0 { 18 } else { 20 };
    let width = column - indent;
    let _ = writeln!(out, "{:indent$}{label:<width$}{value}", "");
}

fn map_lines(
    out: &mut String,
    name: &str,
    map: Option<&std::collections::BTreeMap<String, String>>,
    sep: &str,
) {
    match map.filter(|m| !m.is_empty()) {
        None => field(out, 0, name, "<none>"),
        Some(m) => {
            for (i, (k, v)) in m.iter().enumerate() {
                let line = format!("{k}{sep}{v}");
                if i == 0 {
                    field(out, 0, name, line);
                } else {
                    let _ = writeln!(out, "{:18}{line}", "");
                }
            }
        }
    }
}

fn port_str(p: &IntOrString) -> String {
    match p {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// kubectl's one-line probe description.
pub fn probe_line(p: &Probe) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds.unwrap_or(0),
        p.timeout_seconds.unwrap_or(1),
        p.period_seconds.unwrap_or(10),
        p.success_threshold.unwrap_or(1),
        p.failure_threshold.unwrap_or(3)
    );
    if let Some(e) = &p.exec {
        return format!(
            "exec [{}] {attrs}",
            e.command.clone().unwrap_or_default().join(" ")
        );
    }
    if let Some(h) = &p.http_get {
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
        let host = h.host.clone().unwrap_or_default();
        let path = h.path.clone().unwrap_or_default();
        return format!(
            "http-get {scheme}://{host}:{}{path} {attrs}",
            port_str(&h.port)
        );
    }
    if let Some(t) = &p.tcp_socket {
        return format!(
            "tcp-socket {}:{} {attrs}",
            t.host.clone().unwrap_or_default(),
            port_str(&t.port)
        );
    }
    if let Some(g) = &p.grpc {
        return format!(
            "grpc <pod>:{} {} {attrs}",
            g.port,
            g.service.clone().unwrap_or_default()
        );
    }
    format!("unknown {attrs}")
}

fn state(out: &mut String, label: &str, s: Option<&ContainerState>) {
    let Some(s) = s else {
        field(out, 4, label, "<none>");
        return;
    };
    if let Some(r) = &s.running {
        field(out, 4, label, "Running");
        if let Some(t) = &r.started_at {
            field(out, 6, "Started", rfc1123z(&t.0));
        }
    } else if let Some(w) = &s.waiting {
        field(out, 4, label, "Waiting");
        if let Some(r) = &w.reason {
            field(out, 6, "Reason", r);
        }
        if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
            field(out, 6, "Message", m);
        }
    } else if let Some(t) = &s.terminated {
        field(out, 4, label, "Terminated");
        if let Some(r) = &t.reason {
            field(out, 6, "Reason", r);
        }
        if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
            field(out, 6, "Message", m);
        }
        field(out, 6, "Exit Code", t.exit_code);
        if let Some(sig) = t.signal.filter(|s| *s != 0) {
            field(out, 6, "Signal", sig);
        }
        if let Some(t0) = &t.started_at {
            field(out, 6, "Started", rfc1123z(&t0.0));
        }
        if let Some(t1) = &t.finished_at {
            field(out, 6, "Finished", rfc1123z(&t1.0));
        }
    } else {
        field(out, 4, label, "<none>");
    }
}

/// The latest `Unhealthy`/`ProbeWarning` event of container `name`'s `label` probe, as
/// `"<detail> (<age> ago)"`.
fn last_probe_failure(events: &[Event], name: &str, label: &str, now: Timestamp) -> Option<String> {
    let path = format!("{{{name}}}");
    let prefix = format!("{label} probe ");
    let e = events
        .iter()
        .filter(|e| {
            matches!(e.reason.as_deref(), Some("Unhealthy" | "ProbeWarning"))
                && e.involved_object
                    .field_path
                    .as_deref()
                    .is_some_and(|p| p.ends_with(&path))
                && e.message.as_deref().is_some_and(|m| m.starts_with(&prefix))
        })
        .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))?;
    let message = e.message.as_deref().unwrap_or_default();
    let detail = message
        .split_once(": ")
        .map_or(message, |(_, d)| d)
        .trim_end();
    let age = e.last_timestamp.as_ref().map_or_else(
        || "<unknown>".to_string(),
        |t| kubenode_kubelet::status::human_duration(now.as_second() - t.0.as_second()),
    );
    Some(format!("{detail} ({age} ago)"))
}

fn container(
    out: &mut String,
    c: &Container,
    cs: Option<&ContainerStatus>,
    events: &[Event],
    now: Timestamp,
) {
    let _ = writeln!(out, "  {}:", c.name);
    let id = cs.and_then(|s| s.container_id.clone()).unwrap_or_default();
    field(out, 4, "Container ID", id);
    field(out, 4, "Image", c.image.clone().unwrap_or_default());
    field(
        out,
        4,
        "Image ID",
        cs.map(|s| s.image_id.clone()).unwrap_or_default(),
    );
    let ports: Vec<String> = c
        .ports
        .iter()
        .flatten()
        .map(|p| {
            format!(
                "{}/{}",
                p.container_port,
                p.protocol.as_deref().unwrap_or("TCP")
            )
        })
        .collect();
    field(
        out,
        4,
        "Port",
        if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(", ")
        },
    );
    for (label, list) in [("Command", &c.command), ("Args", &c.args)] {
        if let Some(list) = list.as_ref().filter(|l| !l.is_empty()) {
            let _ = writeln!(out, "    {label}:");
            for a in list {
                let _ = writeln!(out, "      {a}");
            }
        }
    }
    state(out, "State", cs.and_then(|s| s.state.as_ref()));
    if let Some(last) = cs
        .and_then(|s| s.last_state.as_ref())
        .filter(|l| l.terminated.is_some())
    {
        state(out, "Last State", Some(last));
    }
    field(
        out,
        4,
        "Ready",
        if cs.is_some_and(|s| s.ready) {
            "True"
        } else {
            "False"
        },
    );
    field(out, 4, "Restart Count", cs.map_or(0, |s| s.restart_count));
    for (label, probe) in [
        ("Liveness", &c.liveness_probe),
        ("Readiness", &c.readiness_probe),
        ("Startup", &c.startup_probe),
    ] {
        if let Some(p) = probe {
            field(out, 4, label, probe_line(p));
            if let Some(last) = last_probe_failure(events, &c.name, label, now) {
                field(out, 6, "Last failure", last);
            }
        }
    }
    let env: Vec<String> = c
        .env
        .iter()
        .flatten()
        .map(|e| match (&e.value, &e.value_from) {
            (Some(v), _) => format!("{}:  {v}", e.name),
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    format!(
                        "{}:   ({}:{})",
                        e.name,
                        f.api_version.as_deref().unwrap_or("v1"),
                        f.field_path
                    )
                } else if let Some(r) = &from.secret_key_ref {
                    // kubectl's words; never the value.
                    format!(
                        "{}:  <set to the key '{}' in secret '{}'>  Optional: {}",
                        e.name,
                        r.key,
                        r.name,
                        r.optional == Some(true)
                    )
                } else if let Some(r) = &from.config_map_key_ref {
                    format!(
                        "{}:  <set to the key '{}' of config map '{}'>  Optional: {}",
                        e.name,
                        r.key,
                        r.name,
                        r.optional == Some(true)
                    )
                } else {
                    format!("{}:  <set from a source>", e.name)
                }
            }
            (None, None) => format!("{}:  ", e.name),
        })
        .collect();
    // kubectl prints the envFrom sources (when there are any) before the variables.
    let from: Vec<String> = c
        .env_from
        .iter()
        .flatten()
        .map(|f| {
            let (name, kind, optional) = match (&f.config_map_ref, &f.secret_ref) {
                (Some(r), _) => (r.name.as_str(), "ConfigMap", r.optional == Some(true)),
                (None, Some(r)) => (r.name.as_str(), "Secret", r.optional == Some(true)),
                (None, None) => ("", "", false),
            };
            match f.prefix.as_deref().filter(|p| !p.is_empty()) {
                Some(p) => format!("{name}  {kind} with prefix '{p}'  Optional: {optional}"),
                None => format!("{name}  {kind}  Optional: {optional}"),
            }
        })
        .collect();
    if !from.is_empty() {
        list_field(out, "Environment Variables from", &from);
    }
    list_field(out, "Environment", &env);
    let mounts: Vec<String> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let mode = if m.read_only == Some(true) {
                "ro"
            } else {
                "rw"
            };
            let sub = m
                .sub_path
                .as_deref()
                .map(|s| format!(",path=\"{s}\""))
                .unwrap_or_default();
            format!("{} from {} ({mode}{sub})", m.mount_path, m.name)
        })
        .collect();
    list_field(out, "Mounts", &mounts);
}

fn list_field(out: &mut String, label: &str, items: &[String]) {
    if items.is_empty() {
        field(out, 4, label, "<none>");
    } else {
        let _ = writeln!(out, "    {label}:");
        for i in items {
            let _ = writeln!(out, "      {i}");
        }
    }
}

/// The whole `describe pod` text for `pod` with its `events` (already filtered to this pod).
pub fn describe_pod(pod: &Pod, events: &[Event], now: Timestamp) -> String {
    let mut out = String::new();
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    field(&mut out, 0, "Name", meta.name.clone().unwrap_or_default());
    field(
        &mut out,
        0,
        "Namespace",
        meta.namespace.clone().unwrap_or_default(),
    );
    field(&mut out, 0, "Priority", spec.priority.unwrap_or(0));
    let node = match (&spec.node_name, &status.host_ip) {
        (Some(n), Some(ip)) => format!("{n}/{ip}"),
        (Some(n), None) => n.clone(),
        _ => "<none>".into(),
    };
    field(&mut out, 0, "Node", node);
    if let Some(t) = &status.start_time {
        field(&mut out, 0, "Start Time", rfc1123z(&t.0));
    }
    map_lines(&mut out, "Labels", meta.labels.as_ref(), "=");
    map_lines(&mut out, "Annotations", meta.annotations.as_ref(), ": ");
    let phase = if meta.deletion_timestamp.is_some() {
        "Terminating".to_string()
    } else {
        status.phase.clone().unwrap_or_default()
    };
    field(&mut out, 0, "Status", phase);
    if let Some(r) = &status.reason {
        field(&mut out, 0, "Reason", r);
    }
    if let Some(m) = &status.message {
        field(&mut out, 0, "Message", m);
    }
    field(&mut out, 0, "IP", status.pod_ip.clone().unwrap_or_default());
    let ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|i| i.ip.clone())
        .collect();
    if ips.is_empty() {
        field(&mut out, 0, "IPs", "<none>");
    } else {
        let _ = writeln!(out, "IPs:");
        for ip in ips {
            let _ = writeln!(out, "  IP:  {ip}");
        }
    }
    let find = |list: &Option<Vec<ContainerStatus>>, name: &str| {
        list.iter().flatten().find(|s| s.name == name).cloned()
    };
    if let Some(inits) = spec.init_containers.as_ref().filter(|l| !l.is_empty()) {
        let _ = writeln!(out, "Init Containers:");
        for c in inits {
            container(
                &mut out,
                c,
                find(&status.init_container_statuses, &c.name).as_ref(),
                events,
                now,
            );
        }
    }
    let _ = writeln!(out, "Containers:");
    for c in &spec.containers {
        container(
            &mut out,
            c,
            find(&status.container_statuses, &c.name).as_ref(),
            events,
            now,
        );
    }
    let _ = writeln!(out, "Conditions:");
    let _ = writeln!(out, "  Type                        Status");
    for c in status.conditions.iter().flatten() {
        let _ = writeln!(out, "  {:<28}{}", c.type_, c.status);
    }
    // From `Volumes:` to `Events:` kubectl's tabwriter aligns every run of lines that have a
    // label cell: each volume's fields, the last one's with the lines that follow.
    let mut lines = Vec::new();
    volume_lines(&mut lines, spec.volumes.as_deref().unwrap_or_default());
    cell_line(
        &mut lines,
        "QoS Class:",
        status.qos_class.clone().unwrap_or_default(),
    );
    match spec.node_selector.as_ref().filter(|m| !m.is_empty()) {
        None => cell_line(&mut lines, "Node-Selectors:", "<none>"),
        Some(m) => {
            for (i, (k, v)) in m.iter().enumerate() {
                let label = if i == 0 { "Node-Selectors:" } else { "" };
                cell_line(&mut lines, label, format!("{k}={v}"));
            }
        }
    }
    let tolerations = toleration_lines(spec.tolerations.as_deref().unwrap_or_default());
    if tolerations.is_empty() {
        cell_line(&mut lines, "Tolerations:", "<none>");
    }
    for (i, t) in tolerations.into_iter().enumerate() {
        cell_line(&mut lines, if i == 0 { "Tolerations:" } else { "" }, t);
    }
    if events.is_empty() {
        cell_line(&mut lines, "Events:", "<none>");
        out.push_str(&tabbed(&lines));
    } else {
        out.push_str(&tabbed(&lines));
        out.push_str(&events_section(events, now));
    }
    out
}

/// The pod's tolerations as kubectl's `printTolerationsMultilineWithIndent` writes them, sorted
/// by key: `key[=value][:effect][ op=Exists][ for Ns]` (a bare `operator: Exists`, which
/// tolerates everything, prints as `op=Exists`).
fn toleration_lines(tolerations: &[k8s_openapi::api::core::v1::Toleration]) -> Vec<String> {
    let mut sorted: Vec<_> = tolerations.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    sorted
        .into_iter()
        .map(|t| {
            let key = t.key.as_deref().unwrap_or("");
            let value = t.value.as_deref().unwrap_or("");
            let effect = t.effect.as_deref().unwrap_or("");
            let mut line = key.to_string();
            if !value.is_empty() {
                line += &format!("={value}");
            }
            if !effect.is_empty() {
                line += &format!(":{effect}");
            }
            if t.operator.as_deref() == Some("Exists") && value.is_empty() {
                line += if key.is_empty() && effect.is_empty() {
                    "op=Exists"
                } else {
                    " op=Exists"
                };
            }
            if let Some(seconds) = t.toleration_seconds {
                line += &format!(" for {seconds}s");
            }
            line
        })
        .collect()
}

/// One output line for [`tabbed`]: a label cell (kubectl's text before a tab; `None`: the line
/// has no tab) and the rest.
type Line = (Option<String>, String);

fn cell_line(lines: &mut Vec<Line>, cell: &str, rest: impl std::fmt::Display) {
    lines.push((Some(cell.to_string()), rest.to_string()));
}

fn plain_line(lines: &mut Vec<Line>, text: impl std::fmt::Display) {
    lines.push((None, text.to_string()));
}

/// Go's `text/tabwriter` as kubectl's describe sets it up (padding 2, spaces): every run of
/// consecutive lines with a label cell pads the cells to the run's widest plus two.
fn tabbed(lines: &[Line]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(_) = &lines[i].0 else {
            let _ = writeln!(out, "{}", lines[i].1);
            i += 1;
            continue;
        };
        let end = lines[i..]
            .iter()
            .position(|l| l.0.is_none())
            .map_or(lines.len(), |n| i + n);
        let width = lines[i..end]
            .iter()
            .filter_map(|l| l.0.as_ref().map(|c| c.chars().count()))
            .max()
            .unwrap_or(0)
            + 2;
        for (cell, rest) in &lines[i..end] {
            let cell = cell.as_deref().unwrap_or_default();
            let _ = writeln!(out, "{cell:<width$}{rest}");
        }
        i = end;
    }
    out
}

/// An optional reference's `optional` as kubectl 1.32 prints the pointer of a projection
/// (`%v` of a `*bool`): `<nil>` when unset; a set one is shown by its value (kubectl prints
/// the pointer's address there).
fn optional_ptr(o: Option<bool>) -> String {
    o.map_or_else(|| "<nil>".to_string(), |b| b.to_string())
}

/// The `Volumes:` lines as kubectl's `describeVolumes`.
fn volume_lines(lines: &mut Vec<Line>, volumes: &[k8s_openapi::api::core::v1::Volume]) {
    if volumes.is_empty() {
        cell_line(lines, "Volumes:", "<none>");
        return;
    }
    plain_line(lines, "Volumes:");
    for v in volumes {
        plain_line(lines, format!("  {}:", v.name));
        let f = |lines: &mut Vec<Line>, name: &str, value: String| {
            cell_line(lines, &format!("    {name}:"), value)
        };
        if let Some(e) = &v.empty_dir {
            f(
                lines,
                "Type",
                "EmptyDir (a temporary directory that shares a pod's lifetime)".into(),
            );
            f(lines, "Medium", e.medium.clone().unwrap_or_default());
            let size = e
                .size_limit
                .as_ref()
                .map(|q| q.0.clone())
                // kubectl shows a positive limit only
                .filter(|q| q.chars().any(|c| c.is_ascii_digit() && c != '0'));
            f(lines, "SizeLimit", size.unwrap_or_else(|| "<unset>".into()));
        } else if let Some(h) = &v.host_path {
            f(
                lines,
                "Type",
                "HostPath (bare host directory volume)".into(),
            );
            f(lines, "Path", h.path.clone());
            f(
                lines,
                "HostPathType",
                h.type_.clone().unwrap_or_else(|| "<none>".into()),
            );
        } else if let Some(n) = &v.nfs {
            f(
                lines,
                "Type",
                "NFS (an NFS mount that lasts the lifetime of a pod)".into(),
            );
            f(lines, "Server", n.server.clone());
            f(lines, "Path", n.path.clone());
            f(lines, "ReadOnly", n.read_only.unwrap_or(false).to_string());
        } else if let Some(s) = &v.secret {
            f(
                lines,
                "Type",
                "Secret (a volume populated by a Secret)".into(),
            );
            f(
                lines,
                "SecretName",
                s.secret_name.clone().unwrap_or_default(),
            );
            f(lines, "Optional", s.optional.unwrap_or(false).to_string());
        } else if let Some(c) = &v.config_map {
            f(
                lines,
                "Type",
                "ConfigMap (a volume populated by a ConfigMap)".into(),
            );
            f(lines, "Name", c.name.clone());
            f(lines, "Optional", c.optional.unwrap_or(false).to_string());
        } else if let Some(d) = &v.downward_api {
            f(
                lines,
                "Type",
                "DownwardAPI (a volume populated by information about the pod)".into(),
            );
            plain_line(lines, "    Items:");
            for item in d.items.iter().flatten() {
                if let Some(r) = &item.field_ref {
                    plain_line(lines, format!("      {} -> {}", r.field_path, item.path));
                }
                if let Some(r) = &item.resource_field_ref {
                    plain_line(lines, format!("      {} -> {}", r.resource, item.path));
                }
            }
        } else if let Some(p) = &v.projected {
            f(
                lines,
                "Type",
                "Projected (a volume that contains injected data from multiple sources)".into(),
            );
            for source in p.sources.iter().flatten() {
                if let Some(s) = &source.secret {
                    f(lines, "SecretName", s.name.clone());
                    f(lines, "SecretOptionalName", optional_ptr(s.optional));
                } else if source.downward_api.is_some() {
                    f(lines, "DownwardAPI", "true".into());
                } else if let Some(c) = &source.config_map {
                    f(lines, "ConfigMapName", c.name.clone());
                    f(lines, "ConfigMapOptional", optional_ptr(c.optional));
                } else if let Some(t) = &source.service_account_token {
                    f(
                        lines,
                        "TokenExpirationSeconds",
                        t.expiration_seconds.unwrap_or(3600).to_string(),
                    );
                }
            }
        } else {
            plain_line(lines, "  <unknown>");
        }
    }
}

/// The `Events:` section.
pub fn events_section(events: &[Event], now: Timestamp) -> String {
    if events.is_empty() {
        return "Events:            <none>\n".into();
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| describe_event(e, now).to_vec())
        .collect();
    let mut all = vec![vec![
        "----".to_string(),
        "------".into(),
        "----".into(),
        "----".into(),
        "-------".into(),
    ]];
    all.extend(rows);
    let table = super::table::render(&DESCRIBE_EVENT_COLUMNS, &all);
    let mut out = String::from("Events:\n");
    for line in table.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction};

    use super::*;

    #[test]
    fn probe_lines_match_kubectl() {
        let p = Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::Int(8080),
                ..Default::default()
            }),
            initial_delay_seconds: Some(3),
            ..Default::default()
        };
        assert_eq!(
            probe_line(&p),
            "http-get http://:8080/healthz delay=3s timeout=1s period=10s #success=1 #failure=3"
        );
        let p = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["cat".into(), "/tmp/healthy".into()]),
            }),
            period_seconds: Some(2),
            ..Default::default()
        };
        assert_eq!(
            probe_line(&p),
            "exec [cat /tmp/healthy] delay=0s timeout=1s period=2s #success=1 #failure=3"
        );
    }

    #[test]
    fn probes_with_their_last_failure() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("live-n1".into());
        let probe = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["cat".into(), "/tmp/healthy".into()]),
            }),
            initial_delay_seconds: Some(2),
            period_seconds: Some(2),
            ..Default::default()
        };
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            containers: vec![Container {
                name: "app".into(),
                liveness_probe: Some(probe.clone()),
                readiness_probe: Some(probe),
                ..Default::default()
            }],
            ..Default::default()
        });
        let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let at = |t: &str| {
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                t.parse().unwrap(),
            ))
        };
        let unhealthy = |message: &str, last: &str| Event {
            type_: Some("Warning".into()),
            reason: Some("Unhealthy".into()),
            message: Some(message.into()),
            involved_object: k8s_openapi::api::core::v1::ObjectReference {
                field_path: Some("spec.containers{app}".into()),
                ..Default::default()
            },
            last_timestamp: at(last),
            ..Default::default()
        };
        let events = [
            unhealthy("Liveness probe failed: old", "2026-11-28T11:59:00Z"),
            unhealthy(
                "Liveness probe failed: cat: can't open '/tmp/healthy'\n",
                "2026-11-28T11:59:57Z",
            ),
        ];
        let text = describe_pod(&pod, &events, now);
        assert!(
            text.contains(
                "    Liveness:       exec [cat /tmp/healthy] delay=2s timeout=1s period=2s #success=1 #failure=3\n      Last failure: cat: can't open '/tmp/healthy' (3s ago)\n    Readiness:      exec"
            ),
            "{text}"
        );
        assert_eq!(text.matches("Last failure").count(), 1, "{text}");
    }

    #[test]
    fn env_sources_as_kubectl_without_values() {
        use k8s_openapi::api::core::v1::{
            ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
            SecretEnvSource, SecretKeySelector,
        };
        let pod = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    env_from: Some(vec![
                        EnvFromSource {
                            config_map_ref: Some(ConfigMapEnvSource {
                                name: "cfg".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        },
                        EnvFromSource {
                            secret_ref: Some(SecretEnvSource {
                                name: "creds".into(),
                                optional: Some(true),
                            }),
                            prefix: Some("S_".into()),
                            ..Default::default()
                        },
                    ]),
                    env: Some(vec![
                        EnvVar {
                            name: "MODE".into(),
                            value_from: Some(EnvVarSource {
                                config_map_key_ref: Some(ConfigMapKeySelector {
                                    name: "cfg".into(),
                                    key: "mode".into(),
                                    optional: None,
                                }),
                                ..Default::default()
                            }),
                            value: None,
                        },
                        EnvVar {
                            name: "PW".into(),
                            value_from: Some(EnvVarSource {
                                secret_key_ref: Some(SecretKeySelector {
                                    name: "creds".into(),
                                    key: "password".into(),
                                    optional: Some(true),
                                }),
                                ..Default::default()
                            }),
                            value: None,
                        },
                    ]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let text = describe_pod(&pod, &[], now);
        let want = "    Environment Variables from:\n      cfg  ConfigMap  Optional: false\n      creds  Secret with prefix 'S_'  Optional: true\n    Environment:\n      MODE:  <set to the key 'mode' of config map 'cfg'>  Optional: false\n      PW:  <set to the key 'password' in secret 'creds'>  Optional: true\n";
        assert!(text.contains(want), "{text}");
    }

    #[test]
    fn tolerations_as_kubectl_prints_them() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "tolerations": [
                    {"key": "spot", "operator": "Exists", "effect": "NoExecute"},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"},
                    {"operator": "Exists"}
                ]
            }
        }))
        .unwrap();
        let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let text = describe_pod(&pod, &[], now);
        let want = "Tolerations:     op=Exists\n\
                    \x20                dedicated=db:NoSchedule\n\
                    \x20                node.kubernetes.io/unreachable:NoExecute op=Exists for 300s\n\
                    \x20                spot:NoExecute op=Exists\n\
                    Events:          <none>\n";
        assert!(text.ends_with(want), "{text}");
    }

    #[test]
    fn describes_a_pod() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web-n1".into());
        pod.metadata.namespace = Some("default".into());
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            node_name: Some("n1".into()),
            node_selector: Some(
                [("disktype", "ssd"), ("kubernetes.io/os", "linux")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        });
        let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let event = Event {
            type_: Some("Warning".into()),
            reason: Some("BackOff".into()),
            message: Some("Back-off restarting failed container".into()),
            count: Some(3),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("kubelet".into()),
                host: None,
            }),
            first_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-28T11:59:00Z".parse().unwrap(),
            )),
            last_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-28T11:59:50Z".parse().unwrap(),
            )),
            ..Default::default()
        };
        let text = describe_pod(&pod, &[event], now);
        assert!(
            text.starts_with("Name:             web-n1\nNamespace:        default\n"),
            "{text}"
        );
        assert!(
            text.contains("  app:\n    Container ID:   \n    Image:          busybox\n"),
            "{text}"
        );
        assert!(text.contains("Warning   BackOff   10s (x3 over 60s)   kubelet   Back-off restarting failed container"), "{text}");
        assert!(
            text.contains("Volumes:         <none>\nQoS Class:       \nNode-Selectors:  disktype=ssd\n                 kubernetes.io/os=linux\nTolerations:     <none>\nEvents:\n"),
            "{text}"
        );
    }

    #[test]
    fn volumes_as_kubectl_aligns_them() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "app-config"}},
                    {"name": "creds", "secret": {"secretName": "db", "optional": true}},
                    {"name": "info", "downwardAPI": {"items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                        {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory"}}
                    ]}},
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                    ]}}
                ]
            },
            "status": {"qosClass": "BestEffort"}
        }))
        .unwrap();
        let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let text = describe_pod(&pod, &[], now);
        let want = "Volumes:
  cfg:
    Type:      ConfigMap (a volume populated by a ConfigMap)
    Name:      app-config
    Optional:  false
  creds:
    Type:        Secret (a volume populated by a Secret)
    SecretName:  db
    Optional:    true
  info:
    Type:  DownwardAPI (a volume populated by information about the pod)
    Items:
      metadata.labels -> labels
      limits.memory -> mem
  scratch:
    Type:       EmptyDir (a temporary directory that shares a pod's lifetime)
    Medium:     
    SizeLimit:  <unset>
  kube-api-access-x7k2p:
    Type:                    Projected (a volume that contains injected data from multiple sources)
    TokenExpirationSeconds:  3607
    ConfigMapName:           kube-root-ca.crt
    ConfigMapOptional:       <nil>
    DownwardAPI:             true
QoS Class:                   BestEffort
Node-Selectors:              <none>
Tolerations:                 <none>
Events:                      <none>
";
        let at = text.find("Volumes:").expect("a Volumes section");
        assert_eq!(&text[at..], want);
    }
}

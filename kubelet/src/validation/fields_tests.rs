//! No silently ignored field: every field of `PodSpec` (walked from the k8s-openapi types, so a
//! field a newer API adds fails here until it is placed) is in the table of `fields.rs`, every
//! refusal there is made by `validate_pod` at that field's path, every named test exists, and
//! `docs/pod-fields.md` is the table as generated here (`KUBENODE_BLESS=1` rewrites it).

use super::fields::{Field, Status, FIELDS};
use super::pod_tests::BASE;
use super::walk::{leaf_fields, walk, Node, Shape};
use super::{validate_pod, ErrorKind};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const CONTAINERS: &[&str] = &["spec.containers[*]", "spec.initContainers[*]"];
const PROBES: &[&str] = &["livenessProbe", "readinessProbe", "startupProbe"];

/// The concrete paths of one table path (`{c}` and `{probe}` expanded).
fn expand(path: &str) -> Vec<String> {
    let mut out = vec![path.to_owned()];
    for (key, values) in [("{c}", CONTAINERS), ("{probe}", PROBES)] {
        out = out
            .into_iter()
            .flat_map(|p| {
                if p.contains(key) {
                    values.iter().map(|v| p.replace(key, v)).collect()
                } else {
                    vec![p]
                }
            })
            .collect();
    }
    out
}

/// Whether `entry` is `path` or a field above it.
fn covers(entry: &str, path: &str) -> bool {
    path == entry || (path.starts_with(entry) && path[entry.len()..].starts_with(['.', '[']))
}

fn nodes() -> Vec<Node> {
    walk::<PodSpec>("spec")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the kubelet crate is in the workspace")
        .to_path_buf()
}

#[test]
fn the_walk_sees_nested_fields_lists_and_maps() {
    let nodes = nodes();
    let shape = |p: &str| nodes.iter().find(|n| n.path == p).map(|n| n.shape);
    assert_eq!(
        shape("spec.containers[*].securityContext.procMount"),
        Some(Shape::Str)
    );
    assert_eq!(
        shape("spec.volumes[*].emptyDir.sizeLimit"),
        Some(Shape::Any)
    );
    assert_eq!(shape("spec.containers"), Some(Shape::Seq));
    assert_eq!(shape("spec.nodeSelector"), Some(Shape::Map));
    assert_eq!(shape("spec.hostPID"), Some(Shape::Bool));
    assert_eq!(shape("spec.priority"), Some(Shape::Int));
    let leaves: Vec<&str> = leaf_fields(&nodes)
        .iter()
        .map(|n| n.path.as_str())
        .collect();
    assert!(leaves.contains(&"spec.initContainers[*].livenessProbe.httpGet.port"));
    assert!(leaves.contains(&"spec.containers[*].command"));
    assert!(!leaves.contains(&"spec.containers[*].command[*]"));
    assert!(!leaves.contains(&"spec.containers[*].securityContext"));
}

/// Every field is in exactly one row, and every row names a field that exists.
#[test]
fn every_pod_field_is_implemented_or_refused() {
    let nodes = nodes();
    let rows: Vec<(String, &Field)> = FIELDS
        .iter()
        .flat_map(|f| expand(f.path).into_iter().map(move |p| (p, f)))
        .collect();
    let mut missing = Vec::new();
    let mut twice = Vec::new();
    for leaf in leaf_fields(&nodes) {
        let by: Vec<&str> = rows
            .iter()
            .filter(|(p, _)| covers(p, &leaf.path))
            .map(|(p, _)| p.as_str())
            .collect();
        match by.len() {
            0 => missing.push(leaf.path.clone()),
            1 => {}
            _ => twice.push(format!("{}: {by:?}", leaf.path)),
        }
    }
    assert!(
        missing.is_empty(),
        "fields neither implemented nor refused (add each to kubelet/src/validation/fields.rs):\n{}",
        missing.join("\n")
    );
    assert!(
        twice.is_empty(),
        "fields in more than one row:\n{}",
        twice.join("\n")
    );
    let stale: Vec<&str> = rows
        .iter()
        .filter(|(p, _)| !nodes.iter().any(|n| &n.path == p))
        .map(|(p, _)| p.as_str())
        .collect();
    assert!(stale.is_empty(), "rows naming no field: {stale:?}");
}

/// Every test a row names exists (`<file>::<function>`, the file from the workspace root).
#[test]
fn every_named_test_exists() {
    let root = workspace();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut absent = Vec::new();
    for f in FIELDS {
        let tests: Vec<&str> = match f.status {
            Status::Implemented(t) | Status::Rejected(t) => t.to_vec(),
            Status::Refused { test, .. } => vec![test],
        };
        for t in tests {
            let (file, name) = t.split_once("::").unwrap_or((t, ""));
            let text = files
                .entry(file.to_owned())
                .or_insert_with(|| std::fs::read_to_string(root.join(file)).unwrap_or_default());
            let defined = [format!("fn {name}("), format!("fn {name}<")]
                .iter()
                .any(|d| text.contains(d.as_str()));
            if name.is_empty() || !defined {
                absent.push(format!("{}: {t}", f.path));
            }
        }
    }
    assert!(
        absent.is_empty(),
        "named tests that do not exist:\n{}",
        absent.join("\n")
    );
}

/// A value of `shape` that is not the type's default.
fn sample(shape: Shape, element: Option<Shape>) -> serde_json::Value {
    match shape {
        Shape::Bool => true.into(),
        Shape::Int => 1.into(),
        Shape::Str => "x".into(),
        Shape::Any => "1".into(),
        Shape::Map => serde_json::json!({"k": "v"}),
        Shape::Struct => serde_json::json!({}),
        Shape::Seq => serde_json::Value::Array(vec![sample(element.unwrap_or(Shape::Str), None)]),
    }
}

/// Sets `path` (`a.b[*].c`; `[*]` is the first element, made when missing) in `v`.
fn set(v: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (key, list) = match part.strip_suffix("[*]") {
            Some(k) => (k, true),
            None => (*part, false),
        };
        let last = i + 1 == parts.len();
        if last && !list {
            cur[key] = value;
            return;
        }
        if list {
            if cur[key].as_array().is_none_or(Vec::is_empty) {
                cur[key] = serde_json::json!([{}]);
            }
            cur = &mut cur[key][0];
            if last {
                *cur = value;
                return;
            }
        } else {
            if !cur[key].is_object() {
                cur[key] = serde_json::json!({});
            }
            cur = &mut cur[key];
        }
    }
}

/// The path of an error with indices as `[*]`.
fn generic(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(open) = rest.find('[') {
        let close = rest[open..].find(']').map_or(rest.len(), |c| open + c);
        out.push_str(&rest[..open]);
        let inner = &rest[open + 1..close.min(rest.len())];
        if inner.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str("[*]");
        } else {
            out.push_str(&rest[open..=close.min(rest.len() - 1)]);
        }
        rest = &rest[(close + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// Each refused row, set on the valid base pod (in its first container and its first init
/// container for `{c}`), makes
/// `validate_pod` refuse that very field (`Forbidden` or `Unsupported value` at its path).
#[test]
fn every_refusal_is_made_by_validation() {
    let nodes = nodes();
    let base: serde_json::Value = serde_yaml_ng::from_str(BASE).unwrap();
    let mut wrong = Vec::new();
    for f in FIELDS {
        let Status::Refused { sample: given, .. } = f.status else {
            continue;
        };
        for path in expand(f.path) {
            let node = nodes.iter().find(|n| n.path == path);
            let value = match (given, node) {
                (Some(s), _) => serde_json::from_str(s).unwrap(),
                (None, Some(n)) => {
                    let element = nodes
                        .iter()
                        .find(|e| e.path == format!("{path}[*]"))
                        .map(|e| e.shape);
                    sample(n.shape, element)
                }
                (None, None) => {
                    wrong.push(format!("{path}: not a field"));
                    continue;
                }
            };
            let mut v = base.clone();
            set(&mut v, &path, value.clone());
            let pod: Pod = match serde_json::from_value(v) {
                Ok(p) => p,
                Err(e) => {
                    wrong.push(format!("{path} = {value}: does not decode: {e}"));
                    continue;
                }
            };
            let errs = validate_pod(&pod).err().map(|e| e.0).unwrap_or_default();
            let refused = errs.iter().any(|e| {
                let at = generic(&e.field);
                (at == path || at == format!("{path}[*]"))
                    && matches!(e.kind, ErrorKind::Forbidden | ErrorKind::NotSupported)
            });
            if !refused {
                let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
                wrong.push(format!("{path} = {value}: not refused; errors: {got:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "refusals validation does not make:\n{}",
        wrong.join("\n")
    );
}

/// No implemented row is refused: set on the valid base pod, it gets no error that says
/// kubenode does not support it (other errors, such as a sample value upstream rejects, are
/// not the point here).
#[test]
fn no_implemented_field_is_refused() {
    let nodes = nodes();
    let base: serde_json::Value = serde_yaml_ng::from_str(BASE).unwrap();
    let mut wrong = Vec::new();
    for f in FIELDS {
        if !matches!(f.status, Status::Implemented(_) | Status::Rejected(_)) {
            continue;
        }
        for path in expand(f.path) {
            let Some(n) = nodes.iter().find(|n| n.path == path) else {
                continue;
            };
            let element = nodes
                .iter()
                .find(|e| e.path == format!("{path}[*]"))
                .map(|e| e.shape);
            let mut v = base.clone();
            set(&mut v, &path, sample(n.shape, element));
            let Ok(pod) = serde_json::from_value::<Pod>(v) else {
                continue;
            };
            let errs = validate_pod(&pod).err().map(|e| e.0).unwrap_or_default();
            for e in errs {
                if covers(&generic(&e.field), &path) && e.detail.contains("kubenode") {
                    wrong.push(e.to_string());
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "implemented fields refused:\n{}",
        wrong.join("\n")
    );
}

/// The fields only the scheduler or the API server read (upstream's kubelet ignores them)
/// pass validation and stay in the pod as written.
#[test]
fn fields_a_kubelet_does_not_read_are_accepted() {
    let mut v: serde_json::Value = serde_yaml_ng::from_str(BASE).unwrap();
    let spec = &mut v["spec"];
    spec["schedulerName"] = "other-scheduler".into();
    spec["preemptionPolicy"] = "Never".into();
    spec["automountServiceAccountToken"] = true.into();
    spec["tolerations"] =
        serde_json::json!([{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]);
    spec["topologySpreadConstraints"] = serde_json::json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]);
    let term = serde_json::json!({"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"});
    spec["affinity"] = serde_json::json!({
        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}
        ]},
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term.clone()]},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": term}]},
    });
    spec["containers"][0]["resizePolicy"] =
        serde_json::json!([{"resourceName": "cpu", "restartPolicy": "NotRequired"}]);
    let pod: Pod = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(validate_pod(&pod), Ok(()));
    let back = serde_json::to_value(&pod).unwrap();
    for key in [
        "schedulerName",
        "preemptionPolicy",
        "affinity",
        "topologySpreadConstraints",
        "tolerations",
    ] {
        assert_eq!(back["spec"][key], v["spec"][key], "{key}");
    }
}

/// The document's text for the table.
fn render() -> String {
    let mut out = String::from(
        "# Pod fields\n\n\
         What kubenode does with every field of a pod's `spec`. Generated from\n\
         `kubelet/src/validation/fields.rs` by `kubelet/src/validation/fields_tests.rs`, which walks\n\
         `PodSpec` in the k8s-openapi types and fails on a field the table does not place, on a\n\
         refusal `validate_pod` does not make, on an implemented field it refuses, and on a named\n\
         test that does not exist. Rewrite it with\n\
         `KUBENODE_BLESS=1 cargo test -p kubenode-kubelet fields_tests`.\n\n\
         - **implemented**: applied as upstream's kubelet applies it (for fields only the scheduler or\n\
         \x20 the API server read, that is: accepted and left alone);\n\
         - **refused**: a pod that sets it is not run, and the error names the field, e.g.\n\
         \x20 `spec.containers[0].resources.claims: Forbidden: not supported by kubenode: it does not implement dynamic resource allocation`;\n\
         - **rejected at admission**: validation accepts it, and a pod that uses it is `Failed` with a\n\
         \x20 reason and a message naming what this node lacks (e.g. `hostUsers: false`).\n\n\
         A row covers the field and every field below it. `{c}` is `spec.containers[*]` and\n\
         `spec.initContainers[*]`; `{probe}` is `livenessProbe`, `readinessProbe` and `startupProbe`.\n",
    );
    let sections = [
        ("Pod", "spec."),
        ("Volumes", "spec.volumes"),
        ("Containers and init containers", "{c}"),
    ];
    for (title, prefix) in sections {
        out.push_str(&format!(
            "\n## {title}\n\n| field | status | what kubenode does | proof |\n|---|---|---|---|\n"
        ));
        for f in FIELDS.iter().filter(|f| {
            f.path.starts_with(prefix) && (prefix != "spec." || !f.path.starts_with("spec.volumes"))
        }) {
            let (status, proof) = match f.status {
                Status::Implemented(tests) => ("implemented", tests.to_vec()),
                Status::Refused { test, .. } => ("refused", vec![test]),
                Status::Rejected(tests) => ("rejected at admission", tests.to_vec()),
            };
            let proof: Vec<String> = proof
                .iter()
                .map(|t| {
                    let (file, name) = t.split_once("::").unwrap_or((t, ""));
                    format!("[`{name}`](../{file})")
                })
                .collect();
            out.push_str(&format!(
                "| `{}` | {status} | {} | {} |\n",
                f.path,
                f.note,
                proof.join(", ")
            ));
        }
    }
    out
}

#[test]
fn pod_fields_doc_is_generated_from_the_table() {
    let path = workspace().join("docs/pod-fields.md");
    let want = render();
    if std::env::var_os("KUBENODE_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/pod-fields.md is not the table of kubelet/src/validation/fields.rs; rewrite it with \
         KUBENODE_BLESS=1 cargo test -p kubenode-kubelet fields_tests"
    );
}

#[test]
fn paths_expand_and_generalize() {
    assert_eq!(
        expand("{c}.{probe}.exec").len(),
        CONTAINERS.len() * PROBES.len()
    );
    assert_eq!(
        generic("spec.containers[0].resources.limits[memory]"),
        "spec.containers[*].resources.limits[memory]"
    );
    assert!(covers("spec.affinity", "spec.affinity.podAffinity"));
    assert!(!covers("spec.host", "spec.hostPID"));
    let mut v = serde_json::json!({"spec": {}});
    set(
        &mut v,
        "spec.containers[*].securityContext.tty",
        true.into(),
    );
    assert_eq!(
        v,
        serde_json::json!({"spec": {"containers": [{"securityContext": {"tty": true}}]}})
    );
}

//! One full read of the manifest directory.

use super::decode::{decode_file, Object};
use super::{make_static_pod, Snapshot, SourceError, MAX_MANIFEST_SIZE};
use crate::validation::{validate_endpoints, validate_pod, validate_service, FieldError};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Reads `dir` (or a single manifest file) as the static pods of
/// `node_name`, stamping newly built pods as seen now.
pub fn read_dir_snapshot(dir: &Path, node_name: &str) -> Snapshot {
    read_dir_snapshot_at(
        dir,
        node_name,
        crate::backoff::Clock::now(&crate::backoff::SystemClock),
    )
}

/// The files a read considers: names not starting with `.`, sorted.
fn list(dir: &Path, snap: &mut Snapshot) -> Vec<PathBuf> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(path = %dir.display(), "manifest path does not exist; no static pods");
            return vec![];
        }
        Err(e) => {
            snap.errors.push(SourceError::file(
                dir,
                format!("reading manifest path: {e}"),
            ));
            return vec![];
        }
    };
    if !meta.is_dir() {
        return vec![dir.to_path_buf()];
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            snap.errors.push(SourceError::file(
                dir,
                format!("listing manifest directory: {e}"),
            ));
            return vec![];
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// As [`read_dir_snapshot`], with the `config.seen` time given.
pub fn read_dir_snapshot_at(dir: &Path, node_name: &str, seen_at: Timestamp) -> Snapshot {
    let mut snap = Snapshot::default();
    let mut seen = Seen::default();
    for file in list(dir, &mut snap) {
        let meta = match std::fs::metadata(&file) {
            Ok(m) => m,
            Err(e) => {
                snap.errors
                    .push(SourceError::file(&file, format!("reading file: {e}")));
                continue;
            }
        };
        if meta.is_dir() {
            tracing::debug!(path = %file.display(), "not recursing into manifest directory");
            continue;
        }
        if !meta.is_file() {
            tracing::debug!(path = %file.display(), "skipping non-regular file in manifest directory");
            continue;
        }
        if meta.len() > MAX_MANIFEST_SIZE {
            snap.errors.push(SourceError::file(
                &file,
                format!("file is {} bytes, more than the 10 MiB limit", meta.len()),
            ));
            continue;
        }
        let text = match std::fs::read(&file).map(String::from_utf8) {
            Ok(Ok(t)) => t,
            Ok(Err(_)) => {
                snap.errors
                    .push(SourceError::file(&file, "file is not UTF-8 text"));
                continue;
            }
            Err(e) => {
                snap.errors
                    .push(SourceError::file(&file, format!("reading file: {e}")));
                continue;
            }
        };
        read_file(&file, &text, node_name, seen_at, &mut seen, &mut snap);
    }
    snap
}

fn field_error(file: &Path, document: usize, item: Option<usize>, fe: &FieldError) -> SourceError {
    let full = fe.to_string();
    let reason = full
        .strip_prefix(&format!("{}: ", fe.field))
        .unwrap_or(&full)
        .to_owned();
    let field = match item {
        Some(i) => format!("items[{i}].{}", fe.field),
        None => fe.field.clone(),
    };
    SourceError {
        file: file.into(),
        document: Some(document),
        field: Some(field),
        reason,
    }
}

fn read_file(
    file: &Path,
    text: &str,
    node: &str,
    seen_at: Timestamp,
    seen: &mut Seen,
    snap: &mut Snapshot,
) {
    let (objects, errs) = decode_file(text);
    for e in errs {
        snap.errors.push(SourceError {
            file: file.into(),
            document: e.document,
            field: e.field,
            reason: e.reason,
        });
    }
    for d in objects {
        let fail = |fe: &FieldError| field_error(file, d.document, d.item, fe);
        match d.object {
            Object::Pod(pod) => {
                if pod.metadata.name.as_deref().is_none_or(str::is_empty) {
                    snap.errors.push(fail(&FieldError::required(
                        "metadata.name",
                        "name is needed for the pod",
                    )));
                    continue;
                }
                // The first document keeps upstream's hash input; later ones
                // add their position so that equal documents differ.
                let source = match (d.document, d.item) {
                    (0, None) => file.to_path_buf(),
                    (doc, None) => PathBuf::from(format!("{}#{doc}", file.display())),
                    (doc, Some(i)) => PathBuf::from(format!("{}#{doc}.{i}", file.display())),
                };
                let pod = make_static_pod(*pod, node, &source, seen_at);
                if let Err(errs) = validate_pod(&pod) {
                    snap.errors.extend(
                        errs.0
                            .iter()
                            .map(|fe| field_error(file, d.document, d.item, fe)),
                    );
                    continue;
                }
                let key = format!(
                    "{}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default()
                );
                if let Some(first) = seen.pods.get(&key) {
                    let reason = format!(
                        "duplicate pod name {key:?} (first defined in {}), ignoring",
                        first.display()
                    );
                    snap.errors.push(SourceError {
                        file: file.into(),
                        document: Some(d.document),
                        field: Some("metadata.name".into()),
                        reason,
                    });
                    continue;
                }
                seen.pods.insert(key, file.to_path_buf());
                snap.pods.push(pod);
            }
            Object::Service(mut svc) => {
                default_meta(&mut svc.metadata);
                match check_name(&svc.metadata)
                    .or_else(|| duplicate(&mut seen.services, &svc.metadata, file))
                {
                    Some(fe) => snap.errors.push(fail(&fe)),
                    None => {
                        default_service(&mut svc);
                        match validate_service(&svc) {
                            Ok(()) => snap.services.push(*svc),
                            Err(errs) => snap.errors.extend(errs.0.iter().map(fail)),
                        }
                    }
                }
            }
            Object::Endpoints(mut ep) => {
                default_meta(&mut ep.metadata);
                match check_name(&ep.metadata)
                    .or_else(|| duplicate(&mut seen.endpoints, &ep.metadata, file))
                {
                    Some(fe) => snap.errors.push(fail(&fe)),
                    None => {
                        for p in ep
                            .subsets
                            .iter_mut()
                            .flatten()
                            .flat_map(|s| s.ports.iter_mut().flatten())
                        {
                            p.protocol.get_or_insert_with(|| "TCP".into());
                        }
                        match validate_endpoints(&ep) {
                            Ok(()) => snap.endpoints.push(*ep),
                            Err(errs) => snap.errors.extend(errs.0.iter().map(fail)),
                        }
                    }
                }
            }
        }
    }
}

/// Names already taken in this read, with the file that took them.
#[derive(Debug, Default)]
struct Seen {
    pods: HashMap<String, PathBuf>,
    services: HashMap<String, PathBuf>,
    endpoints: HashMap<String, PathBuf>,
}

/// Records `meta`'s `namespace/name` as taken, or reports the duplicate.
fn duplicate(
    taken: &mut HashMap<String, PathBuf>,
    meta: &ObjectMeta,
    file: &Path,
) -> Option<FieldError> {
    let key = format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    );
    match taken.get(&key) {
        Some(first) => Some(FieldError::invalid(
            "metadata.name",
            &key,
            format!("already defined in {}, ignoring", first.display()),
        )),
        None => {
            taken.insert(key, file.to_path_buf());
            None
        }
    }
}

fn default_meta(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".into());
    }
}

fn check_name(meta: &ObjectMeta) -> Option<FieldError> {
    let name = meta.name.as_deref().unwrap_or_default();
    // The name's and namespace's formats are the kind's own rules, in validate_service and
    // validate_endpoints (validation::meta).
    name.is_empty()
        .then(|| FieldError::required("metadata.name", "name or generateName is required"))
}

/// Service defaults: type ClusterIP, sessionAffinity None, port protocol
/// TCP and targetPort = port.
fn default_service(svc: &mut Service) {
    let Some(spec) = svc.spec.as_mut() else {
        return;
    };
    spec.type_.get_or_insert_with(|| "ClusterIP".into());
    spec.session_affinity.get_or_insert_with(|| "None".into());
    for p in spec.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        p.target_port.get_or_insert(IntOrString::Int(p.port));
    }
}

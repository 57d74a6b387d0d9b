//! One full read of the manifest directory.

use super::decode::{decode_file, Object};
use super::{make_static_pod, Snapshot, SourceError, MAX_MANIFEST_SIZE};
use crate::validation::{validate_endpoints, validate_pod, validate_service, FieldError};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    ManifestCache::default().read(dir, node_name, seen_at, SystemTime::now())
}

/// A file's identity and content version as `stat(2)` reports them: device and inode (a file
/// renamed over another is a new inode), size, and modification and status-change times in
/// nanoseconds (every write moves the ctime, even when the mtime is set back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(meta: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A file whose status changed within this long before a read may change again without its
/// times moving (file times advance in clock ticks, not nanoseconds), so its parse is not
/// trusted: the next read parses it again. Git's index has the same "racy file" rule.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What one file yields on its own, in file order: objects already defaulted and validated, and
/// errors. Names taken by earlier files (duplicates) are decided when a read puts the files
/// together, since they depend on the other files.
#[derive(Debug, Clone)]
enum Entry {
    Error(SourceError),
    Pod {
        document: usize,
        key: String,
        pod: Box<Pod>,
    },
    Service {
        document: usize,
        item: Option<usize>,
        key: String,
        object: Result<Box<Service>, Vec<SourceError>>,
    },
    Endpoints {
        document: usize,
        item: Option<usize>,
        key: String,
        object: Result<Box<Endpoints>, Vec<SourceError>>,
    },
}

#[derive(Debug)]
struct CachedFile {
    key: FileKey,
    racy: bool,
    entries: Arc<Vec<Entry>>,
}

/// The manifest directory's files as last parsed, so that a read parses only the files whose
/// `(device, inode, size, mtime, ctime)` changed (or that were racy at the last read) and reuses
/// the objects and errors of the others. Vanished files are forgotten. Duplicate names across
/// files are decided anew at every read, as is the snapshot's order (the files' sorted order).
///
/// Pods keep the `config.seen` time of the read that parsed them; [`super::Watcher`] replaces
/// it with the time the pod's UID was first seen anyway.
#[derive(Debug, Default)]
pub struct ManifestCache {
    node_name: String,
    files: HashMap<PathBuf, CachedFile>,
    parses: u64,
}

impl ManifestCache {
    /// An empty cache: the first read parses every file.
    pub fn new() -> ManifestCache {
        ManifestCache::default()
    }

    /// Files parsed (read and decoded) so far.
    pub fn parses(&self) -> u64 {
        self.parses
    }

    /// Reads `dir` (or a single manifest file) as [`read_dir_snapshot_at`] does, parsing only
    /// what changed since the last read. `now` is the wall-clock time of the read, against which
    /// file times are judged racy.
    pub fn read(
        &mut self,
        dir: &Path,
        node_name: &str,
        seen_at: Timestamp,
        now: SystemTime,
    ) -> Snapshot {
        if self.node_name != node_name {
            self.files.clear();
            self.node_name = node_name.to_string();
        }
        let racy_after = now
            .checked_sub(RACY_WINDOW)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or((0, 0), |d| {
                (d.as_secs() as i64, i64::from(d.subsec_nanos()))
            });
        let mut snap = Snapshot::default();
        let mut seen = Seen::default();
        let mut still = HashMap::with_capacity(self.files.len());
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
            let key = FileKey::of(&meta);
            let entries = match self.files.remove(&file) {
                Some(c) if c.key == key && !c.racy => Some(c.entries),
                _ => None,
            };
            let (entries, keep) = match entries {
                Some(e) => (e, true),
                None => {
                    self.parses += 1;
                    let (e, keep) = parse_file(&file, meta.len(), node_name, seen_at);
                    (Arc::new(e), keep)
                }
            };
            assemble(&file, &entries, &mut seen, &mut snap);
            // A failed read (not the content's fault) is tried again next time.
            if keep {
                let racy = key.ctime >= racy_after || key.mtime >= racy_after;
                still.insert(file, CachedFile { key, racy, entries });
            }
        }
        self.files = still;
        snap
    }
}

/// Reads and decodes one file into its entries; the flag says whether the result may be kept
/// (false when reading failed).
fn parse_file(file: &Path, size: u64, node: &str, seen_at: Timestamp) -> (Vec<Entry>, bool) {
    if size > MAX_MANIFEST_SIZE {
        let e = SourceError::file(
            file,
            format!("file is {size} bytes, more than the 10 MiB limit"),
        );
        return (vec![Entry::Error(e)], true);
    }
    match std::fs::read(file).map(String::from_utf8) {
        Ok(Ok(text)) => (read_file(file, &text, node, seen_at), true),
        Ok(Err(_)) => (
            vec![Entry::Error(SourceError::file(
                file,
                "file is not UTF-8 text",
            ))],
            true,
        ),
        Err(e) => (
            vec![Entry::Error(SourceError::file(
                file,
                format!("reading file: {e}"),
            ))],
            false,
        ),
    }
}

/// Adds one file's entries to `snap`, deciding duplicate names against the files before it.
fn assemble(file: &Path, entries: &[Entry], seen: &mut Seen, snap: &mut Snapshot) {
    for e in entries {
        match e {
            Entry::Error(e) => snap.errors.push(e.clone()),
            Entry::Pod { document, key, pod } => {
                if let Some(first) = seen.pods.get(key) {
                    let reason = format!(
                        "duplicate pod name {key:?} (first defined in {}), ignoring",
                        first.display()
                    );
                    snap.errors.push(SourceError {
                        file: file.into(),
                        document: Some(*document),
                        field: Some("metadata.name".into()),
                        reason,
                    });
                    continue;
                }
                seen.pods.insert(key.clone(), file.to_path_buf());
                snap.pods.push((**pod).clone());
            }
            Entry::Service {
                document,
                item,
                key,
                object,
            } => match duplicate(&mut seen.services, key, file) {
                Some(fe) => snap.errors.push(field_error(file, *document, *item, &fe)),
                None => match object {
                    Ok(svc) => snap.services.push((**svc).clone()),
                    Err(errs) => snap.errors.extend(errs.iter().cloned()),
                },
            },
            Entry::Endpoints {
                document,
                item,
                key,
                object,
            } => match duplicate(&mut seen.endpoints, key, file) {
                Some(fe) => snap.errors.push(field_error(file, *document, *item, &fe)),
                None => match object {
                    Ok(ep) => snap.endpoints.push((**ep).clone()),
                    Err(errs) => snap.errors.extend(errs.iter().cloned()),
                },
            },
        }
    }
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

fn meta_key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn read_file(file: &Path, text: &str, node: &str, seen_at: Timestamp) -> Vec<Entry> {
    let mut out = Vec::new();
    let (objects, errs) = decode_file(text);
    for e in errs {
        out.push(Entry::Error(SourceError {
            file: file.into(),
            document: e.document,
            field: e.field,
            reason: e.reason,
        }));
    }
    for d in objects {
        let fail = |fe: &FieldError| field_error(file, d.document, d.item, fe);
        match d.object {
            Object::Pod(pod) => {
                if pod.metadata.name.as_deref().is_none_or(str::is_empty) {
                    out.push(Entry::Error(fail(&FieldError::required(
                        "metadata.name",
                        "name is needed for the pod",
                    ))));
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
                    out.extend(errs.0.iter().map(|fe| Entry::Error(fail(fe))));
                    continue;
                }
                out.push(Entry::Pod {
                    document: d.document,
                    key: meta_key(&pod.metadata),
                    pod: Box::new(pod),
                });
            }
            Object::Service(mut svc) => {
                default_meta(&mut svc.metadata);
                if let Some(fe) = check_name(&svc.metadata) {
                    out.push(Entry::Error(fail(&fe)));
                    continue;
                }
                let key = meta_key(&svc.metadata);
                default_service(&mut svc);
                let object = match validate_service(&svc) {
                    Ok(()) => Ok(svc),
                    Err(errs) => Err(errs.0.iter().map(fail).collect()),
                };
                out.push(Entry::Service {
                    document: d.document,
                    item: d.item,
                    key,
                    object,
                });
            }
            Object::Endpoints(mut ep) => {
                default_meta(&mut ep.metadata);
                if let Some(fe) = check_name(&ep.metadata) {
                    out.push(Entry::Error(fail(&fe)));
                    continue;
                }
                let key = meta_key(&ep.metadata);
                for p in ep
                    .subsets
                    .iter_mut()
                    .flatten()
                    .flat_map(|s| s.ports.iter_mut().flatten())
                {
                    p.protocol.get_or_insert_with(|| "TCP".into());
                }
                let object = match validate_endpoints(&ep) {
                    Ok(()) => Ok(ep),
                    Err(errs) => Err(errs.0.iter().map(fail).collect()),
                };
                out.push(Entry::Endpoints {
                    document: d.document,
                    item: d.item,
                    key,
                    object,
                });
            }
        }
    }
    out
}

/// Names already taken in this read, with the file that took them.
#[derive(Debug, Default)]
struct Seen {
    pods: HashMap<String, PathBuf>,
    services: HashMap<String, PathBuf>,
    endpoints: HashMap<String, PathBuf>,
}

/// Records `key` (`namespace/name`) as taken, or reports the duplicate.
fn duplicate(taken: &mut HashMap<String, PathBuf>, key: &str, file: &Path) -> Option<FieldError> {
    match taken.get(key) {
        Some(first) => Some(FieldError::invalid(
            "metadata.name",
            key,
            format!("already defined in {}, ignoring", first.display()),
        )),
        None => {
            taken.insert(key.to_string(), file.to_path_buf());
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

//! One full read of the manifest directory.

use super::decode::{decode_file, Object, SecretDoc};
use super::{make_static_pod, Snapshot, SourceError, MAX_MANIFEST_SIZE};
use crate::validation::{
    validate_config_map, validate_endpoint_slice, validate_endpoints, validate_pod,
    validate_secret, validate_service, FieldError,
};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
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
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Error(SourceError),
    Pod {
        document: usize,
        key: String,
        pod: Arc<Pod>,
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
    EndpointSlice {
        document: usize,
        item: Option<usize>,
        key: String,
        object: Result<Box<EndpointSlice>, Vec<SourceError>>,
    },
    ConfigMap {
        document: usize,
        item: Option<usize>,
        key: String,
        object: Result<Box<ConfigMap>, Vec<SourceError>>,
    },
    Secret {
        document: usize,
        item: Option<usize>,
        key: String,
        object: Result<SecretDoc, Vec<SourceError>>,
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
    /// Whether a read happened (the first one always counts as a change).
    read_before: bool,
    /// Whether the last read failed to read a file (so kept no parse of it).
    unkept: bool,
    /// Errors listing the directory or `stat`ing its files at the last read.
    listing_errors: Vec<SourceError>,
    /// The files of the last read, in order, with their entries (kept also when reading
    /// failed).
    order: Vec<(PathBuf, Arc<Vec<Entry>>)>,
    /// How many files define each object (`kind/namespace/name`): a name defined once is no
    /// duplicate, so a change of its object changes the snapshot in place.
    defined: HashMap<String, u32>,
    /// The directory read is a single file, not a directory.
    single_file: bool,
}

/// What [`ManifestCache::read_named`] found.
#[derive(Debug, PartialEq)]
pub enum NamedRead {
    /// The snapshot is the same as before.
    Unchanged,
    /// Only these Services and Endpoints changed, each keeping its name and its place: the
    /// snapshot is the last one with these objects put in place of those of the same name.
    InPlace {
        /// The changed Services.
        services: Vec<Service>,
        /// The changed Endpoints.
        endpoints: Vec<Endpoints>,
    },
    /// Something else changed: [`ManifestCache::snapshot`] is the new snapshot.
    Changed,
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
        self.refresh(dir, node_name, seen_at, now);
        self.assemble()
    }

    /// As [`ManifestCache::read`], or `None` when that snapshot would equal the one the last
    /// read returned: no file appeared, vanished or parsed to other objects, and the directory
    /// and file errors are the same. A directory of thousands of files where nothing changed is
    /// then a `stat` of each file, with nothing put together or compared.
    pub fn read_if_changed(
        &mut self,
        dir: &Path,
        node_name: &str,
        seen_at: Timestamp,
        now: SystemTime,
    ) -> Option<Snapshot> {
        self.refresh(dir, node_name, seen_at, now)
            .then(|| self.assemble())
    }

    /// Brings the cache up to date with the directory; true when something changed (see
    /// [`ManifestCache::read_if_changed`]).
    fn refresh(
        &mut self,
        dir: &Path,
        node_name: &str,
        seen_at: Timestamp,
        now: SystemTime,
    ) -> bool {
        // The first read, and a read after one that could not read a file (that file may be
        // gone now, taking its error with it), count as changes.
        let mut changed = !self.read_before || self.unkept;
        self.read_before = true;
        self.unkept = false;
        if self.node_name != node_name {
            self.files.clear();
            self.node_name = node_name.to_string();
            changed = true;
        }
        let racy_after = racy_after(now);
        let mut listing = Snapshot::default();
        let files = list(dir, &mut listing);
        // `list` gives the path itself when it is a single manifest file.
        self.single_file = files.len() == 1 && files[0] == dir;
        let mut order = Vec::with_capacity(files.len());
        let mut still = HashMap::with_capacity(self.files.len());
        // The regular files with their keys and what the cache has of each.
        let mut found = Vec::with_capacity(files.len());
        for file in files {
            let meta = match std::fs::metadata(&file) {
                Ok(m) => m,
                Err(e) => {
                    listing
                        .errors
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
            let cached = self.files.remove(&file);
            found.push((file, key, cached));
        }
        let stale = |key: &FileKey, cached: &Option<CachedFile>| {
            cached.as_ref().is_none_or(|c| c.key != *key || c.racy)
        };
        let to_parse: Vec<(&Path, u64)> = found
            .iter()
            .filter(|(_, key, cached)| stale(key, cached))
            .map(|(file, key, _)| (file.as_path(), key.size))
            .collect();
        let mut parsed = parse_files(&to_parse, node_name, seen_at).into_iter();
        for (file, key, cached) in found {
            let entries = match cached {
                Some(c) if c.key == key && !c.racy => c.entries,
                previous => {
                    self.parses += 1;
                    let (entries, keep) = parsed.next().expect("one parse per stale file");
                    changed |= previous.is_none_or(|c| *c.entries != entries);
                    let entries = Arc::new(entries);
                    if !keep {
                        // A failed read (not the content's fault) is tried again next time.
                        changed = true;
                        self.unkept = true;
                        order.push((file, entries));
                        continue;
                    }
                    entries
                }
            };
            let racy = key.ctime >= racy_after || key.mtime >= racy_after;
            order.push((file.clone(), entries.clone()));
            still.insert(file, CachedFile { key, racy, entries });
        }
        // Files gone since the last read.
        changed |= !self.files.is_empty();
        changed |= listing.errors != self.listing_errors;
        self.files = still;
        self.listing_errors = listing.errors;
        self.defined.clear();
        for (_, entries) in &order {
            count_names(&mut self.defined, entries, 1);
        }
        self.order = order;
        changed
    }

    /// Reads only the files of `dir` named (by inotify), as a [`ManifestCache::read`] would see
    /// them, and says how the snapshot changed. The other files are taken as they were: a
    /// periodic full read catches what no event reported. Names starting with `.` are skipped,
    /// as a read skips them. Falls back to a full read when the cache cannot tell (no read yet,
    /// another node name, a file that could not be read, a single manifest file).
    pub fn read_named(
        &mut self,
        dir: &Path,
        names: &[std::ffi::OsString],
        node_name: &str,
        seen_at: Timestamp,
        now: SystemTime,
    ) -> NamedRead {
        if !self.read_before || self.unkept || self.single_file || self.node_name != node_name {
            return self.full_read(dir, node_name, seen_at, now);
        }
        let racy_after = racy_after(now);
        let mut names: Vec<&std::ffi::OsString> = names
            .iter()
            .filter(|n| !n.as_encoded_bytes().starts_with(b"."))
            .collect();
        names.sort();
        names.dedup();
        let (mut in_place, mut other) = (Vec::new(), false);
        for name in names {
            let file = dir.join(name);
            let meta = match std::fs::metadata(&file) {
                Ok(m) => Some(m).filter(|m| m.is_file()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(_) => {
                    let changed_before = other || !in_place.is_empty();
                    return self.fall_back(changed_before, dir, node_name, seen_at, now);
                }
            };
            let at = self.order.binary_search_by(|(f, _)| f.cmp(&file));
            let Some(meta) = meta else {
                // Gone (or no longer a regular file).
                if let Ok(i) = at {
                    let (_, old) = self.order.remove(i);
                    count_names(&mut self.defined, &old, -1);
                    self.files.remove(&file);
                    other = true;
                }
                continue;
            };
            let key = FileKey::of(&meta);
            let racy = key.ctime >= racy_after || key.mtime >= racy_after;
            if let Some(c) = self.files.get_mut(&file) {
                if c.key == key && !c.racy {
                    continue;
                }
            }
            self.parses += 1;
            let (entries, keep) = parse_file(&file, meta.len(), node_name, seen_at);
            if !keep {
                let changed_before = other || !in_place.is_empty();
                return self.fall_back(changed_before, dir, node_name, seen_at, now);
            }
            let entries = Arc::new(entries);
            let old = self.files.insert(
                file.clone(),
                CachedFile {
                    key,
                    racy,
                    entries: entries.clone(),
                },
            );
            match (at, old) {
                (Ok(i), Some(old)) => {
                    if *old.entries == *entries {
                        continue;
                    }
                    count_names(&mut self.defined, &old.entries, -1);
                    count_names(&mut self.defined, &entries, 1);
                    self.order[i].1 = entries.clone();
                    match same_places(&old.entries, &entries, &self.defined) {
                        Some(changed) => in_place.extend(changed),
                        None => other = true,
                    }
                }
                (Ok(i), None) => {
                    // Listed but not kept before: cannot happen without `unkept`.
                    count_names(&mut self.defined, &self.order[i].1.clone(), -1);
                    count_names(&mut self.defined, &entries, 1);
                    self.order[i].1 = entries;
                    other = true;
                }
                (Err(i), _) => {
                    count_names(&mut self.defined, &entries, 1);
                    self.order.insert(i, (file, entries));
                    other = true;
                }
            }
        }
        if other {
            return NamedRead::Changed;
        }
        if in_place.is_empty() {
            return NamedRead::Unchanged;
        }
        let (mut services, mut endpoints) = (Vec::new(), Vec::new());
        for entry in in_place {
            match entry {
                Entry::Service { object: Ok(s), .. } => services.push(*s),
                Entry::Endpoints { object: Ok(e), .. } => endpoints.push(*e),
                _ => {}
            }
        }
        NamedRead::InPlace {
            services,
            endpoints,
        }
    }

    /// A full read after `read_named` already put some named files into the cache: those
    /// files look unchanged to the full read, so a change among them (`changed_before`) must
    /// still be reported.
    fn fall_back(
        &mut self,
        changed_before: bool,
        dir: &Path,
        node_name: &str,
        seen_at: Timestamp,
        now: SystemTime,
    ) -> NamedRead {
        match self.full_read(dir, node_name, seen_at, now) {
            NamedRead::Unchanged if changed_before => NamedRead::Changed,
            other => other,
        }
    }

    fn full_read(
        &mut self,
        dir: &Path,
        node_name: &str,
        seen_at: Timestamp,
        now: SystemTime,
    ) -> NamedRead {
        if self.refresh(dir, node_name, seen_at, now) {
            NamedRead::Changed
        } else {
            NamedRead::Unchanged
        }
    }

    /// The snapshot of the files as last read.
    pub fn snapshot(&self) -> Snapshot {
        self.assemble()
    }

    /// The snapshot of the files as last refreshed, in file order.
    fn assemble(&self) -> Snapshot {
        let mut snap = Snapshot {
            errors: self.listing_errors.clone(),
            ..Snapshot::default()
        };
        let mut seen = Seen::default();
        for (file, entries) in &self.order {
            assemble(file, entries, &mut seen, &mut snap);
        }
        snap
    }
}

/// File times at or after this are racy at a read at `now` (see [`RACY_WINDOW`]).
fn racy_after(now: SystemTime) -> (i64, i64) {
    now.checked_sub(RACY_WINDOW)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or((0, 0), |d| {
            (d.as_secs() as i64, i64::from(d.subsec_nanos()))
        })
}

/// Adds `by` to the count of each name `entries` define (`kind/namespace/name`).
fn count_names(defined: &mut HashMap<String, u32>, entries: &[Entry], by: i32) {
    for e in entries {
        let name = match e {
            Entry::Error(_) => continue,
            Entry::Pod { key, .. } => format!("Pod/{key}"),
            Entry::Service { key, .. } => format!("Service/{key}"),
            Entry::Endpoints { key, .. } => format!("Endpoints/{key}"),
            Entry::EndpointSlice { key, .. } => format!("EndpointSlice/{key}"),
            Entry::ConfigMap { key, .. } => format!("ConfigMap/{key}"),
            Entry::Secret { key, .. } => format!("Secret/{key}"),
        };
        if by > 0 {
            *defined.entry(name).or_default() += 1;
        } else if let Some(n) = defined.get_mut(&name) {
            *n -= 1;
            if *n == 0 {
                defined.remove(&name);
            }
        }
    }
}

/// When `new` defines the same valid Services and Endpoints as `old`, in the same order, each
/// defined by no other file, and nothing else: the entries whose object changed. Otherwise
/// (pods, errors, names added, removed, moved or duplicated) `None`.
fn same_places(old: &[Entry], new: &[Entry], defined: &HashMap<String, u32>) -> Option<Vec<Entry>> {
    if old.len() != new.len() {
        return None;
    }
    let mut changed = Vec::new();
    for (o, n) in old.iter().zip(new) {
        let name = match (o, n) {
            (
                Entry::Service {
                    key: a,
                    object: Ok(_),
                    ..
                },
                Entry::Service {
                    key: b,
                    object: Ok(_),
                    ..
                },
            ) if a == b => format!("Service/{a}"),
            (
                Entry::Endpoints {
                    key: a,
                    object: Ok(_),
                    ..
                },
                Entry::Endpoints {
                    key: b,
                    object: Ok(_),
                    ..
                },
            ) if a == b => format!("Endpoints/{a}"),
            _ => return None,
        };
        if defined.get(&name) != Some(&1) {
            return None;
        }
        if o != n {
            changed.push(n.clone());
        }
    }
    Some(changed)
}

/// Reads and decodes one file into its entries; the flag says whether the result may be kept
/// (false when reading failed).
/// Below this many files a read parses them on its own thread.
pub(super) const PARALLEL_PARSE_MIN: usize = 64;

/// [`parse_file`] of each file, in order; many files are parsed on several threads (one per
/// CPU, at most 8), so a first read of thousands of files takes a fraction of the time.
fn parse_files(files: &[(&Path, u64)], node: &str, seen_at: Timestamp) -> Vec<(Vec<Entry>, bool)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if files.len() < PARALLEL_PARSE_MIN || threads < 2 {
        return files
            .iter()
            .map(|(file, size)| parse_file(file, *size, node, seen_at))
            .collect();
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(file, size)| parse_file(file, *size, node, seen_at))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn parse_file(file: &Path, size: u64, node: &str, seen_at: Timestamp) -> (Vec<Entry>, bool) {
    if size > MAX_MANIFEST_SIZE {
        let e = SourceError::file(
            file,
            format!("file is {size} bytes, more than the 10 MiB limit"),
        );
        return (vec![Entry::Error(e)], true);
    }
    match std::fs::read(file) {
        Ok(bytes) => (parse_bytes(file, bytes, node, seen_at), true),
        Err(e) => (
            vec![Entry::Error(SourceError::file(
                file,
                format!("reading file: {e}"),
            ))],
            false,
        ),
    }
}

/// One file's entries from its content.
fn parse_bytes(file: &Path, bytes: Vec<u8>, node: &str, seen_at: Timestamp) -> Vec<Entry> {
    match String::from_utf8(bytes) {
        Ok(text) => read_file(file, &text, node, seen_at),
        Err(_) => vec![Entry::Error(SourceError::file(
            file,
            "file is not UTF-8 text",
        ))],
    }
}

/// What a read of a manifest directory holding only `file`, with the content `bytes`, yields:
/// the decoding, defaults, validation and checks of [`read_dir_snapshot_at`] (the 10 MiB limit
/// and UTF-8 included) without the file system. The entry point of the manifest fuzz target
/// (`fuzz/fuzz_targets/manifest.rs`).
pub fn read_manifest_bytes(
    file: &Path,
    bytes: &[u8],
    node_name: &str,
    seen_at: Timestamp,
) -> Snapshot {
    let mut snap = Snapshot::default();
    let entries = if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        vec![Entry::Error(SourceError::file(
            file,
            format!("file is {} bytes, more than the 10 MiB limit", bytes.len()),
        ))]
    } else {
        parse_bytes(file, bytes.to_vec(), node_name, seen_at)
    };
    assemble(file, &entries, &mut Seen::default(), &mut snap);
    snap
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
                snap.pods.push(pod.clone());
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
            Entry::EndpointSlice {
                document,
                item,
                key,
                object,
            } => match duplicate(&mut seen.endpoint_slices, key, file) {
                Some(fe) => snap.errors.push(field_error(file, *document, *item, &fe)),
                None => match object {
                    Ok(s) => snap.endpoint_slices.push((**s).clone()),
                    Err(errs) => snap.errors.extend(errs.iter().cloned()),
                },
            },
            Entry::ConfigMap {
                document,
                item,
                key,
                object,
            } => match duplicate(&mut seen.config_maps, key, file) {
                Some(fe) => snap.errors.push(field_error(file, *document, *item, &fe)),
                None => match object {
                    Ok(cm) => Arc::make_mut(&mut snap.config_maps).push((**cm).clone()),
                    Err(errs) => snap.errors.extend(errs.iter().cloned()),
                },
            },
            Entry::Secret {
                document,
                item,
                key,
                object,
            } => match duplicate(&mut seen.secrets, key, file) {
                Some(fe) => snap.errors.push(field_error(file, *document, *item, &fe)),
                None => match object {
                    Ok(s) => Arc::make_mut(&mut snap.secrets).push((*s.0).clone()),
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
    // An error of the whole object (a ConfigMap too large) names no field.
    let field = match item {
        Some(i) if fe.field.is_empty() => Some(format!("items[{i}]")),
        Some(i) => Some(format!("items[{i}].{}", fe.field)),
        None if fe.field.is_empty() => None,
        None => Some(fe.field.clone()),
    };
    SourceError {
        file: file.into(),
        document: Some(document),
        field,
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
                    pod: Arc::new(pod),
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
            Object::EndpointSlice(mut slice) => {
                default_meta(&mut slice.metadata);
                if let Some(fe) = check_name(&slice.metadata) {
                    out.push(Entry::Error(fail(&fe)));
                    continue;
                }
                let key = meta_key(&slice.metadata);
                // Upstream's defaults: a port's protocol TCP, its name "".
                for p in slice.ports.iter_mut().flatten() {
                    p.protocol.get_or_insert_with(|| "TCP".into());
                    p.name.get_or_insert_with(String::new);
                }
                let mut result = validate_endpoint_slice(&slice).map_err(|e| e.0);
                // A slice is a Service's only through this label: without it the proxy would
                // not use the slice, which a manifest never leaves unsaid.
                let label = slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .filter(|v| !v.is_empty());
                if label.is_none() {
                    let fe = FieldError::required(
                        format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                        "names the Service whose endpoints these are",
                    );
                    match &mut result {
                        Ok(()) => result = Err(vec![fe]),
                        Err(errs) => errs.push(fe),
                    }
                }
                let object = match result {
                    Ok(()) => Ok(slice),
                    Err(errs) => Err(errs.iter().map(fail).collect()),
                };
                out.push(Entry::EndpointSlice {
                    document: d.document,
                    item: d.item,
                    key,
                    object,
                });
            }
            Object::ConfigMap(mut cm) => {
                default_meta(&mut cm.metadata);
                if let Some(fe) = check_name(&cm.metadata) {
                    out.push(Entry::Error(fail(&fe)));
                    continue;
                }
                let key = meta_key(&cm.metadata);
                let object = match validate_config_map(&cm) {
                    Ok(()) => Ok(cm),
                    Err(errs) => Err(errs.0.iter().map(fail).collect()),
                };
                out.push(Entry::ConfigMap {
                    document: d.document,
                    item: d.item,
                    key,
                    object,
                });
            }
            Object::Secret(mut secret) => {
                default_meta(&mut secret.0.metadata);
                if let Some(fe) = check_name(&secret.0.metadata) {
                    out.push(Entry::Error(fail(&fe)));
                    continue;
                }
                let key = meta_key(&secret.0.metadata);
                let object = match validate_secret(&secret.0) {
                    Ok(()) => Ok(secret),
                    Err(errs) => Err(errs.0.iter().map(fail).collect()),
                };
                out.push(Entry::Secret {
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
    endpoint_slices: HashMap<String, PathBuf>,
    config_maps: HashMap<String, PathBuf>,
    secrets: HashMap<String, PathBuf>,
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

/// The label of an EndpointSlice naming its Service (`discovery.k8s.io/v1`'s
/// `LabelServiceName`).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

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

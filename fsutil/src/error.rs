//! [`IoError`]: a failed file system operation with what was being done and to which path,
//! the one `Io` case that the error enums of `runtime`, `cni` and `kubelet` wrap.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A file system operation that failed: what was being done, to which path, and the cause.
/// Shown as `{what} {path}: {source}`, e.g. `creating /var/lib/kubenode/pods: Permission
/// denied (os error 13)`; [`std::error::Error::source`] is the [`io::Error`].
///
/// An error enum takes it as `#[error(transparent)] Io(#[from] IoError)`, which keeps both the
/// message and the source chain of the enum as they are with the fields inline.
#[derive(Debug)]
pub struct IoError {
    /// What was being done ("creating", "writing sandbox metadata").
    pub what: &'static str,
    /// The file or directory it was done to.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

impl IoError {
    /// An error of doing `what` to `path`.
    pub fn new(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        IoError {
            what,
            path: path.into(),
            source,
        }
    }

    /// A `map_err` adapter: `std::fs::read(&p).map_err(IoError::with("reading", &p))?`.
    pub fn with(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| IoError { what, path, source }
    }

    /// The kind of the cause.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.what, self.path.display(), self.source)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn shows_what_path_and_cause_and_keeps_the_cause_as_source() {
        let e = IoError::with("creating", "/x/y")(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(e.to_string(), "creating /x/y: entity not found");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let source = e.source().expect("a source");
        assert_eq!(source.to_string(), "entity not found");
    }
}

//! The one error type of the image store, and how the kubelet classifies it.

use std::path::PathBuf;

use kubenode_fsutil::IoError;

/// Everything that can go wrong while parsing, pulling, importing, unpacking
/// or removing an image.
///
/// Messages name the image (or path) and the digest involved. Use
/// [`ImageError::kubelet_reason`] to map an error to the waiting reason the
/// kubelet reports.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference string cannot be parsed (`InvalidImageName`).
    #[error("invalid image reference `{reference}`: {reason}")]
    InvalidReference {
        /// The string as given.
        reference: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The registry or layout has no such image.
    #[error("image `{reference}` not found: {detail}")]
    NotFound {
        /// The image.
        reference: String,
        /// What the source said.
        detail: String,
    },
    /// The registry refused our credentials (or wanted some).
    #[error("pulling image `{reference}`: not authorized by registry {registry}: {detail}")]
    Unauthorized {
        /// The image.
        reference: String,
        /// The registry host.
        registry: String,
        /// What the registry said.
        detail: String,
    },
    /// The registry could not be reached at all.
    #[error("pulling image `{reference}`: registry {registry} unreachable: {detail}")]
    Unreachable {
        /// The image.
        reference: String,
        /// The registry host.
        registry: String,
        /// The transport error.
        detail: String,
    },
    /// Any other failure reported by the registry.
    #[error("pulling image `{reference}` from registry {registry}: {detail}")]
    Registry {
        /// The image.
        reference: String,
        /// The registry host.
        registry: String,
        /// The registry client's error.
        detail: String,
    },
    /// Content did not hash to the digest that names it.
    #[error("image `{reference}`: content of {digest} does not match its digest (got {actual})")]
    DigestMismatch {
        /// The image.
        reference: String,
        /// The expected digest.
        digest: String,
        /// What the content hashed to (or what differed, e.g. the size).
        actual: String,
    },
    /// A layer's uncompressed content does not match the config's `rootfs.diff_ids`.
    #[error("image `{reference}`: layer {layer} unpacks to {actual}, but the image config says diff_id {diff_id}")]
    DiffIdMismatch {
        /// The image.
        reference: String,
        /// The compressed layer blob digest.
        layer: String,
        /// The diff_id from the config.
        diff_id: String,
        /// What the uncompressed stream hashed to.
        actual: String,
    },
    /// A manifest, index or config is malformed or inconsistent.
    #[error("image `{reference}`: invalid {what}: {reason}")]
    InvalidManifest {
        /// The image.
        reference: String,
        /// Which document (manifest, index, config).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An index has no manifest for our platform.
    #[error("image `{reference}`: no manifest for platform {platform} in the image index")]
    NoMatchingPlatform {
        /// The image.
        reference: String,
        /// The platform wanted, e.g. `linux/amd64`.
        platform: String,
    },
    /// A media type kubenode cannot handle (e.g. a zstd layer).
    #[error("image `{reference}`: unsupported media type {media_type}")]
    UnsupportedMediaType {
        /// The image.
        reference: String,
        /// The media type.
        media_type: String,
    },
    /// Unpacking a layer into its snapshot failed.
    #[error("image `{reference}`: unpacking layer {layer} into {path}: {source}")]
    Unpack {
        /// The image.
        reference: String,
        /// The layer blob digest.
        layer: String,
        /// The snapshot directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The docker-style auth file is unreadable or malformed.
    #[error("reading registry credentials from {path}: {reason}")]
    AuthConfig {
        /// The auth file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The pod's pull credentials are unusable (a pull secret whose document does not parse).
    #[error("pulling image `{reference}`: {reason}")]
    PullCredentials {
        /// The image.
        reference: String,
        /// What is wrong, naming the secret, never its content.
        reason: String,
    },
    /// An OCI layout or archive to import is unusable.
    #[error("importing {path}: {reason}")]
    Import {
        /// The layout directory or archive.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The pull policy is `Never` and the image is not present.
    #[error("image `{reference}` is not present with pull policy Never")]
    NeverPull {
        /// The image.
        reference: String,
    },
    /// The image is not in the local store (for `remove`).
    #[error("image `{reference}` is not present in the local store")]
    NotPresent {
        /// The image.
        reference: String,
    },
    /// Containers created from the image still exist (for `remove`).
    #[error("image `{reference}` is in use by {}; remove those pods first, or force the removal (their layers then stay until they are gone)", users.join(", "))]
    InUse {
        /// The image.
        reference: String,
        /// The containers, as `container C of pod NS/NAME (id ...)`.
        users: Vec<String>,
    },
    /// A filesystem operation on the store failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Every credential for the registry failed: the errors of all attempts, in order, as
    /// upstream's kubelet returns them (`utilerrors.NewAggregate`: each distinct message once,
    /// `[a, b]` when there are several). Made by [`ImageError::of_attempts`].
    #[error("{}", aggregate_message(errors))]
    Attempts {
        /// The error of each attempt (at least two).
        errors: Vec<ImageError>,
    },
}

/// `utilerrors.NewAggregate(errs).Error()`: the distinct messages in order, joined with `, `,
/// in brackets when more than one.
fn aggregate_message(errors: &[ImageError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        let m = e.to_string();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    match seen.len() {
        1 => seen.remove(0),
        _ => format!("[{}]", seen.join(", ")),
    }
}

impl ImageError {
    /// The kubelet waiting reason for this error: `InvalidImageName` for an
    /// unparsable reference, `ErrImageNeverPull` for a missing image under
    /// policy `Never`, `ErrImagePull` for everything else.
    pub fn kubelet_reason(&self) -> &'static str {
        match self {
            ImageError::InvalidReference { .. } => "InvalidImageName",
            ImageError::NeverPull { .. } => "ErrImageNeverPull",
            ImageError::Attempts { errors } => errors
                .first()
                .map_or("ErrImagePull", ImageError::kubelet_reason),
            _ => "ErrImagePull",
        }
    }

    /// The outcome of trying several credentials that all failed: the one error of a single
    /// attempt, else [`ImageError::Attempts`].
    pub fn of_attempts(mut errors: Vec<ImageError>) -> ImageError {
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            ImageError::Attempts { errors }
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        let io = IoError::with(action, path);
        move |source| ImageError::Io(io(source))
    }
}

/// Result alias of the image module.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

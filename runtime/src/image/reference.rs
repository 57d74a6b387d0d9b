//! Image references: parsing and normalization (`busybox` →
//! `docker.io/library/busybox:latest`), as the kubelet and containerd do.

use std::fmt;

use oci_client::Reference;

use super::error::{ImageError, Result};

/// A parsed, normalized image reference.
///
/// Short names resolve to Docker Hub (`busybox` → `docker.io/library/busybox`),
/// a missing tag without a digest becomes `latest`. [`fmt::Display`] gives the
/// canonical form used as the key of the local store.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    inner: Reference,
}

impl ImageReference {
    /// Parses and normalizes `reference`; an unparsable string is
    /// [`ImageError::InvalidReference`] (the kubelet's `InvalidImageName`).
    pub fn parse(reference: &str) -> Result<ImageReference> {
        let invalid = |reason: String| ImageError::InvalidReference {
            reference: reference.to_string(),
            reason,
        };
        if reference.trim() != reference {
            return Err(invalid("leading or trailing whitespace".into()));
        }
        let inner: Reference = reference.parse().map_err(|e| invalid(format!("{e}")))?;
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase".into()));
        }
        if let Some(digest) = inner.digest() {
            if !digest.starts_with("sha256:") {
                return Err(invalid(format!("unsupported digest algorithm in {digest}")));
            }
            super::digest::hex_of(digest)
                .map_err(|_| invalid(format!("invalid digest {digest}")))?;
        }
        Ok(ImageReference { inner })
    }

    /// The registry host (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    pub(crate) fn oci(&self) -> &Reference {
        &self.inner
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageReference({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        ImageReference::parse(s).unwrap().to_string()
    }

    #[test]
    fn short_names_resolve_to_docker_hub_library() {
        assert_eq!(canon("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(
            canon("docker.io/library/busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            canon("index.docker.io/library/busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(canon("someone/app"), "docker.io/someone/app:latest");
    }

    #[test]
    fn registries_with_ports_and_digests() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = ImageReference::parse(&format!("registry:5000/x@{d}")).unwrap();
        assert_eq!(r.registry(), "registry:5000");
        assert_eq!(r.repository(), "x");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.to_string(), format!("registry:5000/x@{d}"));
        let r = ImageReference::parse("127.0.0.1:5000/busybox:latest").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "busybox");
        assert_eq!(canon("localhost:5000/a/b/c:v1"), "localhost:5000/a/b/c:v1");
    }

    #[test]
    fn bad_references_are_invalid_image_names() {
        for bad in [
            "",
            " busybox",
            "Busybox",
            "UPPER/case",
            "busybox:",
            "busybox@sha256:abc",
            "a//b",
            "x@md5:0123456789abcdef0123456789abcdef",
        ] {
            let err = ImageReference::parse(bad).unwrap_err();
            assert!(
                matches!(err, ImageError::InvalidReference { .. }),
                "{bad}: {err}"
            );
            assert_eq!(err.kubelet_reason(), "InvalidImageName");
        }
    }
}

//! Image references: parsing and normalization (`busybox` →
//! `docker.io/library/busybox:latest`), as the kubelet and containerd do.
//!
//! The grammar is distribution's (`distribution/reference/regexp.go`), checked by hand here:
//! `oci_client::Reference`'s own parser compiles one large Unicode regex that keeps about
//! 10 MiB of the agent's memory for its lifetime, for strings we can check in a few loops.

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
        let inner = parse(reference).map_err(|e| invalid(e.into()))?;
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

/// Docker Hub's name, its legacy alias, and the namespace of its official images.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const OFFICIAL: &str = "library";
/// The longest repository name (distribution's `NameTotalLengthMax`).
const NAME_MAX: usize = 255;

/// Parses `name[:tag][@digest]` and normalizes the name (distribution's `ParseNormalizedNamed`).
fn parse(s: &str) -> std::result::Result<Reference, &'static str> {
    if s.is_empty() {
        return Err("repository name must have at least one component");
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => {
            check_digest(digest)?;
            (rest, Some(digest.to_string()))
        }
        None => (s, None),
    };
    // A tag's colon comes after the last slash; an earlier one belongs to the registry's port.
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    let components: Vec<&str> = name.split('/').collect();
    let (first, path) = components.split_first().ok_or("invalid reference format")?;
    // The first component is a registry (a host with an optional port) or a path component;
    // the others are path components.
    if !(is_path_component(first) || (components.len() > 1 && is_domain(first))) {
        return Err("invalid reference format");
    }
    if !path.iter().all(|c| is_path_component(c)) {
        return Err("invalid reference format");
    }
    let (mut registry, mut repository) = match name.split_once('/') {
        Some((left, right)) if left.contains('.') || left.contains(':') || left == "localhost" => {
            (left.to_string(), right.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if registry == DOCKER_HUB_LEGACY {
        registry = DOCKER_HUB.to_string();
    }
    if registry == DOCKER_HUB && !repository.contains('/') {
        repository = format!("{OFFICIAL}/{repository}");
    }
    if repository.len() > NAME_MAX {
        return Err("repository name must not be more than 255 characters");
    }
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.into(), digest)
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest),
        (tag, None) => Reference::with_tag(registry, repository, tag.unwrap_or("latest").into()),
    })
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// A host (`[a-zA-Z0-9]` labels with inner dashes, joined by dots) with an optional `:port`.
fn is_domain(c: &str) -> bool {
    let (host, port) = match c.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (c, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|x| x.is_ascii_digit())) {
        return false;
    }
    host.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> std::result::Result<(), &'static str> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|x| word(*x) || *x == b'.' || *x == b'-');
    ok.then_some(()).ok_or("invalid tag format")
}

/// `algorithm:hex`, with at least 32 hex digits (the algorithm is checked by the caller).
fn check_digest(digest: &str) -> std::result::Result<(), &'static str> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or("invalid checksum digest format")?;
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|x| x.is_ascii_hexdigit()) {
        return Err("invalid checksum digest format");
    }
    Ok(())
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
    fn the_distribution_grammar() {
        assert_eq!(
            canon("a.b-c__d/e_f.g---h:V1.0-x_y"),
            "a.b-c__d/e_f.g---h:V1.0-x_y"
        );
        assert_eq!(canon("localhost/x"), "localhost/x:latest");
        assert_eq!(canon("test.com:tag"), "docker.io/library/test.com:tag");
        assert_eq!(canon("test.com:5000/x"), "test.com:5000/x:latest");
        assert_eq!(
            canon("foo/foo_bar.com:8080"),
            "docker.io/foo/foo_bar.com:8080"
        );
        let d = format!("sha256:{}", "0f".repeat(32));
        let r = ImageReference::parse(&format!("busybox:1.36@{d}")).unwrap();
        assert_eq!(r.tag(), Some("1.36"));
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1.36@{d}"));
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
            "busybox:-bad",
            "-lead/x",
            "a/b-",
            "a/b___c",
            "host:port/x",
            "x:y:z",
            &format!("x:{}", "t".repeat(129)),
            &"a".repeat(300),
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

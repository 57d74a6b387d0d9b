//! Where images come from: an OCI distribution registry
//! ([`registry::RegistrySource`]) or an OCI image layout on disk
//! ([`layout::LayoutSource`], also for unpacked `oci-archive` tars). Both sit
//! behind [`ImageSource`]; the store verifies every byte they hand over, so
//! a source only has to deliver.

pub(crate) mod layout;
pub(crate) mod registry;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use oci_spec::image::{Descriptor, ImageIndex};
use tokio::io::AsyncWrite;

use super::digest::Hasher;
use super::error::Result;
use super::{ProgressFn, PullEvent};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A place images are read from.
pub(crate) trait ImageSource: Send + Sync {
    /// The raw bytes of the top-level manifest (`digest == None`: whatever the
    /// source's reference names, image manifest or index) or of the manifest
    /// with `digest`.
    fn fetch_manifest(&self, digest: Option<&str>) -> impl Future<Output = Result<Vec<u8>>> + Send;

    /// Streams the blob `descriptor` names into `sink`.
    fn fetch_blob(
        &self,
        descriptor: &Descriptor,
        sink: &mut BlobSink,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// The platform images are selected for from an index: this host's.
pub(crate) fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

/// The first entry of `index` for `os/arch` (preferring entries without a
/// variant or with `v8` on arm64, the defaults); attestation entries
/// (`unknown/unknown`) never match.
pub(crate) fn select_platform(index: &ImageIndex, os: &str, arch: &str) -> Option<Descriptor> {
    let candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| {
            d.platform()
                .as_ref()
                .is_some_and(|p| p.os().to_string() == os && p.architecture().to_string() == arch)
        })
        .collect();
    let default_variant = |d: &&&Descriptor| {
        let variant = d.platform().as_ref().and_then(|p| p.variant().clone());
        variant.is_none() || variant.as_deref() == Some("v8")
    };
    candidates
        .iter()
        .find(default_variant)
        .or(candidates.first())
        .map(|d| (**d).clone())
}

/// Where a source writes a blob: a temp file in the store, hashed as it is
/// written, with progress reports.
pub(crate) struct BlobSink {
    file: tokio::fs::File,
    hasher: Hasher,
    digest: String,
    total: u64,
    progress: Option<ProgressFn>,
    reported: u64,
}

const PROGRESS_STEP: u64 = 256 * 1024;

impl BlobSink {
    pub(crate) fn new(
        file: tokio::fs::File,
        digest: &str,
        total: u64,
        progress: Option<ProgressFn>,
    ) -> Self {
        BlobSink {
            file,
            hasher: Hasher::default(),
            digest: digest.to_string(),
            total,
            progress,
            reported: 0,
        }
    }

    /// Flushes and fsyncs; returns (digest of what was written, its length).
    pub(crate) async fn finish(mut self) -> io::Result<(String, u64)> {
        use tokio::io::AsyncWriteExt as _;
        self.file.flush().await?;
        self.file.sync_all().await?;
        let len = self.hasher.len();
        Ok((self.hasher.finish(), len))
    }

    fn report(&mut self) {
        let done = self.hasher.len();
        if let Some(progress) = &self.progress {
            if done - self.reported >= PROGRESS_STEP || done == self.total {
                self.reported = done;
                progress(&PullEvent::BlobProgress {
                    digest: self.digest.clone(),
                    done,
                    total: self.total,
                });
            }
        }
    }
}

impl AsyncWrite for BlobSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // A source that sends more than the descriptor's size is cut off at once, not
        // after it filled the disk (the digest check alone comes only at the end).
        if this.hasher.len() + buf.len() as u64 > this.total {
            return Poll::Ready(Err(io::Error::other(format!(
                "blob {} is larger than its declared size of {} bytes",
                this.digest, this.total
            ))));
        }
        let poll = Pin::new(&mut this.file).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.hasher.update(&buf[..n]);
            this.report();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_linux_amd64_and_skips_attestations() {
        let index: ImageIndex = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","platform":{"os":"linux","architecture":"arm","variant":"v7"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","platform":{"os":"unknown","architecture":"unknown"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444","platform":{"os":"linux","architecture":"arm64","variant":"v8"}}
            ]}"#,
        )
        .unwrap();
        let amd64 = select_platform(&index, "linux", "amd64").unwrap();
        assert!(amd64.digest().to_string().starts_with("sha256:3333"));
        let arm64 = select_platform(&index, "linux", "arm64").unwrap();
        assert!(arm64.digest().to_string().starts_with("sha256:4444"));
        assert!(select_platform(&index, "linux", "s390x").is_none());
    }
}

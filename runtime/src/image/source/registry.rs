//! Pulling from an OCI distribution registry with `oci-client`: auth from a
//! docker-style config, plain HTTP only for registries named insecure, and
//! registry errors mapped to the kubelet's categories (not found,
//! unauthorized, unreachable, bad digest).

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use oci_spec::image::Descriptor;

use super::{BlobSink, ImageSource, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::image::error::{ImageError, Result};
use crate::image::reference::ImageReference;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One image in one registry.
pub(crate) struct RegistrySource {
    client: Client,
    reference: ImageReference,
    auth: RegistryAuth,
}

impl RegistrySource {
    /// A client for `reference` with `auth`; `insecure` lists `host:port`s spoken to
    /// over plain HTTP.
    pub(crate) fn new(reference: &ImageReference, insecure: &[String], auth: RegistryAuth) -> Self {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure.to_vec()),
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        };
        RegistrySource {
            client: Client::new(config),
            reference: reference.clone(),
            auth,
        }
    }

    fn error(&self, e: OciDistributionError) -> ImageError {
        map_error(&self.reference, e)
    }
}

impl ImageSource for RegistrySource {
    async fn fetch_manifest(&self, digest: Option<&str>) -> Result<Vec<u8>> {
        let target = match digest {
            Some(d) => self.reference.oci().clone_with_digest(d.to_string()),
            None => self.reference.oci().clone(),
        };
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
        let (body, _digest) = self
            .client
            .pull_manifest_raw(&target, &self.auth, &accept)
            .await
            .map_err(|e| self.error(e))?;
        Ok(body.to_vec())
    }

    async fn fetch_blob(&self, descriptor: &Descriptor, sink: &mut BlobSink) -> Result<()> {
        let digest = descriptor.digest().to_string();
        // The manifest was fetched with our credentials already stored in the client.
        self.client
            .store_auth_if_needed(self.reference.oci().resolve_registry(), &self.auth)
            .await;
        self.client
            .pull_blob(self.reference.oci(), digest.as_str(), sink)
            .await
            .map_err(|e| self.error(e))
    }
}

/// Maps an `oci-client` error to ours, keeping the kubelet's distinctions.
fn map_error(reference: &ImageReference, e: OciDistributionError) -> ImageError {
    let reference_s = reference.to_string();
    let registry = reference.registry().to_string();
    let detail = e.to_string();
    match e {
        // containerd's shape: `unexpected status from GET request to <url>: 401 Unauthorized`
        OciDistributionError::UnauthorizedError { url } => ImageError::Unauthorized {
            reference: reference_s,
            registry,
            detail: format!("unexpected status from GET request to {url}: 401 Unauthorized"),
        },
        OciDistributionError::AuthenticationFailure(_) => ImageError::Unauthorized {
            reference: reference_s,
            registry,
            detail,
        },
        OciDistributionError::ImageManifestNotFoundError(_) => ImageError::NotFound {
            reference: reference_s,
            detail,
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                ImageError::Unauthorized {
                    reference: reference_s,
                    registry,
                    detail,
                }
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                ImageError::NotFound {
                    reference: reference_s,
                    detail,
                }
            } else {
                ImageError::Registry {
                    reference: reference_s,
                    registry,
                    detail,
                }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => ImageError::NotFound {
            reference: reference_s,
            detail,
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => ImageError::Unauthorized {
            reference: reference_s,
            registry,
            detail,
        },
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => ImageError::DigestMismatch {
            reference: reference_s,
            digest: expected,
            actual,
        },
        OciDistributionError::RequestError(ref re) if re.is_connect() || re.is_timeout() => {
            let mut detail = error_chain(re);
            if detail.contains("InvalidContentType") {
                detail
                    .push_str(" (the registry may speak plain HTTP: name it an insecure registry)");
            }
            ImageError::Unreachable {
                reference: reference_s,
                registry,
                detail,
            }
        }
        OciDistributionError::RequestError(ref re) => ImageError::Registry {
            reference: reference_s,
            registry,
            detail: error_chain(re),
        },
        _ => ImageError::Registry {
            reference: reference_s,
            registry,
            detail,
        },
    }
}

/// "a: b: c" from an error and its sources (reqwest hides the useful part).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use oci_client::errors::{DigestError, OciEnvelope, OciError};

    use super::*;

    fn map(e: OciDistributionError) -> ImageError {
        map_error(&ImageReference::parse("registry:5000/app:1").unwrap(), e)
    }

    fn envelope(code: OciErrorCode) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: "m".into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://registry:5000/v2/app/manifests/1".into(),
        }
    }

    #[test]
    fn registry_errors_map_to_kubelet_categories() {
        assert!(matches!(
            map(envelope(OciErrorCode::ManifestUnknown)),
            ImageError::NotFound { .. }
        ));
        assert!(matches!(
            map(envelope(OciErrorCode::NameUnknown)),
            ImageError::NotFound { .. }
        ));
        assert!(matches!(
            map(envelope(OciErrorCode::Denied)),
            ImageError::Unauthorized { .. }
        ));
        assert!(matches!(
            map(envelope(OciErrorCode::Unauthorized)),
            ImageError::Unauthorized { .. }
        ));
        assert!(matches!(
            map(envelope(OciErrorCode::SizeInvalid)),
            ImageError::Registry { .. }
        ));
        let unauthorized = OciDistributionError::UnauthorizedError { url: "u".into() };
        match map(unauthorized) {
            ImageError::Unauthorized {
                registry,
                reference,
                ..
            } => {
                assert_eq!(registry, "registry:5000");
                assert_eq!(reference, "registry:5000/app:1");
            }
            other => panic!("{other}"),
        }
        let not_found = OciDistributionError::ServerError {
            code: 404,
            url: "u".into(),
            message: "gone".into(),
        };
        assert!(matches!(map(not_found), ImageError::NotFound { .. }));
        let server = OciDistributionError::ServerError {
            code: 503,
            url: "u".into(),
            message: "busy".into(),
        };
        assert!(matches!(map(server), ImageError::Registry { .. }));
        let digest = OciDistributionError::DigestError(DigestError::VerificationError {
            expected: "sha256:aa".into(),
            actual: "sha256:bb".into(),
        });
        match map(digest) {
            e @ ImageError::DigestMismatch { .. } => {
                assert!(e.to_string().contains("sha256:aa"), "{e}");
                assert_eq!(e.kubelet_reason(), "ErrImagePull");
            }
            other => panic!("{other}"),
        }
    }
}

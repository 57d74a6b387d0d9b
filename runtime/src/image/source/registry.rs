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
use crate::image::auth::Credentials;
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
    /// A client for `reference`; `insecure` lists `host:port`s spoken to
    /// over plain HTTP.
    pub(crate) fn new(
        reference: &ImageReference,
        insecure: &[String],
        credentials: &Credentials,
    ) -> Self {
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
            auth: credentials.for_registry(reference.registry()),
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
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => ImageError::Unauthorized {
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
            ImageError::Unreachable {
                reference: reference_s,
                registry,
                detail: error_chain(re),
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

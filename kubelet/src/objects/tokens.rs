//! Service-account tokens bound to pods: cluster mode's [`TokenSource`], upstream's kubelet
//! token manager (`pkg/kubelet/token/token_manager.go`) over kube-rs.
//!
//! A token is asked for with `POST serviceaccounts/<sa>/token` (TokenRequest) bound to the pod
//! (`boundObjectRef` kind Pod, name and UID), for the projection's audience (none: the API
//! server's) and `expirationSeconds`. Tokens are cached under upstream's key (service account,
//! namespace, audiences, expiration, bound object) and asked for again when 80 % of their TTL
//! has passed or they are older than 24 h, minus a jitter of up to 10 s; when that refresh
//! fails the still-valid token keeps being served (and the refresh is retried at the next
//! call), an expired one is an error. Entries of a pod are dropped when it goes
//! ([`TokenSource::forget_pod`]) and expired ones at every call (upstream's minute-long
//! cleanup). Tokens are never logged.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt as _;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::jiff::SignedDuration;

use super::{ObjectError, Token, TokenSource};
use crate::backoff::{Clock, SystemClock};

/// A token older than this is refreshed whatever its TTL (upstream `maxTTL`).
pub const MAX_TTL: SignedDuration = SignedDuration::from_hours(24);
/// The largest jitter subtracted from the refresh times (upstream `maxJitter`).
pub const MAX_JITTER_SECONDS: i64 = 10;

/// Sends one TokenRequest for service account `.1` of namespace `.0`; the error is a message
/// (never carrying a token).
pub type RequestFn = Arc<
    dyn Fn(String, String, TokenRequest) -> BoxFuture<'static, Result<TokenRequest, String>>
        + Send
        + Sync,
>;

/// The cache key, as upstream's `keyFunc`: nonconfidential, safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    name: String,
    namespace: String,
    audiences: Vec<String>,
    expiration: i64,
    /// (kind, name, uid) of the bound object.
    bound: (String, String, String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}/{:?}/{:?}/{}/{}:{}:{}",
            self.name,
            self.namespace,
            self.audiences,
            self.expiration,
            self.bound.0,
            self.bound.1,
            self.bound.2
        )
    }
}

/// A cached token: what the refresh rule needs.
#[derive(Clone)]
struct Cached {
    token: Token,
    /// `spec.expirationSeconds` of the answer.
    expiration_seconds: i64,
    pod_uid: String,
}

/// Upstream's kubelet token manager: TokenRequests bound to pods, cached and refreshed.
pub struct TokenManager {
    request: RequestFn,
    clock: Arc<dyn Clock>,
    jitter: Arc<dyn Fn() -> SignedDuration + Send + Sync>,
    cache: Mutex<HashMap<Key, Cached>>,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cache = crate::node::lock(&self.cache, "tokens");
        f.debug_struct("TokenManager")
            .field("cached", &cache.len())
            .finish_non_exhaustive()
    }
}

/// Whole seconds in `0..MAX_JITTER_SECONDS`, as upstream's `rand.Float64() * maxJitter`.
fn random_jitter() -> SignedDuration {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    SignedDuration::from_secs((h.finish() % MAX_JITTER_SECONDS as u64) as i64)
}

impl TokenManager {
    /// Tokens from the API server behind `client` (`Api::<ServiceAccount>::create_token_request`).
    pub fn new(client: kube::Client) -> TokenManager {
        let request: RequestFn = Arc::new(move |ns, sa, tr| {
            let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), &ns);
            async move {
                api.create_token_request(&sa, &kube::api::PostParams::default(), &tr)
                    .await
                    .map_err(|e| e.to_string())
            }
            .boxed()
        });
        TokenManager::with(request, Arc::new(SystemClock), Arc::new(random_jitter))
    }

    /// A manager sending requests with `request`, reading time from `clock` and the refresh
    /// jitter from `jitter` (tests pass fakes).
    pub fn with(
        request: RequestFn,
        clock: Arc<dyn Clock>,
        jitter: Arc<dyn Fn() -> SignedDuration + Send + Sync>,
    ) -> TokenManager {
        TokenManager {
            request,
            clock,
            jitter,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn expired(&self, c: &Cached) -> bool {
        self.clock.now() > c.token.expiration
    }

    /// Upstream's `requiresRefresh`: older than 24 h, or within 20 % of the TTL (each minus the
    /// jitter) of its expiry.
    fn requires_refresh(&self, c: &Cached) -> bool {
        let now = self.clock.now();
        let exp = c.token.expiration;
        let ttl = SignedDuration::from_secs(c.expiration_seconds);
        let iat = exp - ttl;
        let jitter = (self.jitter)();
        if now > iat + (MAX_TTL - jitter) {
            return true;
        }
        let margin = SignedDuration::from_secs(c.expiration_seconds * 20 / 100);
        now > exp - margin - jitter
    }

    /// Drops the expired tokens (upstream's periodic `cleanup`).
    fn cleanup(&self) {
        let now = self.clock.now();
        crate::node::lock(&self.cache, "tokens").retain(|_, c| now <= c.token.expiration);
    }

    /// Upstream's `GetServiceAccountToken`.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        spec: TokenRequestSpec,
    ) -> Result<Token, ObjectError> {
        self.cleanup();
        let bound = spec.bound_object_ref.clone().unwrap_or_default();
        let key = Key {
            name: name.to_string(),
            namespace: namespace.to_string(),
            audiences: spec.audiences.clone(),
            expiration: spec.expiration_seconds.unwrap_or(0),
            bound: (
                bound.kind.unwrap_or_default(),
                bound.name.unwrap_or_default(),
                bound.uid.clone().unwrap_or_default(),
            ),
        };
        let cached = crate::node::lock(&self.cache, "tokens").get(&key).cloned();
        if let Some(c) = &cached {
            if !self.requires_refresh(c) {
                return Ok(c.token.clone());
            }
        }
        let tr = TokenRequest {
            spec,
            ..Default::default()
        };
        let answer = (self.request)(namespace.to_string(), name.to_string(), tr).await;
        let fresh = answer.and_then(|tr| {
            let status = tr
                .status
                .ok_or_else(|| "the TokenRequest came back without a status".to_string())?;
            Ok(Cached {
                token: Token {
                    token: status.token,
                    expiration: status.expiration_timestamp.0,
                },
                expiration_seconds: tr.spec.expiration_seconds.unwrap_or(key.expiration),
                pod_uid: bound.uid.unwrap_or_default(),
            })
        });
        match (fresh, cached) {
            (Ok(fresh), _) => {
                let token = fresh.token.clone();
                crate::node::lock(&self.cache, "tokens").insert(key, fresh);
                Ok(token)
            }
            (Err(e), None) => Err(ObjectError::Unavailable(format!(
                "failed to fetch token: {e}"
            ))),
            (Err(e), Some(c)) if self.expired(&c) => Err(ObjectError::Unavailable(format!(
                "token {key} expired and refresh failed: {e}"
            ))),
            (Err(e), Some(c)) => {
                tracing::warn!(cache_key = %key, error = %e, "couldn't update token");
                Ok(c.token)
            }
        }
    }

    /// How many tokens are cached (for tests).
    pub fn cached(&self) -> usize {
        crate::node::lock(&self.cache, "tokens").len()
    }
}

impl TokenSource for TokenManager {
    fn token<'a>(
        &'a self,
        pod: &'a Pod,
        audience: Option<&'a str>,
        expiration_seconds: i64,
    ) -> BoxFuture<'a, Result<Token, ObjectError>> {
        async move {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            // ServiceAccount admission always sets the name; `default` is what it sets.
            let sa = pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.as_deref())
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            let spec = TokenRequestSpec {
                audiences: audience
                    .filter(|a| !a.is_empty())
                    .map(|a| vec![a.to_string()])
                    .unwrap_or_default(),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            };
            self.service_account_token(namespace, sa, spec).await
        }
        .boxed()
    }

    fn forget_pod(&self, uid: &str) {
        crate::node::lock(&self.cache, "tokens").retain(|_, c| c.pod_uid != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::TestClock;
    use k8s_openapi::api::authentication::v1::TokenRequestStatus;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    /// A fake API server: counts requests, answers `tok-<n>` valid `expirationSeconds` from the
    /// clock's now, or fails while `fail` is set.
    struct Fake {
        calls: Arc<AtomicUsize>,
        fail: Arc<AtomicBool>,
        seen: Arc<Mutex<Vec<(String, String, TokenRequestSpec)>>>,
    }

    fn manager(clock: &TestClock) -> (TokenManager, Fake) {
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, f, s, clk) = (calls.clone(), fail.clone(), seen.clone(), clock.clone());
        let request: RequestFn = Arc::new(move |ns, sa, tr: TokenRequest| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            s.lock().unwrap().push((ns, sa, tr.spec.clone()));
            let failing = f.load(Ordering::SeqCst);
            let now = clk.now();
            async move {
                if failing {
                    return Err("connection refused".to_string());
                }
                let secs = tr.spec.expiration_seconds.unwrap();
                Ok(TokenRequest {
                    status: Some(TokenRequestStatus {
                        token: format!("tok-{n}"),
                        expiration_timestamp: Time(now + SignedDuration::from_secs(secs)),
                    }),
                    ..tr
                })
            }
            .boxed()
        });
        let m = TokenManager::with(
            request,
            Arc::new(clock.clone()),
            Arc::new(|| SignedDuration::ZERO),
        );
        (m, Fake { calls, fail, seen })
    }

    fn pod(name: &str, uid: &str, sa: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                service_account_name: sa.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_token_is_bound_to_the_pod_and_refreshed_at_80_percent_of_its_ttl() {
        let clock = TestClock::at_secs(1_800_000_000);
        let (m, fake) = manager(&clock);
        let p = pod("web", "uid-1", Some("builder"));
        let t = m.token(&p, None, 3600).await.unwrap();
        assert_eq!(t.token, "tok-1");
        assert_eq!(
            t.expiration,
            Timestamp::from_second(1_800_000_000 + 3600).unwrap()
        );
        let (ns, sa, spec) = fake.seen.lock().unwrap()[0].clone();
        assert_eq!((ns.as_str(), sa.as_str()), ("ns", "builder"));
        assert!(spec.audiences.is_empty(), "no audience: the API server's");
        assert_eq!(spec.expiration_seconds, Some(3600));
        let bound = spec.bound_object_ref.unwrap();
        assert_eq!(bound.kind.as_deref(), Some("Pod"));
        assert_eq!(bound.api_version.as_deref(), Some("v1"));
        assert_eq!(bound.name.as_deref(), Some("web"));
        assert_eq!(bound.uid.as_deref(), Some("uid-1"));

        // Until 80 % of the hour (2880 s) the cached token is served.
        clock.advance(Duration::from_secs(2880));
        assert_eq!(m.token(&p, None, 3600).await.unwrap().token, "tok-1");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        // Past it, a new one is asked for.
        clock.advance(Duration::from_secs(1));
        assert_eq!(m.token(&p, None, 3600).await.unwrap().token, "tok-2");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_long_lived_token_is_refreshed_after_24_hours() {
        let clock = TestClock::at_secs(1_800_000_000);
        let (m, fake) = manager(&clock);
        let p = pod("web", "uid-1", None);
        let week = 7 * 24 * 3600;
        assert_eq!(m.token(&p, None, week).await.unwrap().token, "tok-1");
        assert_eq!(fake.seen.lock().unwrap()[0].1, "default");
        clock.advance(Duration::from_secs(24 * 3600));
        assert_eq!(m.token(&p, None, week).await.unwrap().token, "tok-1");
        clock.advance(Duration::from_secs(1));
        assert_eq!(m.token(&p, None, week).await.unwrap().token, "tok-2");
    }

    #[tokio::test]
    async fn the_jitter_brings_the_refresh_forward() {
        let clock = TestClock::at_secs(1_800_000_000);
        let (m, fake) = manager(&clock);
        let m = TokenManager::with(
            m.request.clone(),
            Arc::new(clock.clone()),
            Arc::new(|| SignedDuration::from_secs(9)),
        );
        let p = pod("web", "uid-1", None);
        m.token(&p, None, 3600).await.unwrap();
        clock.advance(Duration::from_secs(2880 - 9));
        m.token(&p, None, 3600).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(1));
        m.token(&p, None, 3600).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_refresh_serves_the_valid_token_and_retries_until_it_expires() {
        let clock = TestClock::at_secs(1_800_000_000);
        let (m, fake) = manager(&clock);
        let p = pod("web", "uid-1", None);
        m.token(&p, None, 3600).await.unwrap();
        fake.fail.store(true, Ordering::SeqCst);
        clock.advance(Duration::from_secs(3000));
        // The refresh fails: the old token, still valid, is served; each call retries.
        assert_eq!(m.token(&p, None, 3600).await.unwrap().token, "tok-1");
        assert_eq!(m.token(&p, None, 3600).await.unwrap().token, "tok-1");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
        // Expired: the cleanup drops it and the failure is reported.
        clock.advance(Duration::from_secs(601));
        let err = m.token(&p, None, 3600).await.unwrap_err();
        assert_eq!(err.to_string(), "failed to fetch token: connection refused");
        assert!(!err.is_not_found());
        // Back: a fresh token.
        fake.fail.store(false, Ordering::SeqCst);
        assert_eq!(m.token(&p, None, 3600).await.unwrap().token, "tok-5");
    }

    #[tokio::test]
    async fn the_cache_key_separates_audience_expiry_and_pod_and_forget_drops_a_pod() {
        let clock = TestClock::at_secs(1_800_000_000);
        let (m, fake) = manager(&clock);
        let a = pod("a", "uid-a", None);
        let b = pod("b", "uid-b", None);
        m.token(&a, None, 3600).await.unwrap();
        m.token(&a, Some("vault"), 3600).await.unwrap();
        m.token(&a, Some(""), 3600).await.unwrap(); // "" is the API server's: cached
        m.token(&a, None, 7200).await.unwrap();
        m.token(&b, None, 3600).await.unwrap();
        m.token(&b, None, 3600).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
        assert_eq!(fake.seen.lock().unwrap()[1].2.audiences, ["vault"]);
        assert_eq!(m.cached(), 4);
        m.forget_pod("uid-a");
        assert_eq!(m.cached(), 1);
        m.token(&a, None, 3600).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let t = Token {
            token: "s3cr3t".into(),
            expiration: Timestamp::UNIX_EPOCH,
        };
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }
}

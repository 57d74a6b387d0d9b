//! [`ServiceKey`]: which Service (or Endpoints object) something belongs to.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::fmt;

/// Namespace and name of a Service, or of the Endpoints object of the same name (kube-proxy's
/// `types.NamespacedName`). Ordered by namespace, then name; shown as `namespace/name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ServiceKey {
    /// Namespace (`default` when the object leaves it unset).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceKey {
    /// The key `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object: its namespace (`default` when unset, as the API server defaults
    /// it) and its name.
    pub fn of(meta: &ObjectMeta) -> ServiceKey {
        ServiceKey::new(
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    /// Whether the object with `meta` has this key (without building one).
    pub fn matches(&self, meta: &ObjectMeta) -> bool {
        meta.namespace.as_deref().unwrap_or("default") == self.namespace
            && meta.name.as_deref().unwrap_or_default() == self.name
    }
}

impl From<(String, String)> for ServiceKey {
    /// From `(namespace, name)`.
    fn from((namespace, name): (String, String)) -> ServiceKey {
        ServiceKey { namespace, name }
    }
}

impl fmt::Display for ServiceKey {
    /// `namespace/name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_defaults_the_namespace_orders_and_prints() {
        let meta = ObjectMeta {
            name: Some("web".into()),
            ..ObjectMeta::default()
        };
        let key = ServiceKey::of(&meta);
        assert_eq!(key, ServiceKey::new("default", "web"));
        assert!(key.matches(&meta));
        assert!(!ServiceKey::new("other", "web").matches(&meta));
        assert_eq!(key.to_string(), "default/web");
        // Namespace first, as `(namespace, name)` tuples ordered.
        assert!(ServiceKey::new("a", "z") < ServiceKey::new("b", "a"));
        assert_eq!(
            ServiceKey::from(("ns".to_string(), "x".to_string())),
            ServiceKey::new("ns", "x")
        );
    }
}

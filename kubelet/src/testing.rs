//! Pod fixtures for the unit tests: one builder that every test module shares, so that a
//! test names only the fields it cares about.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

/// A pod under construction; starts with no metadata and no spec.
#[derive(Debug, Default)]
pub(crate) struct PodBuilder(Pod);

/// An empty pod: no metadata, no spec.
pub(crate) fn pod() -> PodBuilder {
    PodBuilder::default()
}

/// A container with only its name set.
pub(crate) fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        ..Default::default()
    }
}

impl PodBuilder {
    pub(crate) fn name(mut self, name: &str) -> Self {
        self.0.metadata.name = Some(name.into());
        self
    }

    pub(crate) fn namespace(mut self, namespace: &str) -> Self {
        self.0.metadata.namespace = Some(namespace.into());
        self
    }

    pub(crate) fn uid(mut self, uid: &str) -> Self {
        self.0.metadata.uid = Some(uid.into());
        self
    }

    pub(crate) fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// Replaces the whole spec.
    pub(crate) fn spec(mut self, spec: PodSpec) -> Self {
        self.0.spec = Some(spec);
        self
    }

    /// Appends to `spec.containers` (creating a default spec first).
    pub(crate) fn containers(mut self, containers: impl IntoIterator<Item = Container>) -> Self {
        self.spec_mut().containers.extend(containers);
        self
    }

    /// Appends to `spec.initContainers`, which is then present even when `init` is empty.
    pub(crate) fn init_containers(mut self, init: impl IntoIterator<Item = Container>) -> Self {
        self.spec_mut()
            .init_containers
            .get_or_insert_with(Vec::new)
            .extend(init);
        self
    }

    /// Edits the spec in place (creating a default spec first).
    pub(crate) fn with_spec(mut self, edit: impl FnOnce(&mut PodSpec)) -> Self {
        edit(self.spec_mut());
        self
    }

    pub(crate) fn build(self) -> Pod {
        self.0
    }

    fn spec_mut(&mut self) -> &mut PodSpec {
        self.0.spec.get_or_insert_with(PodSpec::default)
    }
}

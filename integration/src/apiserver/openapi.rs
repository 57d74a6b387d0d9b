//! The OpenAPI v3 documents, only as much as clients read from them: for each resource the
//! PATCH operation of its item path with its `x-kubernetes-group-version-kind` and the query
//! parameters this server honours. kubectl's validation (`--validate`, strict by default) looks
//! there for `fieldValidation`; finding it, kubectl skips client-side schema validation and sends
//! `fieldValidation=Strict`, which the stand-in enforces by decoding into the typed object
//! (unknown fields answer 400 `strict decoding error: unknown field "..."`). No schemas are
//! served: `kubectl explain` does not work against the stand-in.

use serde_json::{json, Map, Value};

use super::resources::{groups, RESOURCES};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the group versions and where their documents are.
pub fn root() -> Value {
    let mut paths = Map::new();
    for (g, v) in groups() {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{p}?hash=kn-standin-1") }),
        );
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/<g>/<v>`.
pub fn group_version(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = format!("/{}", gv_path(group, version));
        let item = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation"]
            .iter()
            .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
            .collect();
        paths.insert(
            item,
            json!({
                "patch": {
                    "operationId": format!("patch{}", r.kind),
                    "parameters": params,
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                }
            }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.34.0-kubenode-standin"},
        "paths": paths,
        "components": {},
    }))
}

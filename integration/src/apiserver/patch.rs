//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch
//! (k8s.io/apimachinery/pkg/util/strategicpatch) for the kinds served.
//!
//! Strategic merge needs each list's `patchStrategy`/`patchMergeKey` struct tags; upstream reads
//! them from the Go types. Here they are a table ([`list_strategy`]) copied from the tags in
//! k8s.io/api for the fields of the served kinds that carry one; every other list is atomic
//! (replaced), as upstream. Directives: `$patch: replace|delete|merge` on maps and list items,
//! `$setElementOrder/<list>`, `$deleteFromPrimitiveList/<list>`; `$retainKeys` is accepted
//! and ignored (only `volumes` and `resourceClaims` carry that strategy).

use serde_json::{Map, Value};

/// How a list field merges under a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced as a whole (no `patchStrategy` tag).
    Atomic,
    /// `patchStrategy:"merge" patchMergeKey:"<key>"`: items merged by that key.
    MergeByKey(&'static str),
    /// `patchStrategy:"merge"` on a list of scalars: union.
    MergePrimitive,
}

/// The strategy of the list at `path` (field names joined by `.`, list indices dropped) in an
/// object of `kind`. From the `patchMergeKey` tags of k8s.io/api core/v1, coordination/v1,
/// discovery/v1 and meta/v1.
pub fn list_strategy(kind: &str, path: &str) -> ListStrategy {
    use ListStrategy::*;
    // ObjectMeta, every kind
    match path {
        "metadata.finalizers" => return MergePrimitive,
        "metadata.ownerReferences" => return MergeByKey("uid"),
        _ => {}
    }
    match kind {
        "Pod" => {
            if let Some(rest) = path.strip_prefix("spec.") {
                return pod_spec_strategy(rest);
            }
            match path {
                "status.conditions" => MergeByKey("type"),
                "status.podIPs" | "status.hostIPs" => MergeByKey("ip"),
                "status.resourceClaimStatuses" => MergeByKey("name"),
                // containerStatuses, initContainerStatuses, ephemeralContainerStatuses carry no
                // patchStrategy upstream: atomic
                _ => Atomic,
            }
        }
        "Node" => match path {
            "spec.podCIDRs" => MergePrimitive,
            "status.conditions" | "status.addresses" => MergeByKey("type"),
            _ => Atomic,
        },
        "Namespace" => match path {
            "status.conditions" => MergeByKey("type"),
            _ => Atomic,
        },
        "Service" => match path {
            "spec.ports" => MergeByKey("port"),
            "status.conditions" => MergeByKey("type"),
            _ => Atomic,
        },
        // Event, Endpoints (subsets atomic), Lease, EndpointSlice: no tagged lists
        _ => Atomic,
    }
}

fn pod_spec_strategy(path: &str) -> ListStrategy {
    use ListStrategy::*;
    match path {
        "volumes"
        | "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "imagePullSecrets"
        | "schedulingGates"
        | "resourceClaims" => MergeByKey("name"),
        "hostAliases" => MergeByKey("ip"),
        "topologySpreadConstraints" => MergeByKey("topologyKey"),
        _ => {
            for c in ["containers.", "initContainers.", "ephemeralContainers."] {
                if let Some(field) = path.strip_prefix(c) {
                    return match field {
                        "ports" => MergeByKey("containerPort"),
                        "env" => MergeByKey("name"),
                        "volumeMounts" => MergeByKey("mountPath"),
                        "volumeDevices" => MergeByKey("devicePath"),
                        _ => Atomic,
                    };
                }
            }
            Atomic
        }
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// RFC 6902 JSON patch. Errors carry a message for a 422/500 as upstream's json-patch library.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("json patch must be an array of operations")?;
    for op in ops {
        let kind = op["op"]
            .as_str()
            .ok_or("json patch operation without \"op\"")?;
        let path = op["path"]
            .as_str()
            .ok_or_else(|| format!("{kind} operation does not apply: missing path"))?;
        match kind {
            "add" => add(target, path, op["value"].clone())?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                remove(target, path)?;
                add(target, path, op["value"].clone())?;
            }
            "move" | "copy" => {
                let from = op["from"].as_str().ok_or("missing from")?;
                let v = if kind == "move" {
                    remove(target, from)?
                } else {
                    target.pointer(from).cloned().ok_or_else(|| {
                        format!("copy operation does not apply: doc is missing from path: {from}")
                    })?
                };
                add(target, path, v)?;
            }
            "test" => {
                if target.pointer(path) != Some(&op["value"]) {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("invalid JSON pointer: {path:?}"))?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, key) = split_pointer(path)?;
    let missing = || format!("add operation does not apply: doc is missing path: \"{path}\"");
    match target.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(key, value);
        }
        Value::Array(a) => {
            let i = if key == "-" {
                a.len()
            } else {
                key.parse::<usize>().map_err(|_| missing())?
            };
            if i > a.len() {
                return Err(format!(
                    "add operation does not apply: index out of bounds: {path}"
                ));
            }
            a.insert(i, value);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, key) = split_pointer(path)?;
    let missing = || format!("remove operation does not apply: doc is missing path: \"{path}\"");
    match target.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(&key).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = key.parse().map_err(|_| missing())?;
            if i >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// Applies a strategic merge patch to `original` (an object of `kind`).
pub fn strategic_merge(kind: &str, original: &Value, patch: &Value) -> Result<Value, String> {
    let Value::Object(p) = patch else {
        return Err("strategic merge patch must be a JSON object".into());
    };
    let orig = original.as_object().cloned().unwrap_or_default();
    match merge_map(kind, "", orig, p)? {
        Some(m) => Ok(Value::Object(m)),
        None => Ok(Value::Object(Map::new())),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Merges patch map `p` into `orig`; `None` when the patch deletes the map (`$patch: delete`).
fn merge_map(
    kind: &str,
    path: &str,
    mut orig: Map<String, Value>,
    p: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, String> {
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = p.clone();
            m.remove("$patch");
            return Ok(Some(strip_directives(m)));
        }
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => return Err(format!("Unknown patch type: {other} in map: {p:?}")),
    }
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), v.as_array().cloned().unwrap_or_default()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let drop = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                list.retain(|x| !drop.contains(x));
            }
            continue;
        }
        let sub = join(path, k);
        if v.is_null() {
            orig.remove(k);
            continue;
        }
        let current = orig.remove(k);
        let merged = match (current, v) {
            (Some(Value::Object(o)), Value::Object(pm)) => {
                merge_map(kind, &sub, o, pm)?.map(Value::Object)
            }
            (None, Value::Object(pm)) => merge_map(kind, &sub, Map::new(), pm)?.map(Value::Object),
            (current, Value::Array(pl)) => {
                let o = match current {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                Some(Value::Array(merge_list(kind, &sub, o, pl)?))
            }
            (_, other) => Some(other.clone()),
        };
        if let Some(m) = merged {
            orig.insert(k.clone(), m);
        }
    }
    for (field, order) in orders {
        let sub = join(path, &field);
        if let Some(Value::Array(list)) = orig.get_mut(&field) {
            reorder(list, &order, list_strategy(kind, &sub));
        }
    }
    Ok(Some(orig))
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    m
}

fn merge_list(
    kind: &str,
    path: &str,
    orig: Vec<Value>,
    patch: &[Value],
) -> Result<Vec<Value>, String> {
    match list_strategy(kind, path) {
        ListStrategy::Atomic => Ok(patch.to_vec()),
        ListStrategy::MergePrimitive => {
            let mut out = orig;
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(out)
        }
        ListStrategy::MergeByKey(key) => {
            // `{"$patch": "replace"}` as an item: the list is the patch's other items
            if patch
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Ok(patch
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .cloned()
                    .collect());
            }
            let mut out = orig;
            for item in patch {
                let Value::Object(pm) = item else {
                    return Err(format!(
                        "strategic merge patch: list {path} needs objects with merge key {key}"
                    ));
                };
                let k = pm.get(key).ok_or_else(|| {
                    format!("map: {pm:?} does not contain declared merge key: {key}")
                })?;
                let pos = out.iter().position(|o| o.get(key) == Some(k));
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.retain(|o| o.get(key) != Some(k));
                    continue;
                }
                match pos {
                    Some(i) => {
                        let o = out[i].as_object().cloned().unwrap_or_default();
                        match merge_map(kind, path, o, pm)? {
                            Some(m) => out[i] = Value::Object(m),
                            None => {
                                out.remove(i);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(kind, path, Map::new(), pm)? {
                            out.push(Value::Object(m));
                        }
                    }
                }
            }
            Ok(out)
        }
    }
}

/// `$setElementOrder`: the items named in `order` come in that order; items the order does not
/// name (only on the server) follow, keeping their relative order.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let key_of = |v: &Value| -> Value {
        match strategy {
            ListStrategy::MergeByKey(k) => v.get(k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let order_keys: Vec<Value> = order.iter().map(&key_of).collect();
    let mut named: Vec<(usize, Value)> = Vec::new();
    let mut rest = Vec::new();
    for item in list.drain(..) {
        match order_keys.iter().position(|k| *k == key_of(&item)) {
            Some(i) => named.push((i, item)),
            None => rest.push(item),
        }
    }
    named.sort_by_key(|(i, _)| *i);
    list.extend(named.into_iter().map(|(_, v)| v));
    list.extend(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_conditions_merge_by_type() {
        let pod = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False"}]}});
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Initialized", "status": "True"}]}});
        let out = strategic_merge("Pod", &pod, &patch).unwrap();
        assert_eq!(
            out["status"]["conditions"],
            json!([
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": "Initialized", "status": "True"}])
        );
        assert_eq!(out["status"]["phase"], "Pending");
    }

    #[test]
    fn container_statuses_are_atomic_as_upstream() {
        let pod = json!({"status": {"containerStatuses": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"status": {"containerStatuses": [{"name": "b", "ready": true}]}});
        let out = strategic_merge("Pod", &pod, &patch).unwrap();
        assert_eq!(
            out["status"]["containerStatuses"],
            json!([{"name": "b", "ready": true}])
        );
    }

    #[test]
    fn containers_ports_env_merge_by_their_keys() {
        let pod = json!({"spec": {"containers": [{"name": "web", "image": "a",
            "ports": [{"containerPort": 80, "name": "http"}],
            "env": [{"name": "A", "value": "1"}], "args": ["x"]}]}});
        let patch = json!({"spec": {"containers": [{"name": "web", "image": "b",
            "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
            "env": [{"name": "B", "value": "2"}], "args": ["y"]}]}});
        let out = strategic_merge("Pod", &pod, &patch).unwrap();
        let c = &out["spec"]["containers"][0];
        assert_eq!(c["image"], "b");
        assert_eq!(
            c["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 443}])
        );
        assert_eq!(
            c["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        // args has no patch strategy: replaced
        assert_eq!(c["args"], json!(["y"]));
    }

    #[test]
    fn directives_delete_replace_and_order() {
        let node = json!({"status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "Hostname", "address": "n"}],
            "conditions": [{"type": "Ready"}, {"type": "MemoryPressure"}]},
            "metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}}});
        let patch = json!({
            "metadata": {"finalizers": ["b"], "labels": {"x": null}},
            "status": {
                "addresses": [{"type": "Hostname", "$patch": "delete"}],
                "$setElementOrder/conditions": [{"type": "MemoryPressure"}, {"type": "Ready"}],
                "conditions": [{"type": "Ready", "status": "True"}]}});
        let out = strategic_merge("Node", &node, &patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(out["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.1"}])
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "MemoryPressure"}, {"type": "Ready", "status": "True"}])
        );
        let replace = json!({"status": {"conditions": [{"$patch": "replace"}, {"type": "X"}]}});
        let out = strategic_merge("Node", &node, &replace).unwrap();
        assert_eq!(out["status"]["conditions"], json!([{"type": "X"}]));
        let map_replace = json!({"metadata": {"labels": {"$patch": "replace", "z": "3"}}});
        let out = strategic_merge("Node", &node, &map_replace).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"z": "3"}));
        let del = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        let out = strategic_merge("Node", &node, &del).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!([]));
    }

    #[test]
    fn missing_merge_key_is_an_error() {
        let pod = json!({"status": {"conditions": []}});
        let patch = json!({"status": {"conditions": [{"status": "True"}]}});
        assert!(strategic_merge("Pod", &pod, &patch).is_err());
    }

    #[test]
    fn json_merge_and_json_patch() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut v, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(v, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
        json_patch(
            &mut v,
            &json!([
                {"op": "add", "path": "/l/-", "value": 4},
                {"op": "replace", "path": "/a/c", "value": 5},
                {"op": "remove", "path": "/a/d"},
                {"op": "test", "path": "/l/1", "value": 4}]),
        )
        .unwrap();
        assert_eq!(v, json!({"a": {"c": 5}, "l": [3, 4]}));
        assert!(json_patch(&mut v, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&mut v, &json!([{"op": "test", "path": "/l/0", "value": 9}])).is_err());
    }
}

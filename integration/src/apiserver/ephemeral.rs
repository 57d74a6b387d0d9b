//! A pod's `ephemeralcontainers` subresource (`kubectl debug`), as upstream's
//! `podEphemeralContainersStrategy` and `ValidatePodEphemeralContainersUpdate`: a PUT or PATCH
//! of the whole pod of which only `spec.ephemeralContainers` is taken; existing ones may be
//! neither removed nor changed; new ones are defaulted (termination message path and policy,
//! pull policy) and may set only the fields upstream allows an ephemeral container; a mirror
//! pod refuses them.

use serde_json::Value;

use super::resources::Resource;
use super::status::ApiError;

/// The fields an ephemeral container may set (upstream's `allowedEphemeralContainerFields`).
const ALLOWED: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "env",
    "envFrom",
    "volumeMounts",
    "volumeDevices",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
    "targetContainerName",
];

/// `current` with `requested`'s `spec.ephemeralContainers`, defaulted and validated.
pub fn update(
    res: &Resource,
    name: &str,
    current: &Value,
    requested: &Value,
) -> Result<Value, ApiError> {
    let invalid = |field: String, kind: &str, msg: String| {
        ApiError::invalid(res, name, &[(field.as_str(), kind, msg)])
    };
    let mut new = current.clone();
    let mut list = requested["spec"]["ephemeralContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let old = current["spec"]["ephemeralContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !list.is_empty()
        && current["metadata"]["annotations"]
            .get("kubernetes.io/config.mirror")
            .is_some()
    {
        return Err(invalid(
            "spec.ephemeralContainers".into(),
            "FieldValueForbidden",
            "Forbidden: static pods do not support ephemeral containers".into(),
        ));
    }
    for (i, c) in list.iter_mut().enumerate() {
        let c_name = c["name"].as_str().unwrap_or_default().to_string();
        let f = format!("spec.ephemeralContainers[{i}]");
        let obj = c.as_object_mut().ok_or_else(|| {
            invalid(
                f.clone(),
                "FieldValueInvalid",
                "Invalid value: not an object".into(),
            )
        })?;
        // defaulted before existing ones are compared, as upstream (a PUT sends them as the
        // client has them): an empty `resources` (kubectl sends `{}`) is not set
        if obj
            .get("resources")
            .is_some_and(|r| r.as_object().is_some_and(|m| m.is_empty()))
        {
            obj.remove("resources");
        }
        super::resources::default_container_common(obj);
        if old.iter().any(|o| o["name"] == c_name.as_str()) {
            continue;
        }
        if let Some(k) = obj.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
            return Err(invalid(
                format!("{f}.{k}"),
                "FieldValueForbidden",
                "Forbidden: cannot be set for an Ephemeral Container".into(),
            ));
        }
        if c_name.is_empty() {
            return Err(invalid(
                format!("{f}.name"),
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
        let image = obj.get("image").and_then(Value::as_str).unwrap_or_default();
        if image.is_empty() {
            return Err(invalid(
                format!("{f}.image"),
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
        let taken = ["containers", "initContainers"].iter().any(|l| {
            current["spec"][l]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|x| x["name"] == c_name.as_str()))
        });
        if taken {
            return Err(invalid(
                format!("{f}.name"),
                "FieldValueDuplicate",
                format!("Duplicate value: \"{c_name}\""),
            ));
        }
        if let Some(target) = obj.get("targetContainerName").and_then(Value::as_str) {
            let known = ["containers", "initContainers"].iter().any(|l| {
                current["spec"][l]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|x| x["name"] == target))
            });
            if !known {
                return Err(invalid(
                    format!("{f}.targetContainerName"),
                    "FieldValueNotFound",
                    format!("Not found: \"{target}\""),
                ));
            }
        }
    }
    for o in &old {
        let o_name = o["name"].as_str().unwrap_or_default();
        match list.iter().find(|c| c["name"] == o["name"]) {
            None => {
                return Err(invalid(
                    "spec.ephemeralContainers".into(),
                    "FieldValueForbidden",
                    format!(
                        "Forbidden: existing ephemeral containers \"{o_name}\" may not be removed"
                    ),
                ))
            }
            Some(c) if c != o => {
                return Err(invalid(
                    "spec.ephemeralContainers".into(),
                    "FieldValueForbidden",
                    format!(
                        "Forbidden: existing ephemeral containers \"{o_name}\" may not be changed"
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    let mut names: Vec<&str> = list.iter().filter_map(|c| c["name"].as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid(
            "spec.ephemeralContainers".into(),
            "FieldValueDuplicate",
            format!("Duplicate value: \"{}\"", w[0]),
        ));
    }
    if list.is_empty() {
        if let Some(spec) = new["spec"].as_object_mut() {
            spec.remove("ephemeralContainers");
        }
    } else {
        new["spec"]["ephemeralContainers"] = Value::Array(list);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(mirror: bool) -> Value {
        let mut p = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running"}
        });
        if mirror {
            p["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "x"});
        }
        p
    }

    fn res() -> &'static Resource {
        super::super::resources::RESOURCES
            .iter()
            .find(|r| r.kind == "Pod")
            .unwrap()
    }

    fn with(list: Value) -> Value {
        json!({"spec": {"ephemeralContainers": list}})
    }

    /// kubectl debug's container is taken with upstream's defaults; nothing else of the
    /// request is; forbidden fields, a lost or changed container, a mirror pod, a clash of
    /// names and an unknown target are refused with upstream's messages.
    #[test]
    fn only_ephemeral_containers_change_as_upstream_allows() {
        let mut req = with(
            json!([{"name": "debugger-ab", "image": "busybox", "resources": {}, "stdin": true, "tty": true, "targetContainerName": "c", "terminationMessagePolicy": "File"}]),
        );
        req["spec"]["containers"] = json!([]);
        req["status"] = json!({"phase": "Failed"});
        let new = update(res(), "p", &pod(false), &req).unwrap();
        let e = &new["spec"]["ephemeralContainers"][0];
        assert_eq!(e["imagePullPolicy"], "Always");
        assert_eq!(e["terminationMessagePath"], "/dev/termination-log");
        assert!(e.get("resources").is_none());
        assert_eq!(new["spec"]["containers"], pod(false)["spec"]["containers"]);
        assert_eq!(new["status"]["phase"], "Running");

        let err = |cur: &Value, req: Value| update(res(), "p", cur, &req).unwrap_err().message;
        assert!(err(&pod(false), with(json!([{"name": "d", "image": "busybox", "ports": [{"containerPort": 80}]}])))
            .ends_with("spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container"));
        assert!(
            err(&pod(true), with(json!([{"name": "d", "image": "busybox"}])))
                .ends_with("Forbidden: static pods do not support ephemeral containers")
        );
        assert!(err(
            &pod(false),
            with(json!([{"name": "c", "image": "busybox"}]))
        )
        .ends_with("spec.ephemeralContainers[0].name: Duplicate value: \"c\""));
        assert!(err(
            &pod(false),
            with(json!([{"name": "d", "image": "busybox", "targetContainerName": "x"}]))
        )
        .ends_with("Not found: \"x\""));
        assert!(err(&new, with(json!([])))
            .ends_with("existing ephemeral containers \"debugger-ab\" may not be removed"));
        // a client resending the container as it sent it (no defaults, `resources: {}`), with
        // one more: not a change
        let resent = with(json!([
            {"name": "debugger-ab", "image": "busybox", "resources": {}, "stdin": true, "tty": true, "targetContainerName": "c", "terminationMessagePolicy": "File"},
            {"name": "debugger-cd", "image": "busybox"}
        ]));
        let two = update(res(), "p", &new, &resent).unwrap();
        assert_eq!(
            two["spec"]["ephemeralContainers"].as_array().unwrap().len(),
            2
        );
        let mut changed = new["spec"]["ephemeralContainers"].clone();
        changed[0]["image"] = json!("alpine");
        assert!(err(&new, with(changed)).ends_with("may not be changed"));
        let pinned = update(
            res(),
            "p",
            &pod(false),
            &with(json!([{"name": "d", "image": "busybox:1.36"}])),
        )
        .unwrap();
        assert_eq!(
            pinned["spec"]["ephemeralContainers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
    }
}

//! YAML 1.1 octal file modes in a pod's volumes. Manifests are YAML 1.1 upstream (go-yaml
//! through `sigs.k8s.io/yaml`): `defaultMode: 0400` is the number 256, which every example of
//! a Secret volume writes. The manifest decoder reads YAML 1.2, where `0400` is a string; this
//! turns such a string back into the number YAML 1.1 means, only for the mode fields of
//! `spec.volumes` (`defaultMode`, `mode`), only when it is an octal literal with a leading
//! zero. Anything else is left for the typed decoding to refuse.

/// Rewrites the octal mode strings of a Pod document's `spec.volumes` (see the module docs).
pub(super) fn yaml11_modes(mut pod: serde_json::Value) -> serde_json::Value {
    if let Some(volumes) = pod
        .get_mut("spec")
        .and_then(|s| s.get_mut("volumes"))
        .and_then(|v| v.as_array_mut())
    {
        for v in volumes {
            fix(v);
        }
    }
    pod
}

fn octal(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('0').filter(|d| !d.is_empty())?;
    if !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    i64::from_str_radix(digits, 8).ok()
}

fn fix(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "defaultMode" || k == "mode" {
                    if let Some(n) = val.as_str().and_then(octal) {
                        *val = n.into();
                    }
                } else {
                    fix(val);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fix),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes_of_volumes_are_numbers_as_in_yaml_1_1() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: p, labels: {mode: "0400"}}
spec:
  containers: [{name: c, image: i}]
  volumes:
  - {name: a, secret: {secretName: s, defaultMode: 0400, items: [{key: k, path: p, mode: 0640}]}}
  - {name: b, configMap: {name: c, defaultMode: 420}}
  - name: c
    projected:
      defaultMode: 0o440
      sources: [{configMap: {name: c, items: [{key: k, path: p, mode: 0600}]}}]
  - {name: d, secret: {secretName: s, defaultMode: 0800}}
"#;
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
        let json = yaml11_modes(serde_json::to_value(yaml).unwrap());
        let vols = &json["spec"]["volumes"];
        assert_eq!(vols[0]["secret"]["defaultMode"], 256);
        assert_eq!(vols[0]["secret"]["items"][0]["mode"], 0o640);
        assert_eq!(vols[1]["configMap"]["defaultMode"], 420);
        assert_eq!(vols[2]["projected"]["defaultMode"], 0o440);
        assert_eq!(
            vols[2]["projected"]["sources"][0]["configMap"]["items"][0]["mode"],
            0o600
        );
        // Not octal: left for the typed decoding to refuse.
        assert_eq!(vols[3]["secret"]["defaultMode"], "0800");
        // Outside the volumes nothing changes.
        assert_eq!(json["metadata"]["labels"]["mode"], "0400");
    }
}

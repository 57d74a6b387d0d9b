//! The process part of a container spec: argv from `command`/`args` and the
//! image's ENTRYPOINT/CMD, environment merging and Kubernetes `$(VAR)`
//! expansion (kubernetes:third_party/forked/golang/expansion).

use std::collections::HashMap;

use super::SpecError;

/// Expands `$(VAR)` references in `input` with `lookup`, Kubernetes rules:
/// `$$` is an escaped `$`, an unknown or unterminated reference stays literal,
/// a `$` followed by anything else stays as it is.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            out.push_str(&input[checkpoint..i]);
            let next = bytes[i + 1];
            if next == b'$' {
                out.push('$');
                i += 2;
            } else if next == b'(' {
                match input[i + 2..].find(')') {
                    Some(len) => {
                        let name = &input[i + 2..i + 2 + len];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + len]),
                        }
                        i += 3 + len;
                    }
                    None => {
                        // Unterminated: the rest is literal.
                        out.push_str(&input[i..]);
                        i = bytes.len();
                    }
                }
            } else {
                out.push('$');
                i += 1;
            }
            checkpoint = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&input[checkpoint..]);
    out
}

/// The container's environment, Kubernetes-style (upstream `makeEnvironmentVariables`):
/// `service_env` first (the service variables, then the kubelet's resolved `envFrom`
/// variables), then each container variable in order, a non-empty value expanded against the
/// variables defined before it. `resolved` holds the values of `valueFrom` variables; a
/// `valueFrom` variable missing from it (an `optional` reference to a missing ConfigMap or
/// Secret key) is not set, keeping any earlier value of the name.
pub fn container_env(
    container: &k8s_openapi::api::core::v1::Container,
    service_env: &[(String, String)],
    resolved: &HashMap<String, String>,
) -> Vec<(String, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut map: HashMap<String, String> = HashMap::new();
    let set =
        |name: &str, value: String, order: &mut Vec<String>, map: &mut HashMap<String, String>| {
            if map.insert(name.to_string(), value).is_none() {
                order.push(name.to_string());
            }
        };
    for (k, v) in service_env {
        set(k, v.clone(), &mut order, &mut map);
    }
    for var in container.env.iter().flatten() {
        let value = match (var.value.as_deref(), resolved.get(&var.name)) {
            (Some(v), _) if !v.is_empty() => {
                let snapshot = map.clone();
                expand(v, &|name| snapshot.get(name).cloned())
            }
            (_, Some(v)) if var.value_from.is_some() => v.clone(),
            _ if var.value_from.is_some() => continue,
            _ => String::new(),
        };
        set(&var.name, value, &mut order, &mut map);
    }
    order
        .into_iter()
        .map(|k| {
            let v = map[&k].clone();
            (k, v)
        })
        .collect()
}

/// argv per containerd's `WithProcessArgs`: `command` replaces ENTRYPOINT
/// (and drops the image CMD), `args` replaces CMD; `$(VAR)` expanded in both.
pub fn argv(
    container: &k8s_openapi::api::core::v1::Container,
    image: Option<&oci_spec::image::Config>,
    env: &[(String, String)],
) -> Result<Vec<String>, SpecError> {
    let lookup_map: HashMap<&str, &str> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |name: &str| lookup_map.get(name).map(|v| v.to_string());
    let expand_all = |v: &Vec<String>| v.iter().map(|s| expand(s, &lookup)).collect::<Vec<_>>();
    let mut command: Vec<String> = container
        .command
        .as_ref()
        .map(expand_all)
        .unwrap_or_default();
    let mut args: Vec<String> = container.args.as_ref().map(expand_all).unwrap_or_default();
    if command.is_empty() {
        if args.is_empty() {
            args = image.and_then(|c| c.cmd().clone()).unwrap_or_default();
        }
        let entrypoint = image
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default();
        if !(entrypoint.len() == 1 && entrypoint[0].is_empty()) {
            command = entrypoint;
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(command)
}

/// Merges `KEY=VALUE` lists: later entries replace earlier ones with the same
/// key, keeping the first position (image env, then container env).
pub fn merge_env(layers: &[Vec<String>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for entry in layers.iter().flatten() {
        let key = entry
            .split_once('=')
            .map_or(entry.as_str(), |(k, _)| k)
            .to_string();
        match index.get(&key) {
            Some(&i) => out[i] = entry.clone(),
            None => {
                index.insert(key, out.len());
                out.push(entry.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let cases = [
            ("$(A)", "a"),
            ("x$(A)y", "xay"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$a"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("$", "$"),
            ("a$", "a$"),
            ("$(EMPTY)-", "-"),
            ("$(A)$(A)", "aa"),
            ("no refs", "no refs"),
            ("$()", "$()"),
            // From upstream's expansion tests.
            ("$$$$$$(A)", "$$$(A)"),
            ("f000-$$A", "f000-$A"),
            ("$(A)_______$(B", "a_______$(B"),
            ("$$", "$"),
            ("$(", "$("),
            ("$(A)$(EMPTY)$(A)", "aa"),
            ("$(UNKNOWN)$(A)", "$(UNKNOWN)a"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &lookup), want, "input {input}");
        }
    }

    #[test]
    fn command_replaces_entrypoint_and_cmd() {
        let image: oci_spec::image::Config =
            serde_json::from_str(r#"{"Entrypoint":["/ep"],"Cmd":["c1"],"Env":["PATH=/bin"]}"#)
                .unwrap();
        let mut c = k8s_openapi::api::core::v1::Container::default();
        assert_eq!(argv(&c, Some(&image), &[]).unwrap(), ["/ep", "c1"]);
        c.args = Some(vec!["$(A)".into()]);
        let env = [("A".to_string(), "x".to_string())];
        assert_eq!(argv(&c, Some(&image), &env).unwrap(), ["/ep", "x"]);
        c.command = Some(vec!["/bin/sh".into()]);
        c.args = None;
        assert_eq!(argv(&c, Some(&image), &env).unwrap(), ["/bin/sh"]);
        let empty = k8s_openapi::api::core::v1::Container::default();
        assert!(matches!(argv(&empty, None, &[]), Err(SpecError::NoCommand)));
    }

    #[test]
    fn env_values_expand_against_earlier_ones() {
        use k8s_openapi::api::core::v1::EnvVar;
        let c = k8s_openapi::api::core::v1::Container {
            env: Some(vec![
                EnvVar {
                    name: "B".into(),
                    value: Some("$(A)-$(C)".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "C".into(),
                    value: Some("c".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "S".into(),
                    value_from: Some(Default::default()),
                    ..Default::default()
                },
                // An optional reference that resolved to nothing: not set, the earlier
                // value of the name stays.
                EnvVar {
                    name: "A".into(),
                    value_from: Some(Default::default()),
                    ..Default::default()
                },
                EnvVar {
                    name: "UNSET".into(),
                    value_from: Some(Default::default()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let svc = [("A".to_string(), "a".to_string())];
        let resolved = HashMap::from([("S".to_string(), "secret".to_string())]);
        let env = container_env(&c, &svc, &resolved);
        assert_eq!(
            env,
            [
                ("A".into(), "a".into()),
                ("B".into(), "a-$(C)".into()),
                ("C".into(), "c".into()),
                ("S".into(), "secret".into())
            ]
        );
    }

    #[test]
    fn merge_env_later_wins_in_place() {
        let merged = merge_env(&[
            vec!["PATH=/bin".into(), "X=1".into()],
            vec!["X=2".into(), "Y=3".into()],
        ]);
        assert_eq!(merged, ["PATH=/bin", "X=2", "Y=3"]);
    }
}

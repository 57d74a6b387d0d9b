//! The taints the Node registers with in cluster mode: upstream's `--register-with-taints`
//! (`<key>[=<value>]:<effect>`, comma-separated; upstream `parseTaint`) and its
//! KubeletConfiguration key `registerWithTaints` (a list of `{key, value, effect}`), checked as
//! upstream's `CheckTaintValidity` with its messages.

use k8s_openapi::api::core::v1::Taint;

use crate::validation::names::{label_value_errors, qualified_name_errors};

const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Upstream's `validateTaintEffect`.
fn check_effect(effect: &str) -> Result<(), String> {
    if EFFECTS.contains(&effect) {
        Ok(())
    } else {
        Err(format!(
            "invalid taint effect: {effect}, unsupported taint effect"
        ))
    }
}

/// Checks one taint (key a qualified name, value a label value, a known effect); `spec` names
/// it in the message.
pub fn check_taint(taint: &Taint, spec: &str) -> Result<(), String> {
    let errs = qualified_name_errors(&taint.key);
    if !errs.is_empty() {
        return Err(format!("invalid taint spec: {spec}, {}", errs.join("; ")));
    }
    if let Some(v) = &taint.value {
        let errs = label_value_errors(v);
        if !errs.is_empty() {
            return Err(format!("invalid taint spec: {spec}, {}", errs.join("; ")));
        }
    }
    check_effect(&taint.effect)
}

/// The values of `--register-with-taints` (the flag repeatable, each a comma-separated list).
pub fn parse_taints(values: &[String]) -> Result<Vec<Taint>, String> {
    let mut out = Vec::new();
    for spec in values
        .iter()
        .flat_map(|v| v.split(','))
        .filter(|s| !s.is_empty())
    {
        let (kv, effect) = spec
            .split_once(':')
            .ok_or_else(|| format!("invalid taint spec: {spec}, an effect is required"))?;
        if effect.contains(':') {
            return Err(format!("invalid taint spec: {spec}"));
        }
        check_effect(effect)?;
        let (key, value) = match kv.split_once('=') {
            Some((_, v)) if v.contains('=') => return Err(format!("invalid taint spec: {spec}")),
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv, None),
        };
        let taint = Taint {
            key: key.to_string(),
            value,
            effect: effect.to_string(),
            time_added: None,
        };
        check_taint(&taint, spec)?;
        out.push(taint);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn parses_upstream_specs() {
        assert_eq!(
            parse_taints(&[
                "dedicated=gpu:NoSchedule,example.com/spot:PreferNoSchedule".into(),
                "k=:NoExecute".into()
            ])
            .unwrap(),
            [
                taint("dedicated", Some("gpu"), "NoSchedule"),
                taint("example.com/spot", None, "PreferNoSchedule"),
                taint("k", Some(""), "NoExecute"),
            ]
        );
        assert_eq!(parse_taints(&[]).unwrap(), []);
    }

    #[test]
    fn bad_specs_as_upstream_says() {
        for (spec, want) in [
            (
                "k=v:Sometimes",
                "invalid taint effect: Sometimes, unsupported taint effect",
            ),
            ("k=v", "invalid taint spec: k=v, an effect is required"),
            ("a=b=c:NoSchedule", "invalid taint spec: a=b=c:NoSchedule"),
            ("k:v:NoSchedule", "invalid taint spec: k:v:NoSchedule"),
        ] {
            assert_eq!(parse_taints(&[spec.into()]).unwrap_err(), want, "{spec}");
        }
        let e = parse_taints(&["bad key=v:NoSchedule".into()]).unwrap_err();
        assert!(
            e.starts_with("invalid taint spec: bad key=v:NoSchedule, "),
            "{e}"
        );
        let e = check_taint(&taint("k", Some("bad value!"), "NoSchedule"), "k").unwrap_err();
        assert!(e.starts_with("invalid taint spec: k, "), "{e}");
    }
}

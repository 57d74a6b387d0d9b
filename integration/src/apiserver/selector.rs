//! Label selectors (k8s.io/apimachinery/pkg/labels: `=`, `==`, `!=`, `in`, `notin`, `key`,
//! `!key`) and field selectors (pkg/fields: `=`, `==`, `!=` with `\` escapes), parsed from the
//! query string and matched against an object.

use std::collections::BTreeMap;

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelReq {
    /// `key=value`, `key==value`, `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value`, `key notin (a,b)` (also matches objects without the key).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelReq>);

impl LabelSelector {
    /// Parses `s` (empty: everything matches). Errors carry upstream's wording where it has one.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        for term in split_top_level(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_label_term(term)?);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelReq::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelReq::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            LabelReq::Exists(k) => labels.contains_key(k),
            LabelReq::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether the object's `metadata.labels` satisfy the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let labels: BTreeMap<String, String> = obj["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!(
            "unable to parse requirement: values[0][{key}]: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn check_value(key: &str, v: &str) -> Result<(), String> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "unable to parse requirement: values[0][{key}]: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn parse_label_term(term: &str) -> Result<LabelReq, String> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(LabelReq::DoesNotExist(key.to_string()));
    }
    for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = term.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            check_key(k)?;
            check_value(k, v)?;
            return Ok(if negate {
                LabelReq::NotIn(k.into(), vec![v.into()])
            } else {
                LabelReq::In(k.into(), vec![v.into()])
            });
        }
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0].trim();
        let rest = words[1].trim();
        let (negate, set) = if let Some(s) = rest.strip_prefix("notin") {
            (true, s.trim())
        } else if let Some(s) = rest.strip_prefix("in") {
            (false, s.trim())
        } else {
            return Err(format!(
                "found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
            ));
        };
        let inner = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| format!("found '{set}', expected: '('"))?;
        check_key(key)?;
        let mut values = Vec::new();
        for v in inner.split(',') {
            let v = v.trim();
            check_value(key, v)?;
            values.push(v.to_string());
        }
        return Ok(if negate {
            LabelReq::NotIn(key.into(), values)
        } else {
            LabelReq::In(key.into(), values)
        });
    }
    check_key(term)?;
    Ok(LabelReq::Exists(term.to_string()))
}

/// One field requirement: `label=value` (`equal`) or `label!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldReq {
    /// The field label (`spec.nodeName`).
    pub label: String,
    /// The value, unescaped.
    pub value: String,
    /// `true` for `=`/`==`, `false` for `!=`.
    pub equal: bool,
}

/// A parsed field selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldReq>);

impl FieldSelector {
    /// Parses `s` as `fields.ParseSelector` does (`\,`, `\=`, `\!` and `\\` escapes).
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut reqs = Vec::new();
        let mut terms = Vec::new();
        let mut cur = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    cur.push('\\');
                    match chars.next() {
                        Some(n) => cur.push(n),
                        None => {
                            return Err(format!("invalid selector: '{s}'; unterminated escape"))
                        }
                    }
                }
                ',' => terms.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        terms.push(cur);
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let (label, raw, equal) = split_field_term(&term)
                .ok_or_else(|| format!("invalid selector: '{s}'; can't understand '{term}'"))?;
            reqs.push(FieldReq {
                label,
                value: unescape(&raw),
                equal,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether `value_of(label)` satisfies every requirement; `value_of` returns `None` for a
    /// label the resource does not support, which is the error upstream returns.
    pub fn matches(
        &self,
        mut value_of: impl FnMut(&str) -> Option<String>,
    ) -> Result<bool, String> {
        let mut all = true;
        for r in &self.0 {
            let v = value_of(&r.label)
                .ok_or_else(|| format!("field label not supported: {}", r.label))?;
            if (v == r.value) != r.equal {
                all = false;
            }
        }
        Ok(all)
    }
}

fn split_field_term(term: &str) -> Option<(String, String, bool)> {
    // find the first unescaped operator
    let bytes = term.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((term[..i].to_string(), term[i + 2..].to_string(), false))
            }
            b'=' => {
                let skip = if bytes.get(i + 1) == Some(&b'=') {
                    2
                } else {
                    1
                };
                return Some((term[..i].to_string(), term[i + skip..].to_string(), true));
            }
            _ => i += 1,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_set_based_labels() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "app in (web,db)",
            "tier notin (back)",
            "app",
            "!missing",
            "app=web,tier=front",
            "app in (db, web),tier",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&l), "{s}");
        }
        let no = [
            "app=db",
            "app!=web",
            "app notin (web)",
            "missing",
            "!app",
            "app=web,tier=back",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&l), "{s}");
        }
        // != and notin match objects without the key, as upstream
        assert!(LabelSelector::parse("x!=y").unwrap().matches(&labels(&[])));
    }

    #[test]
    fn bad_label_selectors_are_errors() {
        for s in ["app=we b", "-app=web", "app in web", "app foo (x)"] {
            assert!(LabelSelector::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn field_selectors_with_escapes_and_negation() {
        let sel = FieldSelector::parse(r"spec.nodeName=node-a,status.phase!=Failed").unwrap();
        assert_eq!(sel.0.len(), 2);
        assert!(!sel.0[1].equal);
        let ok = sel.matches(|l| match l {
            "spec.nodeName" => Some("node-a".into()),
            "status.phase" => Some("Running".into()),
            _ => None,
        });
        assert_eq!(ok, Ok(true));
        let esc = FieldSelector::parse(r"metadata.name=a\,b\=c").unwrap();
        assert_eq!(esc.0[0].value, "a,b=c");
        let unsupported = FieldSelector::parse("spec.foo=x")
            .unwrap()
            .matches(|_| None);
        assert_eq!(
            unsupported,
            Err("field label not supported: spec.foo".into())
        );
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}

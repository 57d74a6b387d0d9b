//! Name formats of the Kubernetes API (`k8s.io/apimachinery/pkg/util/validation`),
//! with upstream's exact error texts.

/// Max length of a DNS-1123 label.
pub const DNS1123_LABEL_MAX: usize = 63;
/// Max length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;

/// Upstream's message for a malformed DNS-1123 label.
pub const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
/// Upstream's message for a malformed DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn label_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && ok(b[0]) && ok(b[b.len() - 1]) && b.iter().all(|&c| ok(c) || c == b'-')
}

/// True for a DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 63).
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= DNS1123_LABEL_MAX && label_shape(s)
}

/// True for a DNS-1123 subdomain (labels joined by `.`, ≤ 253).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(label_shape)
}

/// Upstream `IsDNS1123Label`: the list of problems, empty when valid.
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !label_shape(s) {
        errs.push(DNS1123_LABEL_MSG.to_owned());
    }
    errs
}

/// Upstream `IsDNS1123Subdomain`: the list of problems, empty when valid.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if !s.split('.').all(label_shape) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_owned());
    }
    errs
}

/// Upstream `IsValidPortName` (IANA service name): the problems, empty when valid.
pub fn port_name_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > 15 {
        errs.push("must be no more than 15 characters".to_owned());
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".to_owned());
    }
    if !s.bytes().any(|c| c.is_ascii_alphabetic()) {
        errs.push("must contain at least one letter (a-z)".to_owned());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_owned());
    }
    errs
}

/// Upstream `IsEnvVarName` with relaxed validation (GA in 1.34): any
/// printable ASCII except `=`.
pub fn env_var_name_errors(s: &str) -> Vec<String> {
    if s.bytes().all(|c| (b' '..=b'~').contains(&c) && c != b'=') {
        vec![]
    } else {
        vec!["a valid environment variable name must consist only of printable ASCII characters other than '='".into()]
    }
}

/// Upstream's message for a malformed ConfigMap or Secret key (`IsConfigMapKey`).
pub const CONFIG_MAP_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// Upstream `IsConfigMapKey` (the keys of ConfigMaps and Secrets, file names in their
/// volumes): `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..` nor starting with `..`.
pub fn config_map_key_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
    {
        errs.push(CONFIG_MAP_KEY_MSG.to_owned());
    }
    match s {
        "." => errs.push("must not be '.'".to_owned()),
        ".." => errs.push("must not be '..'".to_owned()),
        _ if s.starts_with("..") => errs.push("must not start with '..'".to_owned()),
        _ => {}
    }
    errs
}

fn qualified_name_part(s: &str) -> bool {
    s.len() <= 63 && qualified_name_pattern(s)
}

/// Upstream's `qualifiedNameFmt` pattern alone, whatever the length.
fn qualified_name_pattern(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| alnum(c) || c == b'-' || c == b'_' || c == b'.')
}

/// Upstream `IsQualifiedName` (label and annotation keys: `[prefix/]name`).
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_owned());
        } else {
            errs.extend(
                dns1123_subdomain_errors(p)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_owned());
    } else if !qualified_name_part(name) || name.contains('/') {
        errs.push(QUALIFIED_NAME_MSG.to_owned());
    }
    errs
}

/// Upstream `IsValidLabelValue`.
pub fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_owned());
    }
    // The whole value against the pattern, also when it is too long (upstream reports both;
    // slicing it at 63 bytes could split a character).
    if !s.is_empty() && !qualified_name_pattern(s) {
        errs.push(LABEL_VALUE_MSG.to_owned());
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `selector` fuzz target: a label value over 63 bytes whose 63rd byte is
    /// inside a character panicked (the value was sliced at 63 bytes).
    #[test]
    fn long_label_values_with_multibyte_characters() {
        let value = format!("{}\u{486}\u{4ec}", "\0".repeat(62));
        assert_eq!(
            label_value_errors(&value),
            ["must be no more than 63 characters", LABEL_VALUE_MSG]
        );
        assert_eq!(
            label_value_errors(&"a".repeat(64)),
            ["must be no more than 63 characters"]
        );
        assert_eq!(label_value_errors(&"a".repeat(63)), Vec::<String>::new());
    }

    #[test]
    fn labels_and_subdomains() {
        for ok in ["a", "ab", "a-b", "0", "a1", "1-2", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a_b", "a.b", "a b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        for ok in ["a.b", "web-node1", "a.b.c", "1.2.3.4"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "A.b", "a_b"] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
        assert_eq!(
            dns1123_label_errors(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_owned()]
        );
        assert_eq!(
            dns1123_subdomain_errors("Web"),
            vec![DNS1123_SUBDOMAIN_MSG.to_owned()]
        );
    }

    #[test]
    fn port_names() {
        assert!(port_name_errors("http").is_empty());
        assert!(port_name_errors("h2-c").is_empty());
        assert_eq!(
            port_name_errors("123"),
            vec!["must contain at least one letter (a-z)".to_owned()]
        );
        assert_eq!(
            port_name_errors("a--b"),
            vec!["must not contain consecutive hyphens".to_owned()]
        );
        assert_eq!(
            port_name_errors("-ab"),
            vec!["must not begin or end with a hyphen".to_owned()]
        );
        assert_eq!(port_name_errors("abcdefghijklmnop").len(), 1);
        assert_eq!(port_name_errors("HTTP").len(), 1);
    }

    #[test]
    fn env_and_qualified() {
        assert!(env_var_name_errors("MY_VAR").is_empty());
        assert!(env_var_name_errors("1abc.d-e").is_empty());
        assert!(!env_var_name_errors("A=B").is_empty());
        assert!(!env_var_name_errors("tab\there").is_empty());
        assert!(qualified_name_errors("app").is_empty());
        assert!(qualified_name_errors("example.com/App_1").is_empty());
        assert!(!qualified_name_errors("/app").is_empty());
        assert!(!qualified_name_errors("a/b/c").is_empty());
        assert!(!qualified_name_errors("-app").is_empty());
        assert!(label_value_errors("").is_empty());
        assert!(label_value_errors("v1.2_x").is_empty());
        assert!(!label_value_errors("bad value").is_empty());
        assert!(!label_value_errors(&"v".repeat(64)).is_empty());
    }
}

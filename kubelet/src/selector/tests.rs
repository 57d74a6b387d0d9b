//! Tables after upstream `labels/selector_test.go`.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn parses_good_and_rejects_bad() {
    for good in [
        "",
        "x=a,y=b,z=c",
        "x!=a,y=b",
        "x=,z= ",
        "x= ,z= ",
        "!x",
        "x>1",
        "x>1,z<5",
        "x in (a,b)",
        "x notin ( a , b )",
        "x==a",
        "a.b/c-d_e=v",
        "in=notin",
        "environment in (production, qa),tier notin (frontend, backend),partition,!canary",
    ] {
        Selector::parse(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
    for bad in [
        "x=a||y=b",
        "x==a==b",
        "!x=a",
        "x<a",
        "x=a,",
        ",x=a",
        "x in ()",
        "x in a",
        "x in (a",
        "x notin (a,b",
        "x=(a)",
        "-x=a",
        "x=a b",
        "x!",
        "x = a/b",
    ] {
        assert!(Selector::parse(bad).is_err(), "{bad:?} should fail");
    }
}

#[test]
fn matches_as_upstream() {
    let yes: &[(&str, &[(&str, &str)])] = &[
        ("", &[("x", "y")]),
        ("x=y", &[("x", "y")]),
        ("x=y,z=w", &[("x", "y"), ("z", "w")]),
        ("x!=y,z!=w", &[("x", "z"), ("z", "a")]),
        ("notin=in", &[("notin", "in")]),
        ("x", &[("x", "z")]),
        ("!x", &[("y", "z")]),
        ("x>1", &[("x", "2")]),
        ("x<1", &[("x", "0")]),
        ("x in (a,b)", &[("x", "b")]),
        ("x notin (a,b)", &[("x", "c")]),
        ("x notin (a,b)", &[]),
        ("x!=y", &[]),
        ("x=", &[("x", "")]),
    ];
    for (sel, l) in yes {
        assert!(
            Selector::parse(sel).unwrap().matches(&labels(l)),
            "{sel:?} should match {l:?}"
        );
    }
    let no: &[(&str, &[(&str, &str)])] = &[
        ("x=z", &[]),
        ("x=y", &[("x", "z")]),
        ("x=y,z=w", &[("x", "w"), ("z", "w")]),
        ("x!=y,z!=w", &[("x", "z"), ("z", "w")]),
        ("x", &[("y", "z")]),
        ("!x", &[("x", "z")]),
        ("x>1", &[("x", "0")]),
        ("x<1", &[("x", "2")]),
        ("x>1", &[("x", "abc")]),
        ("x in (a,b)", &[]),
        ("x notin (a,b)", &[("x", "a")]),
    ];
    for (sel, l) in no {
        assert!(
            !Selector::parse(sel).unwrap().matches(&labels(l)),
            "{sel:?} should not match {l:?}"
        );
    }
}

#[test]
fn prints_canonically() {
    let s = Selector::parse("z in (b, a),x!=1,!y,w").unwrap();
    assert_eq!(s.to_string(), "w,x!=1,!y,z in (a,b)");
    assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    assert!(Selector::parse("  ").unwrap().is_empty());
}

#[test]
fn label_selector_objects() {
    let ls = LabelSelector {
        match_labels: Some([("app".to_string(), "web".to_string())].into()),
        match_expressions: Some(vec![
            LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["fe".into(), "be".into()]),
            },
            LabelSelectorRequirement {
                key: "canary".into(),
                operator: "DoesNotExist".into(),
                values: None,
            },
        ]),
    };
    let s = from_label_selector(&ls).unwrap();
    assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("canary", "1")])));
    assert!(!s.matches(&labels(&[("app", "web")])));
    assert!(from_label_selector(&LabelSelector::default())
        .unwrap()
        .matches(&labels(&[])));
    let bad = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "a".into(),
            operator: "In".into(),
            values: None,
        }]),
        ..Default::default()
    };
    assert!(from_label_selector(&bad).is_err());
    let bad = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "a".into(),
            operator: "Exists".into(),
            values: Some(vec!["x".into()]),
        }]),
        ..Default::default()
    };
    assert!(from_label_selector(&bad).is_err());
}

#[test]
fn service_selectors() {
    let sel = [("app".to_string(), "web".to_string())].into();
    let s = from_service_selector(Some(&sel)).unwrap();
    assert!(s.matches(&labels(&[("app", "web"), ("x", "y")])));
    assert!(!s.matches_opt(None));
    assert!(from_service_selector(Some(&BTreeMap::new())).is_none());
    assert!(from_service_selector(None).is_none());
}

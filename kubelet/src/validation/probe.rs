//! Probe and lifecycle-hook checks.

use super::names::port_name_errors;
use super::{Errors, FieldError};
use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub(super) fn validate_probe(p: &Probe, f: &str, kind: &str, _c: &Container, errs: &mut Errors) {
    let handlers = [
        p.exec.is_some(),
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.grpc.is_some(),
    ];
    count_handlers(&handlers, f, errs);
    if let Some(e) = &p.exec {
        exec(e, f, errs);
    }
    if let Some(h) = &p.http_get {
        http_get(h, f, errs);
    }
    if let Some(t) = &p.tcp_socket {
        tcp(t, f, errs);
    }
    if let Some(g) = &p.grpc {
        if !(1..=65535).contains(&g.port) {
            errs.push(FieldError::invalid(
                format!("{f}.grpc.port"),
                g.port,
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    for (key, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(v) = v {
            if v < 0 {
                errs.push(FieldError::invalid(
                    format!("{f}.{key}"),
                    v,
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
    if kind != "readinessProbe" {
        if let Some(s) = p.success_threshold {
            if s != 1 {
                errs.push(FieldError::invalid(
                    format!("{f}.successThreshold"),
                    s,
                    "must be 1",
                ));
            }
        }
    }
    if let Some(g) = p.termination_grace_period_seconds {
        if kind == "readinessProbe" {
            errs.push(FieldError::invalid(
                format!("{f}.terminationGracePeriodSeconds"),
                g,
                "must not be set for readinessProbes",
            ));
        } else if g <= 0 {
            errs.push(FieldError::invalid(
                format!("{f}.terminationGracePeriodSeconds"),
                g,
                "must be greater than 0",
            ));
        }
    }
}

/// A lifecycle handler at `f`; `grace` is the pod's `terminationGracePeriodSeconds`, which a
/// `sleep` must not exceed (upstream's `validateSleepAction`).
pub(super) fn validate_handler(h: &LifecycleHandler, f: &str, grace: i64, errs: &mut Errors) {
    let handlers = [
        h.exec.is_some(),
        h.http_get.is_some(),
        h.tcp_socket.is_some(),
        h.sleep.is_some(),
    ];
    count_handlers(&handlers, f, errs);
    if let Some(e) = &h.exec {
        exec(e, f, errs);
    }
    if let Some(g) = &h.http_get {
        http_get(g, f, errs);
    }
    if let Some(t) = &h.tcp_socket {
        tcp(t, f, errs);
    }
    if let Some(s) = &h.sleep {
        if s.seconds < 0 || s.seconds > grace {
            errs.push(FieldError::invalid(
                format!("{f}.sleep"),
                s.seconds,
                format!(
                    "must be non-negative and less than terminationGracePeriodSeconds ({grace})"
                ),
            ));
        }
    }
}

fn count_handlers(handlers: &[bool], f: &str, errs: &mut Errors) {
    match handlers.iter().filter(|b| **b).count() {
        0 => errs.push(FieldError::required(f, "must specify a handler type")),
        1 => {}
        _ => errs.push(FieldError::forbidden(
            f,
            "may not specify more than 1 handler type",
        )),
    }
}

fn exec(e: &ExecAction, f: &str, errs: &mut Errors) {
    if e.command.as_ref().is_none_or(Vec::is_empty) {
        errs.push(FieldError::required(format!("{f}.exec.command"), ""));
    }
}

fn port(p: &IntOrString, f: &str, errs: &mut Errors) {
    match p {
        IntOrString::Int(n) => {
            if !(1..=65535).contains(n) {
                errs.push(FieldError::invalid(
                    f,
                    *n,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        IntOrString::String(s) => {
            if s.parse::<i32>().is_ok_and(|n| (1..=65535).contains(&n)) {
                return;
            }
            errs.name(f, s, port_name_errors(s));
        }
    }
}

fn http_get(h: &HTTPGetAction, f: &str, errs: &mut Errors) {
    port(&h.port, &format!("{f}.httpGet.port"), errs);
    if let Some(s) = h.scheme.as_deref() {
        if !["HTTP", "HTTPS"].contains(&s) {
            errs.push(FieldError::not_supported(
                format!("{f}.httpGet.scheme"),
                s,
                &["HTTP", "HTTPS"],
            ));
        }
    }
    for hd in h.http_headers.iter().flatten() {
        let ok = !hd.name.is_empty()
            && hd
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            errs.push(FieldError::invalid(
                format!("{f}.httpGet.httpHeaders"),
                &hd.name,
                "a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
            ));
        }
    }
}

fn tcp(t: &TCPSocketAction, f: &str, errs: &mut Errors) {
    port(&t.port, &format!("{f}.tcpSocket.port"), errs);
}

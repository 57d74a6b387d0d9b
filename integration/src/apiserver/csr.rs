//! `certificates.k8s.io/v1` CertificateSigningRequests: what the registry's strategy does on
//! create, the printer `kubectl get csr` shows, and the two controllers of kubeadm's
//! kube-controller-manager that act on kubelet client CSRs:
//!
//! - **csrapproving** (`pkg/controller/certificates/approver`): a pending CSR for the signer
//!   `kubernetes.io/kube-apiserver-client-kubelet` that is a valid kubelet client request
//!   (`O=system:nodes` only, `CN=system:node:<name>`, no SANs, usages `digital signature` +
//!   `client auth`, optionally `key encipherment`) is approved when its requester may: the
//!   `selfnodeclient` recognizer (the requester is the node the CSR names: a renewal) for a
//!   member of `system:nodes`, the `nodeclient` one for a member of `system:bootstrappers` or
//!   one of its subgroups (kubeadm binds `system:bootstrappers:kubeadm:default-node-token`).
//!   Approval is the condition `Approved`/`True`, reason `AutoApproved`, with upstream's
//!   messages, written through the `/approval` subresource.
//! - **csrsigning** (`pkg/controller/certificates/signer`): an approved, not failed CSR of that
//!   signer or of `kubernetes.io/kubelet-serving` (kubeadm's controller manager signs both
//!   with the cluster CA) without a certificate gets one from the cluster CA, with the
//!   request's subject and subjectAltNames and the spec's usages, valid from `now - backdate`
//!   (5 min) to `now + duration` (`notBefore + duration` for a duration of 8 h or more), where
//!   duration is the cluster signing duration (default one year, kube-controller-manager's
//!   `--cluster-signing-duration`) or `spec.expirationSeconds` when shorter (never under
//!   10 min), never past the CA's own `notAfter`; a request the signer does not accept gets the
//!   condition `Failed`, reason `SignerValidationFailure`. Written through `/status`.
//!
//! A `kubelet-serving` CSR is signed once approved, and only an admin approves it (`kubectl
//! certificate approve`): upstream's approver recognizes kubelet client CSRs only. Its request
//! must pass `ValidateKubeletServingCSR` (`O=system:nodes` only, `CN=system:node:<name>`, at
//! least one DNS or IP SAN, no email or URI SAN, usages `digital signature` + `server auth`,
//! optionally `key encipherment`), else the signer marks it `Failed`. Other signers
//! (`kube-apiserver-client`, custom) are left pending: no controller of this stand-in signs
//! them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::auth::Identity;
use super::handler::{self, Query, Shared, Target};
use super::resources::RESOURCES;
use super::status::ApiError;
use super::table::human_duration;
use super::tls::Ca;

/// The signer of kubelet client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of kubelet serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The signing controller's settings.
#[derive(Debug, Clone, Copy)]
pub struct Signing {
    /// kube-controller-manager's `--cluster-signing-duration` (default 8760 h).
    pub duration: Duration,
    /// How far before now a certificate's `notBefore` is set (upstream: 5 min, fixed). A test
    /// that wants a short certificate whose rotation deadline (70-90 % of
    /// `notAfter - notBefore`) is not already passed sets it lower.
    pub backdate: Duration,
}

impl Default for Signing {
    fn default() -> Signing {
        Signing {
            duration: Duration::from_secs(365 * 24 * 3600),
            backdate: Duration::from_secs(300),
        }
    }
}

fn csr_res() -> usize {
    RESOURCES
        .iter()
        .position(|r| r.kind == "CertificateSigningRequest")
        .expect("CSRs are served")
}

/// The strategy's `PrepareForCreate` and the validation a kubelet can hit: the requester's
/// identity into `spec.username`/`groups` (`uid`/`extra` cleared), status cleared;
/// `spec.request` must be a PEM `CERTIFICATE REQUEST` whose signature verifies,
/// `spec.signerName` and `spec.usages` are required, `spec.expirationSeconds` at least 600.
pub fn prepare_create(body: &[u8], requester: Option<&Identity>) -> Result<Vec<u8>, ApiError> {
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        // the generic path reports the decoding error
        return Ok(body.to_vec());
    };
    if !obj.is_object() {
        return Ok(body.to_vec());
    }
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = obj["spec"].as_object_mut().expect("spec object");
    spec.remove("uid");
    spec.remove("extra");
    match requester {
        Some(id) => {
            spec.insert("username".into(), json!(id.user));
            spec.insert("groups".into(), json!(id.groups));
        }
        None => {
            spec.remove("username");
            spec.remove("groups");
        }
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let mut causes: Vec<(&str, &str, String)> = Vec::new();
    let request = obj["spec"]["request"].as_str().unwrap_or("");
    let pem = decode_b64(request).unwrap_or_default();
    if parse_request(&pem).is_err() {
        causes.push((
            "spec.request",
            "FieldValueInvalid",
            "Invalid value: []byte{...}: PEM block type must be CERTIFICATE REQUEST".into(),
        ));
    }
    if obj["spec"]["signerName"].as_str().unwrap_or("").is_empty() {
        causes.push((
            "spec.signerName",
            "FieldValueRequired",
            "Required value".into(),
        ));
    }
    if obj["spec"]["usages"].as_array().is_none_or(Vec::is_empty) {
        causes.push((
            "spec.usages",
            "FieldValueRequired",
            "Required value: usages must be provided".into(),
        ));
    }
    if let Some(e) = obj["spec"]["expirationSeconds"].as_i64() {
        if e < 600 {
            causes.push((
                "spec.expirationSeconds",
                "FieldValueInvalid",
                format!("Invalid value: {e}: may not specify a duration less than 600 seconds (10 minutes)"),
            ));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(&RESOURCES[csr_res()], &name, &causes));
    }
    Ok(serde_json::to_vec(&obj).unwrap_or_default())
}

/// A protobuf body of `PUT .../certificatesigningrequests/<name>/approval` (kubectl's typed
/// client, `kubectl certificate approve|deny`, writes protobuf) as the JSON update the
/// handler takes: `stored` with the body's `metadata.resourceVersion` (the conflict check) and
/// `status.conditions`, the only fields the approval subresource changes.
pub fn approval_from_protobuf(stored: &Value, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    use super::serviceaccounts::proto::{fields, message, string, unwrap, Field};
    let decode = || -> Result<(Option<String>, Vec<Value>), &'static str> {
        let mut rv = None;
        let mut conds = Vec::new();
        let time = |b: &[u8]| -> Result<String, &'static str> {
            let mut secs = 0i64;
            for (n, f) in fields(b)? {
                if let (1, Field::Varint(v)) = (n, f) {
                    secs = v as i64;
                }
            }
            let t = jiff::Timestamp::from_second(secs).map_err(|_| "bad time")?;
            Ok(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        };
        for (n, f) in fields(unwrap(body)?)? {
            match n {
                1 => {
                    for (m, g) in fields(message(&f)?)? {
                        if m == 6 {
                            rv = Some(string(&g)?);
                        }
                    }
                }
                3 => {
                    for (m, g) in fields(message(&f)?)? {
                        if m != 1 {
                            continue;
                        }
                        let mut c = json!({});
                        for (k, h) in fields(message(&g)?)? {
                            let (name, v) = match k {
                                1 => ("type", json!(string(&h)?)),
                                2 => ("reason", json!(string(&h)?)),
                                3 => ("message", json!(string(&h)?)),
                                4 => ("lastUpdateTime", json!(time(message(&h)?)?)),
                                5 => ("lastTransitionTime", json!(time(message(&h)?)?)),
                                6 => ("status", json!(string(&h)?)),
                                _ => continue,
                            };
                            c[name] = v;
                        }
                        conds.push(c);
                    }
                }
                _ => {}
            }
        }
        Ok((rv, conds))
    };
    let (rv, conds) = decode().map_err(|e| {
        ApiError::bad_request(format!(
            "CertificateSigningRequest in version \"v1\" cannot be handled as a \
             CertificateSigningRequest: {e}"
        ))
    })?;
    let mut obj = stored.clone();
    match rv {
        Some(rv) => obj["metadata"]["resourceVersion"] = json!(rv),
        None => {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
        }
    }
    obj["status"]["conditions"] = json!(conds);
    Ok(serde_json::to_vec(&obj).unwrap_or_default())
}

fn decode_b64(s: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    String::from_utf8(raw).ok()
}

/// What the controllers read from a CSR's `spec.request`.
#[derive(Debug)]
struct Request {
    cn: String,
    orgs: Vec<String>,
    has_sans: bool,
    /// DNS and IP subjectAltNames.
    dns_or_ip: usize,
    /// Email and URI subjectAltNames.
    email: usize,
    uri: usize,
}

fn parse_request(pem_text: &str) -> Result<Request, String> {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem_text.as_bytes())
        .map_err(|e| e.to_string())?;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| e.to_string())?;
    req.verify_signature().map_err(|e| e.to_string())?;
    let subject = &req.certification_request_info.subject;
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("")
        .to_string();
    let orgs = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let mut has_sans = false;
    let (mut dns_or_ip, mut email, mut uri) = (0, 0, 0);
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            has_sans = true;
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(_) | GeneralName::IPAddress(_) => dns_or_ip += 1,
                    GeneralName::RFC822Name(_) => email += 1,
                    GeneralName::URI(_) => uri += 1,
                    _ => {}
                }
            }
        }
    }
    Ok(Request {
        cn,
        orgs,
        has_sans,
        dns_or_ip,
        email,
        uri,
    })
}

/// Upstream's `ValidateKubeletClientCSR`.
fn validate_kubelet_client(req: &Request, usages: &[String]) -> Result<(), String> {
    if req.orgs != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if req.has_sans {
        return Err("DNS, email, IP or URI subjectAltNames are not allowed".into());
    }
    if !req.cn.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    let mut set: Vec<&str> = usages.iter().map(String::as_str).collect();
    set.sort_unstable();
    set.dedup();
    let no_rsa = ["client auth", "digital signature"];
    let rsa = ["client auth", "digital signature", "key encipherment"];
    if set != no_rsa && set != rsa {
        return Err("usages did not match [client auth digital signature key encipherment]".into());
    }
    Ok(())
}

/// Upstream's `ValidateKubeletServingCSR`.
fn validate_kubelet_serving(req: &Request, usages: &[String]) -> Result<(), String> {
    if req.orgs != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if req.dns_or_ip == 0 {
        return Err("DNS or IP subjectAltName is required".into());
    }
    if req.email > 0 {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if req.uri > 0 {
        return Err("URI subjectAltNames are not allowed".into());
    }
    let mut set: Vec<&str> = usages.iter().map(String::as_str).collect();
    set.sort_unstable();
    set.dedup();
    let no_rsa = ["digital signature", "server auth"];
    let rsa = ["digital signature", "key encipherment", "server auth"];
    if set != no_rsa && set != rsa {
        return Err("usages did not match [digital signature key encipherment server auth]".into());
    }
    if !req.cn.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    Ok(())
}

fn conditions(csr: &Value) -> &[Value] {
    csr["status"]["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn has_true(csr: &Value, kind: &str) -> bool {
    conditions(csr)
        .iter()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn usages_of(csr: &Value) -> Vec<String> {
    csr["spec"]["usages"]
        .as_array()
        .map(|u| {
            u.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The approver's decision for one CSR: `Some(message)` to approve it.
fn approval(csr: &Value) -> Option<&'static str> {
    if csr["status"]["certificate"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
        || has_true(csr, "Approved")
        || has_true(csr, "Denied")
    {
        return None;
    }
    if csr["spec"]["signerName"] != KUBELET_CLIENT_SIGNER {
        return None;
    }
    let req = parse_request(&decode_b64(csr["spec"]["request"].as_str()?)?).ok()?;
    validate_kubelet_client(&req, &usages_of(csr)).ok()?;
    let username = csr["spec"]["username"].as_str().unwrap_or("");
    let groups: Vec<&str> = csr["spec"]["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // selfnodeclient first, then nodeclient, as upstream's recognizers
    if username == req.cn && groups.contains(&"system:nodes") {
        return Some("Auto approving self kubelet client certificate after SubjectAccessReview.");
    }
    if groups
        .iter()
        .any(|g| *g == "system:bootstrappers" || g.starts_with("system:bootstrappers:"))
    {
        return Some("Auto approving kubelet client certificate after SubjectAccessReview.");
    }
    None
}

/// What the signer does with one CSR.
enum Signed {
    Certificate(String),
    Failed(String),
}

fn signing(csr: &Value, ca: &Ca, opts: Signing) -> Option<Signed> {
    let validate = match csr["spec"]["signerName"].as_str() {
        Some(KUBELET_CLIENT_SIGNER) => validate_kubelet_client,
        Some(KUBELET_SERVING_SIGNER) => validate_kubelet_serving,
        _ => return None,
    };
    if !has_true(csr, "Approved")
        || has_true(csr, "Failed")
        || csr["status"]["certificate"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    {
        return None;
    }
    let pem = decode_b64(csr["spec"]["request"].as_str().unwrap_or(""))?;
    let usages = usages_of(csr);
    let req = match parse_request(&pem) {
        Ok(r) => r,
        Err(e) => return Some(Signed::Failed(format!("unable to parse csr: {e}"))),
    };
    if let Err(e) = validate(&req, &usages) {
        return Some(Signed::Failed(e));
    }
    // upstream's `duration`: the requested one when shorter than the cluster's, never under
    // 10 min (twice the backdate)
    let ttl = match csr["spec"]["expirationSeconds"].as_i64() {
        None => opts.duration,
        Some(s) => {
            let asked = Duration::from_secs(s.max(0) as u64);
            if asked > opts.duration {
                opts.duration
            } else {
                asked.max(Duration::from_secs(600))
            }
        }
    };
    let now = jiff::Timestamp::now();
    let span = |d: Duration| jiff::SignedDuration::from_secs(d.as_secs() as i64);
    let not_before = now - span(opts.backdate);
    let mut not_after = if ttl < Duration::from_secs(8 * 3600) {
        now + span(ttl)
    } else {
        not_before + span(ttl)
    };
    not_after = not_after.min(ca.not_after());
    Some(
        match ca.sign_request(&pem, &usages, not_before, not_after) {
            Ok(cert) => Signed::Certificate(cert),
            Err(e) => Signed::Failed(e),
        },
    )
}

/// Runs the approving and signing controllers until the server stops: each pass looks at
/// every CSR; a pass runs when a CSR was written ([`Shared::csr_written`]) and every 5 s.
pub async fn run_controllers(shared: Arc<Shared>, ca: Arc<Ca>, opts: Signing) {
    let res = csr_res();
    loop {
        let wake = shared.csr_written.notified();
        let csrs = shared.lock().list(res, None);
        for csr in csrs {
            let name = csr["metadata"]["name"].as_str().unwrap_or("").to_string();
            let target = |sub: &str| Target {
                res,
                ns: None,
                name: Some(name.clone()),
                sub: Some(sub.to_string()),
            };
            if let Some(message) = approval(&csr) {
                let mut new = csr.clone();
                let mut conds = conditions(&csr).to_vec();
                let at = now_rfc3339();
                conds.push(
                    json!({"type": "Approved", "status": "True", "reason": "AutoApproved",
                    "message": message, "lastUpdateTime": at, "lastTransitionTime": at}),
                );
                new["status"]["conditions"] = json!(conds);
                let _ = handler::update(
                    &shared,
                    &target("approval"),
                    &Query::new(),
                    new.to_string().as_bytes(),
                );
                continue;
            }
            let Some(outcome) = signing(&csr, &ca, opts) else {
                continue;
            };
            let mut new = csr.clone();
            match outcome {
                Signed::Certificate(pem) => {
                    use base64::Engine;
                    new["status"]["certificate"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(pem));
                }
                Signed::Failed(why) => {
                    let mut conds = conditions(&csr).to_vec();
                    let at = now_rfc3339();
                    conds.push(json!({"type": "Failed", "status": "True",
                        "reason": "SignerValidationFailure", "message": why,
                        "lastUpdateTime": at, "lastTransitionTime": at}));
                    new["status"]["conditions"] = json!(conds);
                }
            }
            let _ = handler::update(
                &shared,
                &target("status"),
                &Query::new(),
                new.to_string().as_bytes(),
            );
        }
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// The columns of `kubectl get csr` (upstream's printer).
pub fn columns(col: impl Fn(&str, &str, &str, u8) -> Value, name: &str, age: &str) -> Vec<Value> {
    vec![
        col("Name", "name", name, 0),
        col("Age", "", age, 0),
        col("SignerName", "", "signerName indicates the requested signer, and is a qualified name.", 0),
        col("Requestor", "", "username contains the name of the user that created the CertificateSigningRequest. Populated by the API server on creation and immutable.", 0),
        col("RequestedDuration", "", "expirationSeconds is the requested duration of validity of the issued certificate. The certificate signer may issue a certificate with a different validity duration so a client must compare the delta between the notBefore and and notAfter fields in the issued certificate to determine the actual duration.", 0),
        col("Condition", "", "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".", 0),
    ]
}

/// The cells of one CSR's row (`age` already formatted).
pub fn cells(csr: &Value, age: String) -> Vec<Value> {
    let mut status = if conditions(csr).iter().any(|c| c["type"] == "Denied") {
        "Denied".to_string()
    } else if conditions(csr).iter().any(|c| c["type"] == "Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if conditions(csr).iter().any(|c| c["type"] == "Failed") {
        status.push_str(",Failed");
    }
    if csr["status"]["certificate"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
    {
        status.push_str(",Issued");
    }
    let requested = match csr["spec"]["expirationSeconds"].as_i64() {
        Some(s) => human_duration(s),
        None => "<none>".to_string(),
    };
    vec![
        json!(csr["metadata"]["name"].as_str().unwrap_or("")),
        json!(age),
        json!(csr["spec"]["signerName"].as_str().unwrap_or("")),
        json!(csr["spec"]["username"].as_str().unwrap_or("")),
        json!(requested),
        json!(status),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_client_requests_as_upstream_validates_them() {
        let ok = Request {
            cn: "system:node:n1".into(),
            orgs: vec!["system:nodes".into()],
            has_sans: false,
            dns_or_ip: 0,
            email: 0,
            uri: 0,
        };
        let u = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(validate_kubelet_client(&ok, &u(&["digital signature", "client auth"])).is_ok());
        assert!(validate_kubelet_client(
            &ok,
            &u(&["key encipherment", "digital signature", "client auth"])
        )
        .is_ok());
        assert!(validate_kubelet_client(&ok, &u(&["client auth"])).is_err());
        let bad = Request {
            cn: "someone".into(),
            ..ok
        };
        assert!(validate_kubelet_client(&bad, &u(&["digital signature", "client auth"])).is_err());
    }

    #[test]
    fn kubelet_serving_requests_as_upstream_validates_them() {
        let ok = Request {
            cn: "system:node:n1".into(),
            orgs: vec!["system:nodes".into()],
            has_sans: true,
            dns_or_ip: 2,
            email: 0,
            uri: 0,
        };
        let u = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ecdsa = u(&["digital signature", "server auth"]);
        assert!(validate_kubelet_serving(&ok, &ecdsa).is_ok());
        let rsa = u(&["key encipherment", "digital signature", "server auth"]);
        assert!(validate_kubelet_serving(&ok, &rsa).is_ok());
        assert_eq!(
            validate_kubelet_serving(&ok, &u(&["digital signature", "client auth"])).unwrap_err(),
            "usages did not match [digital signature key encipherment server auth]"
        );
        let no_san = Request {
            dns_or_ip: 0,
            has_sans: false,
            ..ok
        };
        assert_eq!(
            validate_kubelet_serving(&no_san, &ecdsa).unwrap_err(),
            "DNS or IP subjectAltName is required"
        );
        let email = Request {
            email: 1,
            dns_or_ip: 1,
            ..no_san
        };
        assert_eq!(
            validate_kubelet_serving(&email, &ecdsa).unwrap_err(),
            "Email subjectAltNames are not allowed"
        );
        let other = Request {
            cn: "someone".into(),
            email: 0,
            ..email
        };
        assert_eq!(
            validate_kubelet_serving(&other, &ecdsa).unwrap_err(),
            "subject common name does not begin with system:node:"
        );
    }

    #[test]
    fn a_protobuf_approval_decodes() {
        // k8s\0 + Unknown{raw: CSR{metadata{name "c", resourceVersion "7"},
        //   status{conditions [{type Approved, status True, reason KubectlApprove,
        //   lastUpdateTime {seconds 1}}]}}}
        let meta = [&[0x0a, 1][..], b"c", &[0x32, 1], b"7"].concat();
        let time = [0x08, 0x01];
        let cond = [
            &[0x0a, 8][..],
            b"Approved",
            &[0x32, 4],
            b"True",
            &[0x12, 14],
            b"KubectlApprove",
            &[0x22, 2],
            &time,
        ]
        .concat();
        let status = [&[0x0a, cond.len() as u8][..], &cond].concat();
        let csr = [
            &[0x0a, meta.len() as u8][..],
            &meta,
            &[0x1a, status.len() as u8],
            &status,
        ]
        .concat();
        let body = [&b"k8s\0"[..], &[0x12, csr.len() as u8], &csr].concat();
        let stored = json!({"metadata": {"name": "c", "resourceVersion": "9"},
            "spec": {"signerName": KUBELET_SERVING_SIGNER}});
        let out: Value =
            serde_json::from_slice(&approval_from_protobuf(&stored, &body).unwrap()).unwrap();
        assert_eq!(out["metadata"]["resourceVersion"], "7");
        assert_eq!(out["spec"]["signerName"], KUBELET_SERVING_SIGNER);
        let c = &out["status"]["conditions"][0];
        assert_eq!(c["type"], "Approved");
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], "KubectlApprove");
        assert_eq!(c["lastUpdateTime"], "1970-01-01T00:00:01Z");
        assert!(approval_from_protobuf(&stored, b"not protobuf").is_err());
    }

    #[test]
    fn serving_csrs_are_never_auto_approved() {
        let csr = json!({"metadata": {"name": "c"}, "spec": {
            "signerName": KUBELET_SERVING_SIGNER, "username": "system:node:n1",
            "groups": ["system:nodes", "system:authenticated"], "request": "",
            "usages": ["digital signature", "server auth"]}});
        assert!(approval(&csr).is_none());
    }

    #[test]
    fn condition_column_as_upstream_prints_it() {
        let pending = json!({"metadata": {"name": "c"}, "spec": {}});
        assert_eq!(cells(&pending, "1s".into())[5], "Pending");
        let issued = json!({"metadata": {"name": "c"}, "spec": {"expirationSeconds": 600},
            "status": {"certificate": "eA==", "conditions": [{"type": "Approved", "status": "True"}]}});
        let c = cells(&issued, "1s".into());
        assert_eq!(c[5], "Approved,Issued");
        assert_eq!(c[4], "10m");
    }
}

//! Routing and the verbs: get, list, create, update, patch, delete on the resource paths
//! (`/api/v1/...`, `/apis/<group>/<version>/...`), with upstream's preconditions and errors.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::patch;
use super::resources::{self, Resource, RESOURCES};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{EventType, Key, Store};
use super::table::{self, IncludeObject};

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// The objects.
    pub store: Mutex<Store>,
    /// `host:port` as clients reach it (for `/api`'s serverAddressByClientCIDRs).
    pub address: String,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: std::time::Duration,
    /// Requests received, by upstream's `apiserver_request_total` labels (see
    /// [`request_label`]).
    pub requests: Mutex<BTreeMap<String, u64>>,
    /// Woken when a CSR is written (the CSR controllers' informer, [`super::csr`]).
    pub csr_written: tokio::sync::Notify,
}

impl Shared {
    /// The store, locked (a poisoned lock is taken over: the store has no invariant a panic in
    /// a handler can break halfway, every change is one `commit`).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The label a request is counted under, as upstream's `apiserver_request_total` metric
/// labels it: the verb (`GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `DELETE`), then the
/// resource and subresource (`PATCH pods/status`), or for a path that is not a resource's the
/// path itself (`GET /api/v1`).
pub fn request_label(method: &str, path: &str, segs: &[&str], watching: bool) -> String {
    let Some(t) = parse_target(segs) else {
        return format!("{method} {path}");
    };
    let verb = match method {
        "GET" if t.name.is_none() && watching => "WATCH",
        "GET" if t.name.is_none() => "LIST",
        m => m,
    };
    match &t.sub {
        Some(sub) => format!("{verb} {}/{sub}", t.resource().plural),
        None => format!("{verb} {}", t.resource().plural),
    }
}

/// A parsed resource path.
#[derive(Debug)]
pub struct Target {
    /// Index into `RESOURCES`.
    pub res: usize,
    /// Namespace from the path (`None`: cluster-scoped or all namespaces).
    pub ns: Option<String>,
    /// Object name (`None`: the collection).
    pub name: Option<String>,
    /// `Some("status")` for the status subresource.
    pub sub: Option<String>,
}

impl Target {
    /// The resource.
    pub fn resource(&self) -> &'static Resource {
        &RESOURCES[self.res]
    }

    fn key(&self) -> Key {
        (
            self.res,
            self.ns.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }
}

/// Parses `/api/v1/...` or `/apis/g/v/...` below the group version (`None`: not a resource
/// path this server knows).
pub fn parse_target(segs: &[&str]) -> Option<Target> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
    };
    let owned = |s: &&str| s.to_string();
    match rest {
        [] => None,
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            let res = find(plural)?;
            if !RESOURCES[res].namespaced || tail.len() > 2 {
                return None;
            }
            Some(Target {
                res,
                ns: Some(ns.to_string()),
                name: tail.first().map(owned),
                sub: tail.get(1).map(owned),
            })
        }
        [plural, tail @ ..] => {
            let res = find(plural)?;
            if tail.len() > 2 || (RESOURCES[res].namespaced && !tail.is_empty()) {
                return None;
            }
            Some(Target {
                res,
                ns: None,
                name: tail.first().map(owned),
                sub: tail.get(1).map(owned),
            })
        }
    }
}

/// The query string, decoded.
pub type Query = BTreeMap<String, String>;

/// Decodes `a=b&c=d` (percent-encoding and `+`).
pub fn parse_query(q: &str) -> Query {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A successful answer: HTTP code, body, `Warning` headers.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub code: u16,
    /// JSON body.
    pub body: Value,
    /// `Warning` header values (`299 - "..."`).
    pub warnings: Vec<String>,
}

impl Reply {
    fn ok(code: u16, body: Value) -> Reply {
        Reply {
            code,
            body,
            warnings: Vec::new(),
        }
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A random RFC 4122 version 4 UUID.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    // upstream's SimpleNameGenerator: 5 characters from "bcdfghjklmnpqrstvwxz2456789"
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    new_uid()
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .take(5)
        .map(|x| ALPHABET[(x as usize) % ALPHABET.len()] as char)
        .collect()
}

/// The table/list form a GET asks for.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    /// `as=Table` in Accept.
    pub table: bool,
    /// `includeObject`.
    pub include: IncludeObject,
}

impl Want {
    /// From the Accept header and the query.
    pub fn from(accept: &str, q: &Query) -> Want {
        let include = match q.get("includeObject").map(String::as_str) {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        };
        Want {
            table: accept
                .split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table")),
            include,
        }
    }
}

/// `GET` of one object.
pub fn get(shared: &Shared, t: &Target, want: Want) -> Result<Reply, ApiError> {
    let res = t.resource();
    let name = t.name.as_deref().unwrap_or_default();
    check_sub(t)?;
    let store = shared.lock();
    let obj = store
        .get(&t.key())
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, name))?;
    if want.table {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        return Ok(Reply::ok(200, table::table(res, &[obj], &rv, want.include)));
    }
    Ok(Reply::ok(200, obj))
}

fn check_sub(t: &Target) -> Result<(), ApiError> {
    match t.sub.as_deref() {
        None => Ok(()),
        Some("status") if t.resource().status => Ok(()),
        Some("approval") if t.resource().kind == "CertificateSigningRequest" => Ok(()),
        Some("ephemeralcontainers") if t.resource().kind == "Pod" => Ok(()),
        Some(_) => Err(ApiError::no_route()),
    }
}

/// The selectors of a list or watch, checked against the resource up front (an unsupported
/// field label is a 400 even when nothing would match).
#[derive(Debug, Clone)]
pub struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    /// From `labelSelector` and `fieldSelector`.
    pub fn from(res: &Resource, q: &Query) -> Result<Selectors, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?;
        fields
            .matches(|l| resources::field_value(res, &Value::Null, l))
            .map_err(ApiError::bad_request)?;
        Ok(Selectors { labels, fields })
    }

    /// Whether `obj` matches both.
    pub fn matches(&self, res: &Resource, obj: &Value) -> bool {
        self.labels.matches_object(obj)
            && self
                .fields
                .matches(|l| resources::field_value(res, obj, l))
                .unwrap_or(false)
    }
}

/// `GET` of a collection (not a watch).
pub fn list(shared: &Shared, t: &Target, q: &Query, want: Want) -> Result<Reply, ApiError> {
    let res = t.resource();
    let sel = Selectors::from(res, q)?;
    let (items, rv) = {
        let store = shared.lock();
        (store.list(t.res, t.ns.as_deref()), store.rv())
    };
    let items: Vec<Value> = items.into_iter().filter(|o| sel.matches(res, o)).collect();
    if want.table {
        return Ok(Reply::ok(
            200,
            table::table(res, &items, &rv.to_string(), want.include),
        ));
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    Ok(Reply::ok(
        200,
        json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version(),
            "metadata": { "resourceVersion": rv.to_string() },
            "items": items,
        }),
    ))
}

/// Parses a request body as the resource's JSON object and checks apiVersion/kind.
fn parse_body(res: &Resource, body: &[u8]) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    let Some(m) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: the body is not a JSON object",
        ));
    };
    let want_av = res.api_version();
    match m.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av != want_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
        _ => {}
    }
    match m.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("kind".into(), json!(res.kind));
        }
        Some(k) if k != res.kind => {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: no kind \"{k}\" is registered for version \"{want_av}\"",
                res.kind, res.version, res.kind
            )))
        }
        _ => {}
    }
    if !m.get("metadata").is_some_and(Value::is_object) {
        m.insert("metadata".into(), json!({}));
    }
    Ok(obj)
}

/// Decodes as the typed object and applies `fieldValidation` to the unknown fields.
fn decode(res: &Resource, obj: &Value, q: &Query) -> Result<(Value, Vec<String>), ApiError> {
    let (stored, unknown) = res.decode(obj).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            res.kind, res.version, res.kind
        ))
    })?;
    let msgs: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match q.get("fieldValidation").map(String::as_str) {
        Some("Strict") if !msgs.is_empty() => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            res.kind,
            res.version,
            res.kind,
            msgs.join(", ")
        ))),
        Some("Ignore") => Ok((stored, Vec::new())),
        _ => Ok((
            stored,
            msgs.iter().map(|m| format!("299 - {m:?}")).collect(),
        )),
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or("")
}

/// `POST` to a collection.
pub fn create(shared: &Shared, t: &Target, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    let res = t.resource();
    if t.name.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    if res.namespaced && t.ns.is_none() {
        return Err(ApiError::no_route());
    }
    let mut obj = parse_body(res, body)?;
    let ns = t.ns.clone().unwrap_or_default();
    if res.namespaced {
        match meta_str(&obj, "namespace") {
            "" => obj["metadata"]["namespace"] = json!(ns),
            n if n != ns => return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => {}
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if meta_str(&obj, "name").is_empty() {
        let prefix = meta_str(&obj, "generateName").to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                res,
                "",
                &[(
                    "metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
        obj["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    let (mut obj, warnings) = decode(res, &obj, q)?;
    let name = meta_str(&obj, "name").to_string();
    if let Some(why) = resources::name_error(res, &name) {
        return Err(ApiError::invalid(
            res,
            &name,
            &[(
                "metadata.name",
                "FieldValueInvalid",
                format!("Invalid value: \"{name}\": {why}"),
            )],
        ));
    }
    if res.kind == "Pod"
        && obj["spec"]["ephemeralContainers"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    {
        // upstream's ValidatePodCreate: only the ephemeralcontainers subresource adds them
        return Err(ApiError::invalid(
            res,
            &name,
            &[(
                "spec.ephemeralContainers",
                "FieldValueForbidden",
                "Forbidden: cannot be set on create".into(),
            )],
        ));
    }
    let mut store = shared.lock();
    if res.namespaced {
        let ns_res = RESOURCES
            .iter()
            .position(|r| r.kind == "Namespace")
            .unwrap_or(0);
        if store.get(&(ns_res, String::new(), ns.clone())).is_none() {
            return Err(ApiError::not_found(&RESOURCES[ns_res], &ns));
        }
    }
    let key = (t.res, ns, name.clone());
    if store.get(&key).is_some() {
        return Err(ApiError::already_exists(res, &name));
    }
    let rv = store.next_rv();
    let meta = obj["metadata"].as_object_mut().expect("metadata object");
    for f in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
        "selfLink",
        "managedFields",
    ] {
        meta.remove(f);
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    if !obj["spec"].is_null() || res.kind == "Pod" {
        obj["metadata"]["generation"] = json!(1);
    }
    resources::prepare_for_create(res, &mut obj);
    // the stored form is the typed object's encoding, defaults included
    let (obj, _) = decode(res, &obj, &Query::new())?;
    if !q.contains_key("dryRun") {
        store.commit(key, EventType::Added, obj.clone());
        if res.kind == "Namespace" {
            drop(store);
            super::serviceaccounts::namespace_created(shared, &name);
        }
    }
    Ok(Reply {
        code: 201,
        body: obj,
        warnings,
    })
}

/// `POST pods/<name>/binding`: binds a pod to a node as the pod registry's `assignPod` does.
pub fn bind(shared: &Shared, t: &Target, body: &[u8]) -> Result<Reply, ApiError> {
    let res = t.resource();
    let name = t.name.clone().ok_or_else(ApiError::method_not_allowed)?;
    if res.kind != "Pod" {
        return Err(ApiError::no_route());
    }
    let binding: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    serde_json::from_value::<k8s_openapi::api::core::v1::Binding>(binding.clone()).map_err(
        |e| {
            ApiError::bad_request(format!(
                "Binding in version \"v1\" cannot be handled as a Binding: {e}"
            ))
        },
    )?;
    let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
    let mut store = shared.lock();
    let key = t.key();
    let current = store
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, &name))?;
    let conflict = |why: String| ApiError {
        code: 409,
        reason: "Conflict",
        message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": {why}"),
        details: Some(json!({"name": name, "kind": "pods/binding"})),
    };
    if !current["metadata"]["deletionTimestamp"].is_null() {
        return Err(conflict(format!(
            "pod {name} is being deleted, cannot be assigned to a host"
        )));
    }
    let bound = current["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    if bound {
        return Err(conflict(format!(
            "pod {name} is already assigned to node {:?}",
            current["spec"]["nodeName"].as_str().unwrap_or("")
        )));
    }
    let mut pod = current;
    pod["spec"]["nodeName"] = json!(node);
    if let Some(ann) = binding["metadata"]["annotations"].as_object() {
        for (k, v) in ann {
            pod["metadata"]["annotations"][k] = v.clone();
        }
    }
    let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
        "lastTransitionTime": now()});
    let conds = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut conds: Vec<Value> = conds
        .into_iter()
        .filter(|c| c["type"] != "PodScheduled")
        .collect();
    conds.push(scheduled);
    pod["status"]["conditions"] = json!(conds);
    let rv = store.next_rv();
    pod["metadata"]["resourceVersion"] = json!(rv.to_string());
    store.commit(key, EventType::Modified, pod);
    Ok(Reply::ok(
        201,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// `PUT` of an object or its status.
pub fn update(shared: &Shared, t: &Target, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    let res = t.resource();
    check_sub(t)?;
    let name = t.name.clone().ok_or_else(ApiError::method_not_allowed)?;
    let mut obj = parse_body(res, body)?;
    check_name_ns(res, t, &mut obj, &name)?;
    let (obj, warnings) = decode(res, &obj, q)?;
    let mut store = shared.lock();
    let existing = store.get(&t.key()).cloned();
    let Some(existing) = existing else {
        drop(store);
        if res.create_on_update && t.sub.is_none() {
            let mut created = create(
                shared,
                &Target {
                    res: t.res,
                    ns: t.ns.clone(),
                    name: None,
                    sub: None,
                },
                q,
                body,
            )?;
            created.warnings.extend(warnings);
            return Ok(created);
        }
        return Err(ApiError::not_found(res, &name));
    };
    let uid = meta_str(&obj, "uid");
    if !uid.is_empty() && uid != meta_str(&existing, "uid") {
        return Err(ApiError::conflict(
            res,
            &name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&existing, "uid")
            ),
        ));
    }
    let mut reply = commit_update(&mut store, t, existing, obj, q)?;
    reply.warnings.extend(warnings);
    Ok(reply)
}

fn check_name_ns(res: &Resource, t: &Target, obj: &mut Value, name: &str) -> Result<(), ApiError> {
    match meta_str(obj, "name") {
        "" => obj["metadata"]["name"] = json!(name),
        n if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        _ => {}
    }
    if res.namespaced {
        let ns = t.ns.clone().unwrap_or_default();
        match meta_str(obj, "namespace") {
            "" => obj["metadata"]["namespace"] = json!(ns),
            n if n != ns => return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => {}
        }
    }
    Ok(())
}

/// The end of PUT and PATCH: the `resourceVersion` precondition, what the subresource may
/// change, immutable metadata, no-op detection, the commit.
/// The caller holds the store's lock from reading `current` to here, so no other write comes
/// between (etcd's GuaranteedUpdate retries instead; the outcome is the same).
fn commit_update(
    store: &mut Store,
    t: &Target,
    current: Value,
    mut new: Value,
    q: &Query,
) -> Result<Reply, ApiError> {
    let res = t.resource();
    let name = t.name.clone().unwrap_or_default();
    let asked_rv = meta_str(&new, "resourceVersion").to_string();
    if !asked_rv.is_empty() && asked_rv != meta_str(&current, "resourceVersion") {
        return Err(ApiError::stale(res, &name));
    }
    if t.sub.as_deref() == Some("status") {
        let mut only_status = current.clone();
        only_status["status"] = new["status"].clone();
        new = only_status;
    } else if t.sub.as_deref() == Some("ephemeralcontainers") {
        new = super::ephemeral::update(res, &name, &current, &new)?;
    } else if t.sub.as_deref() == Some("approval") {
        // a CSR's approval subresource changes only the conditions
        let mut only_conditions = current.clone();
        only_conditions["status"]["conditions"] = new["status"]["conditions"].clone();
        new = only_conditions;
    } else if res.status {
        new["status"] = current["status"].clone();
    }
    // metadata the client cannot change
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match current["metadata"].get(f) {
            Some(v) => new["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    if res.kind == "Pod" && t.sub.is_none() {
        // Mutating admission before validation, as upstream.
        resources::default_toleration_seconds(&mut new);
        check_pod_spec_update(res, &name, &current["spec"], &new["spec"])?;
    }
    if new.get("spec") != current.get("spec") && current["metadata"].get("generation").is_some() {
        let g = current["metadata"]["generation"].as_i64().unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
    if res.status && new["status"].is_null() {
        if let Some(m) = new.as_object_mut() {
            m.remove("status");
        }
    }
    new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    if new == current {
        // upstream writes nothing (and keeps the version) when nothing changed
        return Ok(Reply::ok(200, current));
    }
    let rv = store.next_rv();
    new["metadata"]["resourceVersion"] = json!(rv.to_string());
    if q.contains_key("dryRun") {
        return Ok(Reply::ok(200, new));
    }
    let finalized = !new["metadata"]["deletionTimestamp"].is_null()
        && new["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty)
        && new["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0)
            == 0;
    let kind = if finalized {
        EventType::Deleted
    } else {
        EventType::Modified
    };
    store.commit(t.key(), kind, new.clone());
    Ok(Reply::ok(200, new))
}

/// Upstream's `ValidatePodUpdate`: a pod's spec is immutable but for the container images,
/// `activeDeadlineSeconds`, added tolerations and `terminationGracePeriodSeconds` from a
/// negative value to 1; anything else is a 422 with upstream's message (without the spec diff
/// upstream appends to it).
fn check_pod_spec_update(
    res: &Resource,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let mut mutable = new.clone();
    for list in ["containers", "initContainers"] {
        if let (Some(m), Some(o)) = (
            mutable.get_mut(list).and_then(Value::as_array_mut),
            old[list].as_array(),
        ) {
            if m.len() == o.len() {
                for (mc, oc) in m.iter_mut().zip(o) {
                    mc["image"] = oc["image"].clone();
                }
            }
        }
    }
    copy_field(&mut mutable, old, "activeDeadlineSeconds");
    let old_tol = old["tolerations"].as_array().cloned().unwrap_or_default();
    let new_tol = new["tolerations"].as_array().cloned().unwrap_or_default();
    if new_tol.len() >= old_tol.len() && new_tol[..old_tol.len()] == old_tol[..] {
        copy_field(&mut mutable, old, "tolerations");
    }
    if old["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|g| g < 0)
        && new["terminationGracePeriodSeconds"].as_i64() == Some(1)
    {
        copy_field(&mut mutable, old, "terminationGracePeriodSeconds");
    }
    if mutable == *old {
        return Ok(());
    }
    Err(ApiError::invalid(
        res,
        name,
        &[(
            "spec",
            "FieldValueForbidden",
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
        )],
    ))
}

fn copy_field(into: &mut Value, from: &Value, field: &str) {
    match (into.as_object_mut(), from.get(field)) {
        (Some(m), Some(v)) => {
            m.insert(field.to_string(), v.clone());
        }
        (Some(m), None) => {
            m.remove(field);
        }
        _ => {}
    }
}

/// `PATCH` of an object or its status.
pub fn patch(
    shared: &Shared,
    t: &Target,
    q: &Query,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let res = t.resource();
    check_sub(t)?;
    let name = t.name.clone().ok_or_else(ApiError::method_not_allowed)?;
    let mut store = shared.lock();
    let existing = store
        .get(&t.key())
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, &name))?;
    let patch_doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let mut patched = existing.clone();
    match ct {
        "application/merge-patch+json" => patch::merge_patch(&mut patched, &patch_doc),
        "application/json-patch+json" => {
            patch::json_patch(&mut patched, &patch_doc).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: e,
                details: None,
            })?
        }
        "application/strategic-merge-patch+json" => {
            patched = patch::strategic_merge(res.kind, &existing, &patch_doc)
                .map_err(ApiError::bad_request)?;
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    let mut obj = patched;
    check_name_ns(res, t, &mut obj, &name)?;
    if meta_str(&obj, "uid") != meta_str(&existing, "uid") {
        let uid = meta_str(&obj, "uid").to_string();
        return Err(ApiError::invalid(
            res,
            &name,
            &[(
                "metadata.uid",
                "FieldValueInvalid",
                format!("Invalid value: \"{uid}\": field is immutable"),
            )],
        ));
    }
    let (obj, warnings) = decode(res, &obj, q)?;
    let mut reply = commit_update(&mut store, t, existing, obj, q)?;
    reply.warnings.extend(warnings);
    Ok(reply)
}

/// `DELETE` of an object: preconditions, graceful deletion for pods, finalizers.
pub fn delete(shared: &Shared, t: &Target, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    let res = t.resource();
    if t.sub.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let name = t.name.clone().ok_or_else(ApiError::method_not_allowed)?;
    let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let grace_opt: Option<i64> = opts["gracePeriodSeconds"].as_i64().or_else(|| {
        q.get("gracePeriodSeconds")
            .and_then(|g| g.parse::<i64>().ok())
    });
    let mut store = shared.lock();
    let current = store
        .get(&t.key())
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, &name))?;
    let pre = &opts["preconditions"];
    if let Some(uid) = pre["uid"].as_str() {
        if uid != meta_str(&current, "uid") {
            return Err(ApiError::conflict(
                res,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&current, "uid")
                ),
            ));
        }
    }
    if let Some(rv) = pre["resourceVersion"].as_str() {
        if rv != meta_str(&current, "resourceVersion") {
            return Err(ApiError::conflict(
                res,
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&current, "resourceVersion")
                ),
            ));
        }
    }
    let dry = q.contains_key("dryRun");
    // pods: the strategy's CheckGracefulDelete
    let grace = if res.kind == "Pod" {
        let phase = current["status"]["phase"].as_str().unwrap_or("");
        let unscheduled = current["spec"]["nodeName"]
            .as_str()
            .unwrap_or("")
            .is_empty();
        let mut g = grace_opt.unwrap_or_else(|| {
            current["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30)
        });
        // not scheduled, or already terminated: nothing to wait for, whatever was asked
        if unscheduled || phase == "Succeeded" || phase == "Failed" {
            g = 0;
        }
        if g < 0 {
            g = 1;
        }
        g
    } else {
        0
    };
    let has_finalizers = current["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    let rv = store.next_rv();
    if grace > 0 || has_finalizers {
        let mut obj = current.clone();
        let existing_grace = current["metadata"]["deletionGracePeriodSeconds"].as_i64();
        if current["metadata"]["deletionTimestamp"].is_null()
            || existing_grace.is_some_and(|g| grace < g)
        {
            let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
            obj["metadata"]["deletionTimestamp"] =
                json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            if current["metadata"]["deletionTimestamp"].is_null() {
                let g = current["metadata"]["generation"].as_i64().unwrap_or(0);
                obj["metadata"]["generation"] = json!(g + 1);
            }
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            if !dry {
                store.commit(t.key(), EventType::Modified, obj.clone());
            }
        }
        return Ok(Reply::ok(200, obj));
    }
    let mut obj = current;
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    if !dry {
        store.commit(t.key(), EventType::Deleted, obj.clone());
    }
    if res.kind == "Pod" {
        // the pod registry returns the deleted object
        return Ok(Reply::ok(200, obj));
    }
    let mut details = json!({"name": name, "kind": res.plural, "uid": meta_str(&obj, "uid")});
    if !res.group.is_empty() {
        details["group"] = json!(res.group);
    }
    Ok(Reply::ok(
        200,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
    ))
}

/// Creates the namespaces every cluster has (`default`, `kube-system`, `kube-public`,
/// `kube-node-lease`).
pub fn bootstrap(shared: &Arc<Shared>) {
    let t = Target {
        res: RESOURCES
            .iter()
            .position(|r| r.kind == "Namespace")
            .unwrap_or(0),
        ns: None,
        name: None,
        sub: None,
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let _ = create(shared, &t, &Query::new(), body.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_resources() {
        let t =
            parse_target(&["api", "v1", "namespaces", "default", "pods", "p", "status"]).unwrap();
        assert_eq!(t.resource().plural, "pods");
        assert_eq!(t.ns.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("p"));
        assert_eq!(t.sub.as_deref(), Some("status"));
        let t = parse_target(&["api", "v1", "namespaces", "kube-system"]).unwrap();
        assert_eq!(t.resource().plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        let t = parse_target(&["api", "v1", "namespaces", "x", "status"]).unwrap();
        assert_eq!(t.sub.as_deref(), Some("status"));
        let t = parse_target(&[
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            "kube-node-lease",
            "leases",
        ])
        .unwrap();
        assert_eq!(t.resource().kind, "Lease");
        assert!(t.name.is_none());
        assert!(parse_target(&["api", "v1", "pods", "p"]).is_none());
        assert!(parse_target(&["api", "v1", "widgets"]).is_none());
        let t = parse_target(&["api", "v1", "pods"]).unwrap();
        assert!(t.ns.is_none());
    }

    #[test]
    fn query_is_percent_decoded() {
        let q = parse_query(
            "fieldSelector=spec.nodeName%3Dn1%2Cstatus.phase%21%3DFailed&watch=1&x=a+b",
        );
        assert_eq!(q["fieldSelector"], "spec.nodeName=n1,status.phase!=Failed");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "a b");
    }
}

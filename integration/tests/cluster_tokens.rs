//! Service-account tokens end to end against the stand-in API server (issue 17 item 3): the
//! kubelet's token manager (`objects::tokens::TokenManager`, cluster mode's `TokenSource`)
//! asks the stand-in's TokenRequest for a token bound to a pod; its claims (checked against the
//! stand-in's signature) carry the pod, the service account, the namespace, the audience and
//! the expiry; a second ask is served from the cache; TokenRequest's validation (short
//! expiry, a pod whose UID changed, a missing service account, a pod running as another
//! service account) answers as upstream. The real `kubectl` lists the ServiceAccounts and
//! `kubectl create token default` gets a token. Unprivileged; the kubectl part is skipped
//! without kubectl.

use anyhow::{ensure, Context};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kubenode_integration::apiserver::serviceaccounts::{verify, API_AUDIENCE, ISSUER};
use kubenode_integration::apiserver::ApiServer;
use kubenode_integration::kubectl::{self, KUBECTL};
use kubenode_integration::{run_tests, unique_tag, TestDir, Trial};
use kubenode_kubelet::objects::tokens::TokenManager;
use kubenode_kubelet::objects::TokenSource as _;
use serde_json::{json, Value};

fn main() {
    let missing = !kubectl::present();
    if missing {
        eprintln!("note: `kubectl` is not installed: the kubectl token test is skipped");
    }
    run_tests(vec![
        Trial::test(
            "a_pod_bound_token_through_the_kubelet_token_manager",
            || token_manager_against_the_standin().map_err(|e| format!("{e:#}").into()),
        ),
        Trial::test("kubectl_lists_service_accounts_and_creates_a_token", || {
            kubectl_create_token().map_err(|e| format!("{e:#}").into())
        })
        .with_ignored_flag(missing),
    ])
}

fn pod(name: &str, sa: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"serviceAccountName": sa, "nodeName": "n1",
                 "containers": [{"name": "c", "image": "busybox"}]},
    }))?)
}

fn token_manager_against_the_standin() -> anyhow::Result<()> {
    let server = ApiServer::start("127.0.0.1:0".parse()?)?;
    let dir = TestDir::new(&unique_tag("ctk"))?;
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let client = kubenode_kubelet::cluster::connect(&kubeconfig).await?;
        // A new namespace gets its `default` ServiceAccount (the serviceaccount controller).
        let nss: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "apps"}}))?;
        nss.create(&PostParams::default(), &ns).await?;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "apps");
        let default_sa = sas.get("default").await.context("the default ServiceAccount")?;
        let builder: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "builder"}}))?;
        let builder = sas.create(&PostParams::default(), &builder).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
        let web = pods.create(&PostParams::default(), &pod("web", "builder")?).await?;

        let manager = TokenManager::new(client.clone());
        let t = manager.token(&web, Some("vault"), 3600).await?;
        let claims = verify(&t.token).context("the token is the stand-in's, signed")?;
        let now = jiff::Timestamp::now().as_second();
        ensure!(claims["iss"] == ISSUER, "{claims}");
        ensure!(claims["aud"] == json!(["vault"]), "{claims}");
        ensure!(claims["sub"] == "system:serviceaccount:apps:builder", "{claims}");
        let k8s = &claims["kubernetes.io"];
        ensure!(k8s["namespace"] == "apps", "{claims}");
        ensure!(k8s["pod"]["name"] == "web", "{claims}");
        ensure!(k8s["pod"]["uid"] == json!(web.metadata.uid), "{claims}");
        ensure!(k8s["serviceaccount"]["name"] == "builder", "{claims}");
        ensure!(
            k8s["serviceaccount"]["uid"] == json!(builder.metadata.uid),
            "{claims}"
        );
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap_or(0),
            claims["exp"].as_i64().unwrap_or(0),
        );
        ensure!(exp - iat == 3600, "{claims}");
        ensure!((iat - now).abs() < 300, "iat {iat} is not now ({now})");
        ensure!(claims["nbf"] == claims["iat"], "{claims}");
        ensure!(t.expiration.as_second() == exp, "status.expirationTimestamp is exp");

        // Cached: the same token, no second request.
        let before = server.requests().get("POST serviceaccounts/token").copied();
        let again = manager.token(&web, Some("vault"), 3600).await?;
        ensure!(again.token == t.token, "the cached token is served");
        ensure!(server.requests().get("POST serviceaccounts/token").copied() == before);

        // The API server's audience when none is asked; a pod of the `default` account, whose
        // 3607 s token (what ServiceAccount admission asks for) is extended with `warnafter`.
        let plain = pods.create(&PostParams::default(), &pod("plain", "default")?).await?;
        let t = manager.token(&plain, None, 3607).await?;
        let claims = verify(&t.token).context("signed")?;
        ensure!(claims["aud"] == json!([API_AUDIENCE]), "{claims}");
        ensure!(claims["sub"] == "system:serviceaccount:apps:default", "{claims}");
        ensure!(
            claims["kubernetes.io"]["serviceaccount"]["uid"] == json!(default_sa.metadata.uid),
            "{claims}"
        );
        let iat = claims["iat"].as_i64().unwrap_or(0);
        ensure!(claims["kubernetes.io"]["warnafter"] == json!(iat + 3607), "{claims}");
        ensure!(t.expiration.as_second() == iat + 3607, "the status keeps the asked TTL");

        // TokenRequest's checks, as upstream's.
        let request = |exp: i64, pod: &str, uid: Option<String>| TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(exp),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.into()),
                    uid,
                }),
            },
            ..Default::default()
        };
        let pp = PostParams::default();
        let err = sas
            .create_token_request("builder", &pp, &request(599, "web", None))
            .await
            .expect_err("599 s is too short");
        ensure!(
            err.to_string().contains(
                "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
            ),
            "{err}"
        );
        let err = sas
            .create_token_request("builder", &pp, &request(600, "web", Some("other".into())))
            .await
            .expect_err("a stale pod UID");
        ensure!(
            err.to_string().contains("the UID in the bound object reference (other) does not match the UID in record"),
            "{err}"
        );
        let err = sas
            .create_token_request("builder", &pp, &request(600, "gone", None))
            .await
            .expect_err("a missing pod");
        ensure!(err.to_string().contains("pods \"gone\" not found"), "{err}");
        let err = sas
            .create_token_request("default", &pp, &request(600, "web", None))
            .await
            .expect_err("web runs as builder");
        ensure!(
            err.to_string().contains("cannot bind token for serviceaccount \"default\" to pod running with different serviceaccount name."),
            "{err}"
        );
        let err = sas
            .create_token_request("nobody", &pp, &request(600, "web", None))
            .await
            .expect_err("no such service account");
        ensure!(
            err.to_string().contains("serviceaccounts \"nobody\" not found"),
            "{err}"
        );
        // The manager reports a failed first fetch as unavailable (the volume retries).
        let stranger = pod("stranger", "nobody")?;
        let err = manager
            .token(&stranger, None, 3600)
            .await
            .expect_err("no such service account");
        ensure!(err.to_string().starts_with("failed to fetch token: "), "{err}");
        manager.forget_pod(web.metadata.uid.as_deref().unwrap_or_default());
        ensure!(manager.cached() == 1, "only the plain pod's token is left");
        anyhow::Ok(())
    })
}

fn kubectl_create_token() -> anyhow::Result<()> {
    let server = ApiServer::start("127.0.0.1:0".parse()?)?;
    let dir = TestDir::new(&unique_tag("ctk"))?;
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let kubectl = |args: &[&str]| -> anyhow::Result<Result<String, String>> {
        let mut cmd = std::process::Command::new(KUBECTL);
        cmd.args(kubectl::common_args(&kubeconfig, dir.path()))
            .args(args);
        kubectl::outcome(&mut cmd, dir.path())
    };
    let listed = kubectl(&["get", "serviceaccounts", "-A"])?.map_err(anyhow::Error::msg)?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure!(
            listed
                .lines()
                .any(|l| l.split_whitespace().take(3).eq([ns, "default", "0"])),
            "no default ServiceAccount in {ns}:\n{listed}"
        );
    }
    ensure!(listed.starts_with("NAMESPACE"), "{listed}");
    let token =
        kubectl(&["create", "token", "default", "--duration=1h"])?.map_err(anyhow::Error::msg)?;
    let claims: Value = verify(token.trim()).context("kubectl printed a signed token")?;
    ensure!(
        claims["sub"] == "system:serviceaccount:default:default",
        "{claims}"
    );
    ensure!(
        claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0) == 3600,
        "{claims}"
    );
    ensure!(claims["kubernetes.io"].get("pod").is_none(), "not bound");
    let err = kubectl(&["create", "token", "default", "--duration=5m"])?
        .err()
        .context("5 minutes is refused")?;
    ensure!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    Ok(())
}

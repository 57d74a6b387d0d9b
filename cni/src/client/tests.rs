//! Client tests: a recording `PluginExec` for chain logic, and shell-script plugins for the
//! process runner (environment, stdin, error replies, timeout).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::spec::PluginErrorReply;

type Call = (String, String, Value, PluginRequest);

#[derive(Debug, Default)]
struct Recording {
    calls: Mutex<Vec<Call>>,
    fail: Mutex<Vec<(String, String)>>,
}

impl PluginExec for Recording {
    fn exec<'a>(&'a self, plugin: &'a Path, req: &'a PluginRequest) -> ExecFuture<'a> {
        Box::pin(async move {
            let name = plugin.file_name().unwrap().to_string_lossy().to_string();
            let stdin: Value = serde_json::from_slice(&req.stdin).unwrap_or(Value::Null);
            self.calls.lock().unwrap().push((
                name.clone(),
                req.command.clone(),
                stdin.clone(),
                req.clone(),
            ));
            if self
                .fail
                .lock()
                .unwrap()
                .contains(&(name.clone(), req.command.clone()))
            {
                return Err(ExecError::Plugin {
                    plugin: plugin.into(),
                    command: req.command.clone(),
                    reply: PluginErrorReply {
                        cni_version: "1.0.0".into(),
                        code: 7,
                        msg: "bad".into(),
                        details: "very bad".into(),
                    },
                });
            }
            if (name.as_str(), req.command.as_str()) == ("garbage", "ADD") {
                return Ok(b"not json".to_vec());
            }
            let out = match (name.as_str(), req.command.as_str()) {
                (_, "VERSION") => {
                    json!({"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]})
                }
                ("main", "ADD") => {
                    json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":req.netns}],
                                          "ips":[{"address":"10.0.0.5/24","gateway":"10.0.0.1","interface":0}]})
                }
                (_, "ADD") => stdin["prevResult"].clone(),
                _ => Value::Null,
            };
            Ok(serde_json::to_vec(&out).unwrap())
        })
    }
}

fn setup(conflist: &str) -> (tempfile::TempDir, CniConfig) {
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("net.d");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(conf_dir.join("10-test.conflist"), conflist).unwrap();
    for p in ["main", "chained", "portmap", "garbage"] {
        write_exe(&bin.join(p), "#!/bin/sh\nexit 0\n");
    }
    let cfg = CniConfig {
        conf_dir,
        bin_dirs: vec![dir.path().join("nonexistent"), bin],
        cache_dir: dir.path().join("cache"),
        timeout: Duration::from_secs(5),
        plugin_netns: None,
    };
    (dir, cfg)
}

fn write_exe(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const LIST: &str = r#"{"cniVersion":"1.1.0","name":"kn","plugins":[{"type":"main"},{"type":"chained","capabilities":{"portMappings":true}}]}"#;

fn att(id: &str) -> Attachment {
    Attachment {
        container_id: id.into(),
        netns_path: PathBuf::from("/run/netns/none"),
        ifname: "eth0".into(),
        pod_namespace: "default".into(),
        pod_name: "web".into(),
        pod_uid: "uid-1".into(),
        capability_args: serde_json::from_value(
            json!({"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}]}),
        )
        .unwrap(),
    }
}

#[tokio::test]
async fn add_threads_prev_result_and_del_runs_in_reverse_with_cache() {
    let (_dir, cfg) = setup(LIST);
    let rec = Arc::new(Recording::default());
    let client = CniClient::with_exec(cfg.clone(), rec.clone());
    let result = client.add(&att("c1")).await.unwrap();
    assert_eq!(
        result.pod_ips(),
        vec!["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(result.gateway(), Some("10.0.0.1".parse().unwrap()));
    {
        let calls = rec.calls.lock().unwrap();
        assert_eq!(calls.len(), 2);
        let (p0, c0, s0, r0) = &calls[0];
        assert_eq!((p0.as_str(), c0.as_str()), ("main", "ADD"));
        assert!(s0.get("prevResult").is_none() && s0.get("runtimeConfig").is_none());
        assert_eq!(s0["name"], "kn");
        assert_eq!(r0.args, "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=uid-1");
        assert!(r0.path.ends_with("/bin"));
        let (_, _, s1, _) = &calls[1];
        assert_eq!(s1["prevResult"]["ips"][0]["address"], "10.0.0.5/24");
        assert_eq!(s1["runtimeConfig"]["portMappings"][0]["hostPort"], 80);
    }
    let cached: Value =
        serde_json::from_slice(&std::fs::read(cfg.cache_dir.join("results/kn-c1-eth0")).unwrap())
            .unwrap();
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["result"]["ips"][0]["address"], "10.0.0.5/24");

    client.check(&att("c1")).await.unwrap();
    rec.calls.lock().unwrap().clear();
    let mut bare = att("c1");
    bare.capability_args.clear();
    client.del(&bare).await.unwrap();
    {
        let calls = rec.calls.lock().unwrap();
        let order: Vec<_> = calls.iter().map(|c| (c.0.as_str(), c.1.as_str())).collect();
        assert_eq!(order, vec![("chained", "DEL"), ("main", "DEL")]);
        assert_eq!(calls[0].2["prevResult"]["ips"][0]["address"], "10.0.0.5/24");
        assert_eq!(
            calls[0].2["runtimeConfig"]["portMappings"][0]["hostPort"], 80,
            "capability args come from the cache"
        );
        assert_eq!(
            calls[0].3.netns, "",
            "a netns that is gone is passed as empty"
        );
    }
    assert!(!cfg.cache_dir.join("results/kn-c1-eth0").exists());
    client.del(&att("c1")).await.unwrap();
    let e = client.check(&att("c1")).await.unwrap_err();
    assert!(matches!(e, ClientError::NotAttached { .. }), "{e}");
}

#[tokio::test]
async fn failed_add_surfaces_the_reply_and_tears_down() {
    let (_dir, cfg) = setup(LIST);
    let rec = Arc::new(Recording::default());
    rec.fail
        .lock()
        .unwrap()
        .push(("chained".into(), "ADD".into()));
    let client = CniClient::with_exec(cfg.clone(), rec.clone());
    let e = client.add(&att("c2")).await.unwrap_err();
    let reply = e.plugin_reply().unwrap();
    assert_eq!(
        (reply.code, reply.msg.as_str(), reply.details.as_str()),
        (7, "bad", "very bad")
    );
    assert!(e.to_string().contains("very bad"), "{e}");
    let order: Vec<_> = rec
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| format!("{}:{}", c.0, c.1))
        .collect();
    assert_eq!(
        order,
        ["main:ADD", "chained:ADD", "chained:DEL", "main:DEL"]
    );
    assert!(!cfg.cache_dir.join("results/kn-c2-eth0").exists());
}

#[tokio::test]
async fn add_caches_its_capability_args_before_the_chain_runs() {
    // ADD fails and so does the clean-up DEL (as after a crash in the middle of the chain, the
    // plugins' state is unknown): the entry written before the chain ran stays, and a later DEL
    // without capability args (an orphan's) still hands portmap its mappings.
    let (dir, cfg) = setup(LIST);
    let rec = Arc::new(Recording::default());
    rec.fail.lock().unwrap().extend([
        ("chained".to_string(), "ADD".to_string()),
        ("chained".to_string(), "DEL".to_string()),
    ]);
    let client = CniClient::with_exec(cfg.clone(), rec.clone());
    client.add(&att("c5")).await.unwrap_err();
    let path = dir.path().join("cache/results/kn-c5-eth0");
    let cached: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        cached["result"],
        Value::Null,
        "no result: ADD never finished"
    );
    assert_eq!(
        cached["capabilityArgs"]["portMappings"][0]["containerPort"],
        8080
    );
    let e = client.check(&att("c5")).await.unwrap_err();
    assert!(
        matches!(e, ClientError::NotAttached { .. }),
        "an unfinished ADD is not attached: {e}"
    );
    rec.fail.lock().unwrap().clear();
    rec.calls.lock().unwrap().clear();
    let mut bare = att("c5");
    bare.capability_args.clear();
    client.del(&bare).await.unwrap();
    {
        let calls = rec.calls.lock().unwrap();
        assert_eq!(
            (calls[0].0.as_str(), calls[0].1.as_str()),
            ("chained", "DEL")
        );
        assert_eq!(
            calls[0].2["runtimeConfig"]["portMappings"][0]["hostPort"], 80,
            "the mappings come from the entry written before the chain ran"
        );
        assert!(
            calls[0].2.get("prevResult").is_none(),
            "no prevResult for an ADD that never finished"
        );
    }
    assert!(!path.exists());
}

#[tokio::test]
async fn unreadable_add_output_is_an_error_and_tears_down() {
    let (_dir, cfg) = setup(
        r#"{"cniVersion":"1.0.0","name":"kn","plugins":[{"type":"main"},{"type":"garbage"}]}"#,
    );
    let rec = Arc::new(Recording::default());
    let client = CniClient::with_exec(cfg, rec.clone());
    let mut plain = att("c4");
    plain.capability_args.clear();
    let e = client.add(&plain).await.unwrap_err();
    assert!(
        matches!(e, ClientError::BadResult { .. }) && e.to_string().contains("not json"),
        "{e}"
    );
    let order: Vec<_> = rec
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| format!("{}:{}", c.0, c.1))
        .collect();
    assert_eq!(
        order,
        ["main:ADD", "garbage:ADD", "garbage:DEL", "main:DEL"]
    );
}

#[tokio::test]
async fn del_runs_every_plugin_and_collects_errors() {
    let (_dir, cfg) = setup(LIST);
    let rec = Arc::new(Recording::default());
    rec.fail
        .lock()
        .unwrap()
        .push(("chained".into(), "DEL".into()));
    let client = CniClient::with_exec(cfg, rec.clone());
    assert!(client.del(&att("c3")).await.is_err());
    assert_eq!(rec.calls.lock().unwrap().len(), 2, "main DEL still ran");
}

#[tokio::test]
async fn status_and_gc_use_version_and_valid_attachments() {
    let (_dir, cfg) = setup(LIST);
    let rec = Arc::new(Recording::default());
    let client = CniClient::with_exec(cfg, rec.clone());
    client.add(&att("keep")).await.unwrap();
    client.add(&att("stale")).await.unwrap();
    client.status().await.unwrap();
    rec.calls.lock().unwrap().clear();
    client.gc(&[att("keep")]).await.unwrap();
    let calls = rec.calls.lock().unwrap();
    let dels: Vec<_> = calls
        .iter()
        .filter(|c| c.1 == "DEL")
        .map(|c| c.3.container_id.clone())
        .collect();
    assert_eq!(dels, ["stale", "stale"]);
    let gc = calls.iter().find(|c| c.1 == "GC").unwrap();
    assert_eq!(
        gc.2["cni.dev/valid-attachments"],
        json!([{"containerID":"keep","ifname":"eth0"}])
    );
}

#[tokio::test]
async fn rejects_bad_attachments_and_missing_plugins() {
    let (dir, cfg) = setup(r#"{"cniVersion":"1.0.0","name":"kn","plugins":[{"type":"absent"}]}"#);
    let client = CniClient::with_exec(cfg, Arc::new(Recording::default()));
    let mut bad = att("-x");
    assert!(matches!(
        client.add(&bad).await,
        Err(ClientError::InvalidAttachment(_))
    ));
    bad = att("ok");
    bad.ifname = "a-very-long-interface".into();
    assert!(matches!(
        client.add(&bad).await,
        Err(ClientError::InvalidAttachment(_))
    ));
    // The attachment's portMappings: no plugin of this network takes them.
    let e = client.add(&att("ok")).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::CapabilityNotSupported { capability, .. } if capability == "portMappings"),
        "{e}"
    );
    assert!(e.to_string().contains("portmap plugin"), "{e}");
    assert!(
        !dir.path().join("cache/results/kn-ok-eth0").exists(),
        "nothing cached for a refused ADD"
    );
    let mut plain = att("ok");
    plain.capability_args.clear();
    let e = client.add(&plain).await.unwrap_err();
    assert!(matches!(e, ClientError::PluginNotFound { .. }), "{e}");
    std::fs::remove_dir_all(dir.path().join("net.d")).unwrap();
    assert!(matches!(
        client.add(&att("ok")).await,
        Err(ClientError::NoNetwork(_))
    ));
}

#[tokio::test]
async fn process_exec_passes_env_and_stdin_and_reads_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok");
    write_exe(&ok, "#!/bin/sh\nread -r line\necho \"{\\\"env\\\":\\\"$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $CNI_NETNS\\\",\\\"in\\\":$line}\"\n");
    let fail = dir.path().join("fail");
    write_exe(&fail, "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"busy\",\"details\":\"retry\"}'\nexit 1\n");
    let crash = dir.path().join("crash");
    write_exe(&crash, "#!/bin/sh\necho oops >&2\nexit 3\n");
    // Hangs for 60 s (in short sleeps, so that killing it leaves no long orphan), then leaves a
    // mark: the timeout must end the call before.
    let slow = dir.path().join("slow");
    let finished = dir.path().join("slow-finished");
    write_exe(
        &slow,
        &format!(
            "#!/bin/sh\ni=0\nwhile [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\ntouch {}\n",
            finished.display()
        ),
    );
    // Generous for the scripts that finish (a loaded CI machine), short for the one that hangs.
    let exec = ProcessExec::new(Duration::from_secs(20), None).unwrap();
    let impatient = ProcessExec::new(Duration::from_millis(300), None).unwrap();
    let req = PluginRequest {
        command: "ADD".into(),
        container_id: "c1".into(),
        netns: "/run/netns/x".into(),
        ifname: "eth0".into(),
        stdin: b"{\"a\":1}\n".to_vec(),
        ..Default::default()
    };
    let out: Value = serde_json::from_slice(&exec.exec(&ok, &req).await.unwrap()).unwrap();
    assert_eq!(out, json!({"env":"ADD c1 eth0 /run/netns/x","in":{"a":1}}));
    match exec.exec(&fail, &req).await {
        Err(ExecError::Plugin { reply, .. }) => {
            assert_eq!((reply.code, reply.details.as_str()), (11, "retry"))
        }
        other => panic!("{other:?}"),
    }
    let e = exec.exec(&crash, &req).await.unwrap_err();
    assert!(e.to_string().contains("oops"), "{e}");
    assert!(matches!(
        impatient.exec(&slow, &req).await,
        Err(ExecError::Timeout { .. })
    ));
    assert!(!finished.exists(), "waited for the hung plugin");
    assert!(find_plugin("ok", &[dir.path().to_path_buf()]).is_some());
    assert!(find_plugin("../ok", &[dir.path().to_path_buf()]).is_none());
}

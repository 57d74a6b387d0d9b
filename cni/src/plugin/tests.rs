//! Plugin logic over recording [`NetOps`] and [`Firewall`] implementations (no root needed).

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::IpNet;
use serde_json::json;

use super::*;

#[derive(Debug, Default)]
struct FakeNet {
    calls: RefCell<Vec<String>>,
    links: RefCell<Vec<(String, LinkState)>>,
    pods: RefCell<Vec<(String, PodIface)>>,
    fail_veth: RefCell<Option<i32>>,
}

impl NetOps for FakeNet {
    async fn set_sysctl(&self, key: &str, value: &str) -> Result<bool, NetError> {
        self.calls
            .borrow_mut()
            .push(format!("sysctl {key}={value}"));
        Ok(true)
    }
    async fn ensure_bridge(
        &self,
        name: &str,
        mtu: u32,
        gateways: &[IpNet],
    ) -> Result<LinkState, NetError> {
        self.calls
            .borrow_mut()
            .push(format!("bridge {name} mtu {mtu} {gateways:?}"));
        let l = LinkState {
            index: 7,
            mac: "02:00:00:00:00:07".into(),
            up: true,
            master: None,
            mtu,
        };
        self.links.borrow_mut().push((name.into(), l.clone()));
        Ok(l)
    }
    async fn link(&self, name: &str) -> Result<Option<LinkState>, NetError> {
        Ok(self
            .links
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l.clone()))
    }
    async fn create_veth(&self, req: &VethRequest) -> Result<LinkState, NetError> {
        self.calls.borrow_mut().push(format!(
            "veth {} {} mtu {} master {} hairpin {}",
            req.host, req.pod, req.mtu, req.bridge, req.hairpin
        ));
        if let Some(errno) = *self.fail_veth.borrow() {
            return Err(NetError::Kernel {
                op: format!("creating veth {}", req.host),
                errno,
            });
        }
        let l = LinkState {
            index: 8,
            mac: "02:00:00:00:00:08".into(),
            up: true,
            master: Some(req.bridge),
            mtu: req.mtu,
        };
        self.links.borrow_mut().push((req.host.clone(), l.clone()));
        let pod = PodIface {
            link: LinkState {
                index: 2,
                mac: "02:00:00:00:00:02".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        self.pods.borrow_mut().push((req.pod.clone(), pod));
        Ok(l)
    }
    async fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        self.calls.borrow_mut().push(format!("del {name}"));
        let before = self.links.borrow().len();
        self.links.borrow_mut().retain(|(n, _)| n != name);
        let removed = self.links.borrow().len() != before;
        if removed {
            self.pods.borrow_mut().clear();
        }
        Ok(removed)
    }
    async fn pod_iface(&self, _netns: &Path, ifname: &str) -> Result<Option<PodIface>, NetError> {
        Ok(self
            .pods
            .borrow()
            .iter()
            .find(|(n, _)| n == ifname)
            .map(|(_, p)| p.clone()))
    }
    async fn configure_pod(
        &self,
        _netns: &Path,
        ifname: &str,
        addrs: &[IpNet],
        gateways: &[IpAddr],
    ) -> Result<PodIface, NetError> {
        self.calls
            .borrow_mut()
            .push(format!("pod {ifname} {addrs:?} via {gateways:?}"));
        let mut pods = self.pods.borrow_mut();
        let p = &mut pods.iter_mut().find(|(n, _)| n == ifname).unwrap().1;
        p.link.up = true;
        p.addrs = addrs.to_vec();
        p.default_gws = gateways.to_vec();
        Ok(p.clone())
    }
    async fn delete_pod_iface(&self, _netns: &Path, ifname: &str) -> Result<bool, NetError> {
        self.calls.borrow_mut().push(format!("pod del {ifname}"));
        Ok(false)
    }
}

#[derive(Debug, Default)]
struct FakeFw {
    rules: RefCell<Vec<IpNet>>,
}

impl Firewall for FakeFw {
    async fn ensure_masquerade(&self, cluster: IpNet) -> Result<(), FirewallError> {
        if !self.rules.borrow().contains(&cluster) {
            self.rules.borrow_mut().push(cluster);
        }
        Ok(())
    }
    async fn remove_masquerade(&self, cluster: IpNet) -> Result<(), FirewallError> {
        self.rules.borrow_mut().retain(|c| *c != cluster);
        Ok(())
    }
}

fn conf(dir: &Path) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"cniVersion":"1.0.0","name":"kn","type":"kubenode-bridge","bridge":"kn0","mtu":1450,
        "podCIDR":"10.244.1.0/24","clusterCIDR":"10.244.0.0/16","dataDir":dir}),
    )
    .unwrap()
}

fn env(cmd: &str, id: &str) -> Env {
    Env {
        command: cmd.into(),
        container_id: id.into(),
        netns: "/run/netns/pod".into(),
        ifname: "eth0".into(),
    }
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn add_check_del_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plugin {
        net: FakeNet::default(),
        fw: FakeFw::default(),
    };
    let stdin = conf(dir.path());
    let out = block(p.dispatch(&env("ADD", "c1"), &stdin))
        .unwrap()
        .unwrap();
    assert_eq!(out["cniVersion"], "1.0.0");
    crate::golden::assert_golden(
        "kubenode-bridge-add-result.json",
        &(serde_json::to_string_pretty(&out).unwrap() + "\n"),
    );
    assert_eq!(
        out["ips"],
        json!([{"address":"10.244.1.2/24","gateway":"10.244.1.1","interface":2}])
    );
    assert_eq!(
        out["interfaces"][2],
        json!({"name":"eth0","mac":"02:00:00:00:00:02","sandbox":"/run/netns/pod"})
    );
    assert!(
        out["interfaces"][0].get("mtu").is_none(),
        "1.1.0 fields dropped for 1.0.0"
    );
    let host = host_veth_name("kn", "c1", "eth0");
    assert_eq!(host.len(), 15);
    assert_eq!(
        *p.net.calls.borrow(),
        [
            "sysctl net.ipv4.ip_forward=1".to_string(),
            "sysctl net.bridge.bridge-nf-call-iptables=1".into(),
            "bridge kn0 mtu 1450 [10.244.1.1/24]".into(),
            format!("veth {host} eth0 mtu 1450 master 7 hairpin true"),
            "pod eth0 [10.244.1.2/24] via [10.244.1.1]".into(),
        ]
    );
    assert_eq!(
        *p.fw.rules.borrow(),
        ["10.244.0.0/16".parse::<IpNet>().unwrap()]
    );

    let mut check = serde_json::from_slice::<serde_json::Value>(&stdin).unwrap();
    check["prevResult"] = out.clone();
    let check = serde_json::to_vec(&check).unwrap();
    block(p.dispatch(&env("CHECK", "c1"), &check)).unwrap();

    let again = block(p.dispatch(&env("ADD", "c1"), &stdin)).unwrap_err();
    assert_eq!(again.code, crate::spec::codes::INTERFACE_EXISTS, "{again}");

    block(p.dispatch(&env("DEL", "c1"), &check)).unwrap();
    assert!(
        p.fw.rules.borrow().is_empty(),
        "last DEL removes the masquerade rule"
    );
    assert!(std::fs::read_dir(dir.path().join("kn")).unwrap().all(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .parse::<Ipv4Addr>()
        .is_err()));
    let mut no_ns = env("DEL", "c1");
    no_ns.netns = String::new();
    block(p.dispatch(&no_ns, &check)).unwrap();
    let e = block(p.dispatch(&env("CHECK", "c1"), &check)).unwrap_err();
    assert!(e.msg.contains("holds []"), "{e}");
}

#[test]
fn failed_veth_releases_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plugin {
        net: FakeNet::default(),
        fw: FakeFw::default(),
    };
    *p.net.fail_veth.borrow_mut() = Some(libc::EPERM);
    let e = block(p.dispatch(&env("ADD", "c1"), &conf(dir.path()))).unwrap_err();
    assert_eq!(e.code, crate::spec::codes::NETLINK);
    assert!(e.msg.contains("CAP_NET_ADMIN"), "{e}");
    let store = Store::new(dir.path(), "kn");
    assert!(store.lock().unwrap().list().unwrap().is_empty());
    assert!(p
        .net
        .calls
        .borrow()
        .iter()
        .any(|c| c.starts_with("del veth")));
}

#[test]
fn gc_keeps_valid_attachments_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plugin {
        net: FakeNet::default(),
        fw: FakeFw::default(),
    };
    let stdin = conf(dir.path());
    for id in ["keep", "drop"] {
        p.net.pods.borrow_mut().clear();
        block(p.dispatch(&env("ADD", id), &stdin)).unwrap();
    }
    let mut gc: serde_json::Value = serde_json::from_slice(&stdin).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID":"keep","ifname":"eth0"}]);
    block(p.dispatch(&env("GC", ""), &serde_json::to_vec(&gc).unwrap())).unwrap();
    let left = Store::new(dir.path(), "kn").lock().unwrap().list().unwrap();
    assert_eq!(
        left.iter()
            .map(|a| a.container_id.as_str())
            .collect::<Vec<_>>(),
        ["keep"]
    );
    assert_eq!(p.fw.rules.borrow().len(), 1);
    block(p.dispatch(&env("STATUS", ""), &stdin)).unwrap();
}

#[test]
fn version_and_bad_input() {
    let p = Plugin {
        net: FakeNet::default(),
        fw: FakeFw::default(),
    };
    let v = block(p.dispatch(&env("VERSION", ""), br#"{"cniVersion":"0.4.0"}"#))
        .unwrap()
        .unwrap();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert!(v["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("1.1.0")));
    let e = block(p.dispatch(
        &env("ADD", "c"),
        br#"{"cniVersion":"9.0.0","name":"kn","podCIDR":"10.0.0.0/24"}"#,
    ))
    .unwrap_err();
    assert_eq!(e.code, crate::spec::codes::INCOMPATIBLE_VERSION);
    let e = block(p.dispatch(
        &env("BOGUS", "c"),
        br#"{"cniVersion":"1.0.0","name":"kn","podCIDR":"10.0.0.0/24"}"#,
    ))
    .unwrap_err();
    assert_eq!(e.code, crate::spec::codes::INVALID_ENV);
    let reply = e.reply("1.0.0");
    assert_eq!(serde_json::to_value(&reply).unwrap()["code"], 4);
}

#[test]
fn dual_stack_add_and_del() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plugin {
        net: FakeNet::default(),
        fw: FakeFw::default(),
    };
    let stdin = serde_json::to_vec(&json!({"cniVersion":"1.1.0","name":"kn","type":"kubenode-bridge",
        "podCIDRs":["10.244.1.0/24","fd00:10:244:1::/64"],"clusterCIDRs":["10.244.0.0/16","fd00:10:244::/48"],"dataDir":dir.path()}))
    .unwrap();
    let out = block(p.dispatch(&env("ADD", "c1"), &stdin))
        .unwrap()
        .unwrap();
    assert_eq!(
        out["ips"],
        json!([{"address":"10.244.1.2/24","gateway":"10.244.1.1","interface":2},
               {"address":"fd00:10:244:1::2/64","gateway":"fd00:10:244:1::1","interface":2}])
    );
    assert_eq!(
        out["routes"],
        json!([{"dst":"0.0.0.0/0","gw":"10.244.1.1"},{"dst":"::/0","gw":"fd00:10:244:1::1"}])
    );
    assert!(p
        .net
        .calls
        .borrow()
        .contains(&"sysctl net.ipv6.conf.all.forwarding=1".to_string()));
    assert_eq!(p.fw.rules.borrow().len(), 2);
    let mut check: serde_json::Value = serde_json::from_slice(&stdin).unwrap();
    check["prevResult"] = out;
    let check = serde_json::to_vec(&check).unwrap();
    block(p.dispatch(&env("CHECK", "c1"), &check)).unwrap();
    block(p.dispatch(&env("DEL", "c1"), &check)).unwrap();
    assert!(p.fw.rules.borrow().is_empty());
    assert!(Store::new(dir.path(), "kn")
        .lock()
        .unwrap()
        .list()
        .unwrap()
        .is_empty());
}

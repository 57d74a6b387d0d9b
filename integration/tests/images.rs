//! Privileged end-to-end tests of the image store against a real registry
//! (Debian's docker-registry on loopback) and real OCI layouts/archives made
//! by skopeo: pull, re-pull, concurrent pulls (threads and processes), a
//! tampered blob, imports, typed errors, and the `kubenode image` CLI.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use clap::Parser as _;
use kubenode_integration::{
    build_busybox_image, privileged, push_image, run, run_ok, run_tests, unique_tag, ImageLayout,
    LeakGuard, TestDir, TestRegistry, REGISTRY_PASSWORD, REGISTRY_USER,
};
use kubenode_runtime::image::{ImageError, ImageStore, PullEvent, PullOptions};

/// The CLI module itself, compiled here until `kubenode image` is wired
/// into `src/main.rs`.
#[path = "../../src/commands/image.rs"]
#[allow(dead_code, unused_imports)] // its #[test]s are compiled out without libtest
mod image_cmd;

/// The printers `image_cmd` uses, from the binary's `print` module (`crate::print::images`,
/// which reaches the table renderer as `super::table`).
#[path = "../../src/print/images.rs"]
#[allow(dead_code, unused_imports)] // its #[test]s are compiled out without libtest
mod print_images;
#[path = "../../src/print/table.rs"]
#[allow(dead_code)]
mod table;
mod print {
    pub(crate) use super::print_images as images;
}

const CHILD_ENV: &str = "KUBENODE_IMAGES_TEST_CHILD";
const TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_pull(&spec);
        return;
    }
    run_tests(vec![
        privileged("image_pull_busybox_then_repull_is_a_no_op", pull_busybox),
        privileged("image_concurrent_pulls_do_the_work_once", concurrent_pulls),
        privileged("image_tampered_blob_is_rejected", tampered_blob),
        privileged(
            "image_import_layout_and_oci_archive",
            import_layout_and_archive,
        ),
        privileged("image_unknown_and_unreachable_are_typed", typed_errors),
        privileged("image_cli_pull_ls_rm_import", cli),
        privileged("image_pull_with_basic_auth_from_config_json", basic_auth),
        privileged("image_pull_with_bearer_token_auth", bearer_auth),
        privileged(
            "image_pull_with_credentials_from_a_keyring",
            pull_with_credentials_from_a_keyring,
        ),
    ])
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// A registry with the busybox image pushed as `busybox:latest`.
struct Fixture {
    tag: String,
    dir: TestDir,
    registry: TestRegistry,
    image: ImageLayout,
    reference: String,
}

impl Fixture {
    fn new(prefix: &str) -> anyhow::Result<Fixture> {
        let tag = unique_tag(prefix);
        let dir = TestDir::new(&tag)?;
        let registry = TestRegistry::start(None)?;
        let image = build_busybox_image(&dir.join("layout"))?;
        let reference = push_image(&registry, &image, "busybox", "latest")?;
        Ok(Fixture {
            tag,
            dir,
            registry,
            image,
            reference,
        })
    }

    fn options(&self, events: Option<&Arc<Mutex<Vec<PullEvent>>>>) -> PullOptions {
        let progress = events.map(|events| {
            let events = events.clone();
            Arc::new(move |e: &PullEvent| events.lock().unwrap().push(e.clone())) as _
        });
        PullOptions {
            insecure_registries: vec![self.registry.host()],
            auth_config_path: None,
            progress,
            ..Default::default()
        }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.join("root")
    }
}

fn count(events: &[PullEvent], f: impl Fn(&PullEvent) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

fn fetched(e: &PullEvent) -> bool {
    matches!(e, PullEvent::BlobFetched { .. })
}

fn unpacked(e: &PullEvent) -> bool {
    matches!(e, PullEvent::LayerUnpacked { .. })
}

fn entries(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn pull_busybox() -> anyhow::Result<()> {
    let fx = Fixture::new("ip")?;
    let guard = LeakGuard::new(&fx.tag);
    let store = ImageStore::open(fx.root())?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let image = block_on(store.pull(&fx.reference, &fx.options(Some(&events))))?;
    ensure!(
        image.reference == fx.reference,
        "reference {}",
        image.reference
    );
    ensure!(
        image.manifest_digest == fx.image.manifest_digest,
        "digest {}",
        image.manifest_digest
    );
    ensure!(image.layers.len() == 1);
    let layer = &image.layers[0];
    ensure!(
        layer.ends_with(format!("snapshots/{}/fs", &fx.image.diff_id[7..])),
        "{}",
        layer.display()
    );
    let busybox = std::fs::metadata(layer.join("bin/busybox"))?;
    ensure!(std::os::unix::fs::PermissionsExt::mode(&busybox.permissions()) & 0o111 != 0);
    ensure!(std::fs::read_link(layer.join("bin/sh"))?.ends_with("busybox"));
    let out = run_ok(
        Command::new("chroot")
            .arg(layer)
            .args(["/bin/busybox", "echo", "hello"]),
        TIMEOUT,
    )?;
    ensure!(String::from_utf8_lossy(&out.stdout).trim() == "hello");
    let cmd = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.cmd().clone())
        .unwrap_or_default();
    ensure!(cmd == vec!["sh".to_string()], "cmd {cmd:?}");
    {
        let events = events.lock().unwrap();
        ensure!(
            count(&events, fetched) == 2 && count(&events, unpacked) == 1,
            "{events:?}"
        );
    }

    let got = store.get("127.0.0.1:0/none:1")?;
    ensure!(got.is_none());
    let got = store
        .get(&fx.reference)?
        .context("pulled image not found")?;
    ensure!(got.layers == image.layers && got.manifest_digest == image.manifest_digest);

    events.lock().unwrap().clear();
    let again = block_on(store.pull(&fx.reference, &fx.options(Some(&events))))?;
    ensure!(again.layers == image.layers);
    let events = events.lock().unwrap();
    ensure!(
        count(&events, fetched) == 0 && count(&events, unpacked) == 0,
        "second pull did work: {events:?}"
    );
    drop(events);

    // By digest: the same content, stored under the digest reference.
    let by_digest = format!(
        "{}/busybox@{}",
        fx.registry.host(),
        fx.image.manifest_digest
    );
    let pinned = block_on(store.pull(&by_digest, &fx.options(None)))?;
    ensure!(pinned.reference == by_digest && pinned.layers == image.layers);
    ensure!(store.list()?.len() == 2);
    let wrong = format!("{}/busybox@{}", fx.registry.host(), fx.image.config_digest);
    ensure!(
        block_on(store.pull(&wrong, &fx.options(None))).is_err(),
        "a config digest is no manifest"
    );
    drop(store);
    guard.check()
}

/// Child mode: pull once and print what this process fetched and unpacked.
fn child_pull(spec: &str) {
    let mut parts = spec.splitn(3, ' ');
    let (root, insecure, reference) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let store = ImageStore::open(root).expect("open store");
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let options = PullOptions {
        insecure_registries: vec![insecure.to_string()],
        auth_config_path: None,
        progress: Some(Arc::new(move |e: &PullEvent| {
            sink.lock().unwrap().push(e.clone())
        })),
        ..Default::default()
    };
    block_on(store.pull(reference, &options)).expect("child pull");
    let events = events.lock().unwrap();
    println!(
        "fetched={} unpacked={}",
        count(&events, fetched),
        count(&events, unpacked)
    );
}

fn concurrent_pulls() -> anyhow::Result<()> {
    let fx = Fixture::new("ic")?;
    let guard = LeakGuard::new(&fx.tag);
    let store = Arc::new(ImageStore::open(fx.root())?);

    // Four pulls in this process.
    let events = Arc::new(Mutex::new(Vec::new()));
    let layers = block_on(async {
        let pulls: Vec<_> = (0..4)
            .map(|_| {
                let (store, reference, options) = (
                    store.clone(),
                    fx.reference.clone(),
                    fx.options(Some(&events)),
                );
                tokio::spawn(
                    async move { store.pull(&reference, &options).await.map(|i| i.layers) },
                )
            })
            .collect();
        let mut layers = Vec::new();
        for pull in pulls {
            layers.push(pull.await??);
        }
        anyhow::Ok(layers)
    })?;
    ensure!(layers.windows(2).all(|w| w[0] == w[1]));
    {
        let events = events.lock().unwrap();
        ensure!(
            count(&events, fetched) == 2,
            "blobs fetched more than once: {events:?}"
        );
        ensure!(
            count(&events, unpacked) == 1,
            "layer unpacked more than once: {events:?}"
        );
    }

    // Three processes on a fresh root: the flock makes them share the work too.
    let root2 = fx.dir.join("root2");
    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..3)
        .map(|_| {
            let spec = format!(
                "{} {} {}",
                root2.display(),
                fx.registry.host(),
                fx.reference
            );
            let exe = exe.clone();
            std::thread::spawn(move || run_ok(Command::new(exe).env(CHILD_ENV, spec), TIMEOUT))
        })
        .collect();
    let (mut total_fetched, mut total_unpacked) = (0, 0);
    for child in children {
        let out = child
            .join()
            .map_err(|_| anyhow::anyhow!("child thread panicked"))??;
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let field = |name: &str| -> anyhow::Result<usize> {
            let v = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .context("child output")?;
            Ok(v.parse()?)
        };
        total_fetched += field("fetched=")?;
        total_unpacked += field("unpacked=")?;
    }
    ensure!(
        total_fetched == 2 && total_unpacked == 1,
        "processes fetched {total_fetched}, unpacked {total_unpacked}"
    );
    guard.check()
}

fn tampered_blob() -> anyhow::Result<()> {
    let fx = Fixture::new("it")?;
    let guard = LeakGuard::new(&fx.tag);
    let hex = &fx.image.layer_digest[7..];
    let data = fx.registry.storage_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&data).with_context(|| format!("reading {}", data.display()))?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes)?;

    let store = ImageStore::open(fx.root())?;
    match block_on(store.pull(&fx.reference, &fx.options(None))) {
        Err(ImageError::DigestMismatch {
            ref digest,
            ref reference,
            ..
        }) => {
            ensure!(
                digest == &fx.image.layer_digest,
                "wrong digest named: {digest}"
            );
            ensure!(reference == &fx.reference);
        }
        Err(other) => bail!("expected a digest mismatch, got {other}"),
        Ok(_) => bail!("a tampered layer was accepted"),
    }
    ensure!(store.get(&fx.reference)?.is_none());
    let root = fx.root();
    for dir in ["images/blobs/sha256", "images/tmp", "snapshots"] {
        let left = entries(&root.join(dir))?;
        ensure!(left.is_empty(), "{dir} keeps {left:?}");
    }
    guard.check()
}

fn import_layout_and_archive() -> anyhow::Result<()> {
    let tag = unique_tag("ii");
    let guard = LeakGuard::new(&tag);
    let dir = TestDir::new(&tag)?;
    let image = build_busybox_image(&dir.join("layout"))?;
    let src = format!("oci:{}:latest", image.layout_dir.display());
    let layout2 = format!(
        "oci:{}:kubenode.test/busybox:dir",
        dir.join("layout2").display()
    );
    let archive = dir.join("busybox.tar");
    let archive_ref = format!(
        "oci-archive:{}:kubenode.test/busybox:archive",
        archive.display()
    );
    run_ok(
        Command::new("skopeo").args(["copy", "--quiet", &src, &layout2]),
        TIMEOUT,
    )?;
    run_ok(
        Command::new("skopeo").args(["copy", "--quiet", &src, &archive_ref]),
        TIMEOUT,
    )?;

    let store = ImageStore::open(dir.join("root"))?;
    let from_dir = block_on(store.import(&dir.join("layout2")))?;
    ensure!(
        from_dir.len() == 1 && from_dir[0].reference == "kubenode.test/busybox:dir",
        "{from_dir:?}"
    );
    let from_tar = block_on(store.import(&archive))?;
    ensure!(
        from_tar.len() == 1 && from_tar[0].reference == "kubenode.test/busybox:archive",
        "{from_tar:?}"
    );
    ensure!(
        from_dir[0].layers == from_tar[0].layers,
        "the same layer is one snapshot"
    );
    ensure!(from_tar[0].layers[0].join("bin/busybox").is_file());
    let listed: Vec<String> = store.list()?.into_iter().map(|i| i.reference).collect();
    ensure!(
        listed == ["kubenode.test/busybox:archive", "kubenode.test/busybox:dir"],
        "{listed:?}"
    );
    ensure!(
        entries(&dir.join("root/images/tmp"))?.is_empty(),
        "extracted archive left behind"
    );

    // The store is itself an OCI layout that skopeo can read.
    let out = run_ok(
        Command::new("skopeo").args([
            "inspect",
            "--raw",
            &format!(
                "oci:{}:kubenode.test/busybox:dir",
                dir.join("root/images").display()
            ),
        ]),
        TIMEOUT,
    )?;
    ensure!(String::from_utf8_lossy(&out.stdout).contains("layers"));
    guard.check()
}

fn typed_errors() -> anyhow::Result<()> {
    let fx = Fixture::new("ie")?;
    let guard = LeakGuard::new(&fx.tag);
    let store = ImageStore::open(fx.root())?;
    let missing = format!("{}/no-such-image:1", fx.registry.host());
    match block_on(store.pull(&missing, &fx.options(None))) {
        Err(e @ ImageError::NotFound { .. }) => ensure!(e.kubelet_reason() == "ErrImagePull"),
        other => bail!("expected not found, got {other:?}"),
    }
    let missing_tag = format!("{}/busybox:no-such-tag", fx.registry.host());
    ensure!(matches!(
        block_on(store.pull(&missing_tag, &fx.options(None))),
        Err(ImageError::NotFound { .. })
    ));

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let closed = format!("127.0.0.1:{port}");
    let options = PullOptions {
        insecure_registries: vec![closed.clone()],
        ..Default::default()
    };
    match block_on(store.pull(&format!("{closed}/x:1"), &options)) {
        Err(ImageError::Unreachable { registry, .. }) => ensure!(registry == closed),
        other => bail!("expected unreachable, got {other:?}"),
    }
    match block_on(store.pull("Not/A/Valid:Ref:", &options)) {
        Err(e @ ImageError::InvalidReference { .. }) => {
            ensure!(e.kubelet_reason() == "InvalidImageName")
        }
        other => bail!("expected invalid reference, got {other:?}"),
    }
    ensure!(entries(&fx.root().join("images/blobs/sha256"))?.is_empty());
    guard.check()
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    image: image_cmd::ImageArgs,
}

fn cli_run(args: &[&str]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("kubenode-image").chain(args.iter().copied()))?;
    block_on(image_cmd::run(cli.image))
}

fn cli() -> anyhow::Result<()> {
    let fx = Fixture::new("il")?;
    let guard = LeakGuard::new(&fx.tag);
    let root = fx.root().display().to_string();
    let host = fx.registry.host();
    cli_run(&[
        "--root-dir",
        &root,
        "--insecure-registry",
        &host,
        "pull",
        &fx.reference,
    ])?;
    cli_run(&["ls", "--root-dir", &root])?;
    let store = ImageStore::open(fx.root())?;
    ensure!(store.get(&fx.reference)?.is_some());
    ensure!(
        cli_run(&["--root-dir", &root, "pull", &fx.reference]).is_err(),
        "HTTPS to a plain-HTTP registry"
    );
    cli_run(&["--root-dir", &root, "rm", &fx.reference])?;
    ensure!(store.get(&fx.reference)?.is_none());
    ensure!(entries(&fx.root().join("snapshots"))?.is_empty());
    ensure!(
        cli_run(&["--root-dir", &root, "rm", &fx.reference]).is_err(),
        "removing twice"
    );

    let archive = fx.dir.join("bb.tar");
    let src = format!("oci:{}:latest", fx.image.layout_dir.display());
    let dst = format!("oci-archive:{}:kubenode.test/cli:1", archive.display());
    run(
        Command::new("skopeo").args(["copy", "--quiet", &src, &dst]),
        TIMEOUT,
    )?;
    cli_run(&[
        "--root-dir",
        &root,
        "import",
        &archive.display().to_string(),
    ])?;
    ensure!(store.get("kubenode.test/cli:1")?.is_some());
    guard.check()
}

fn basic_auth() -> anyhow::Result<()> {
    let tag = unique_tag("ia");
    let guard = LeakGuard::new(&tag);
    let dir = TestDir::new(&tag)?;
    let registry = TestRegistry::start_with_auth(None)?;
    let image = build_busybox_image(&dir.join("layout"))?;
    let reference = format!("{}/private/busybox:1", registry.host());
    run_ok(
        Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            "kn:kubenode-pw",
            &format!("oci:{}:latest", image.layout_dir.display()),
            &format!("docker://{reference}"),
        ]),
        TIMEOUT,
    )?;

    let store = ImageStore::open(dir.join("root"))?;
    let mut options = PullOptions {
        insecure_registries: vec![registry.host()],
        ..Default::default()
    };
    match block_on(store.pull(&reference, &options)) {
        Err(e @ ImageError::Unauthorized { .. }) => {
            ensure!(e.to_string().contains(&registry.host()), "{e}")
        }
        other => bail!("anonymous pull: expected unauthorized, got {other:?}"),
    }

    use base64::Engine as _;
    let write_auth = |name: &str, creds: &str| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join(name);
        let auth = base64::engine::general_purpose::STANDARD.encode(creds);
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
                registry.host()
            ),
        )?;
        Ok(path)
    };
    options.auth_config_path = Some(write_auth("wrong.json", "kn:not-the-password")?);
    match block_on(store.pull(&reference, &options)) {
        Err(ImageError::Unauthorized { .. }) => {}
        other => bail!("wrong password: expected unauthorized, got {other:?}"),
    }

    options.auth_config_path = Some(write_auth("config.json", "kn:kubenode-pw")?);
    let pulled = block_on(store.pull(&reference, &options))?;
    ensure!(pulled.manifest_digest == image.manifest_digest);
    ensure!(pulled.layers[0].join("bin/busybox").is_file());
    drop(registry);
    guard.check()
}

/// The pull-secret path: keyrings (what the kubelet builds from a pod's `imagePullSecrets`)
/// are matched against the image as upstream's keyring (the most specific key first) and
/// every matching credential is tried in turn until one works; the node's own `config.json`
/// (searched in the given directories) comes after them; without a match the pull is
/// anonymous and the registry's 401 is `Unauthorized` (`ErrImagePull`).
fn pull_with_credentials_from_a_keyring() -> anyhow::Result<()> {
    use kubenode_runtime::image::{Keyring, NodeCredentialDirs};
    let tag = unique_tag("ik");
    let guard = LeakGuard::new(&tag);
    let dir = TestDir::new(&tag)?;
    let registry = TestRegistry::start_with_auth(None)?;
    let image = build_busybox_image(&dir.join("layout"))?;
    let host = registry.host();
    let reference = format!("{host}/private/busybox:1");
    let creds = format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}");
    run_ok(
        Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &format!("oci:{}:latest", image.layout_dir.display()),
            &format!("docker://{reference}"),
        ]),
        TIMEOUT,
    )?;
    let auth = |user: &str, pass: &str| -> serde_json::Value {
        serde_json::json!({"username": user, "password": pass})
    };
    let store = ImageStore::open(dir.join("root"))?;
    let base = PullOptions {
        insecure_registries: vec![host.clone()],
        ..Default::default()
    };

    // Anonymous (no key matches the image: another port, another path): 401.
    let mut other = Keyring::new();
    other
        .add_config_json(
            serde_json::json!({"auths": {
                "127.0.0.1:1": auth(REGISTRY_USER, REGISTRY_PASSWORD),
                format!("{host}/public"): auth(REGISTRY_USER, REGISTRY_PASSWORD),
            }})
            .to_string()
            .as_bytes(),
        )
        .map_err(anyhow::Error::msg)?;
    let mut options = base.clone();
    options.keyrings = vec![other];
    match block_on(store.pull(&reference, &options)) {
        Err(e @ ImageError::Unauthorized { .. }) => {
            ensure!(e.kubelet_reason() == "ErrImagePull");
            ensure!(!e.to_string().contains(REGISTRY_PASSWORD), "{e}");
        }
        other => bail!("no matching credential: expected unauthorized, got {other:?}"),
    }

    // A wrong password under the more specific key is tried first, then the right one under
    // the host (a `.dockercfg` secret) pulls.
    let mut pod = Keyring::new();
    pod.add_config_json(
        serde_json::json!({"auths": {format!("http://{host}/private"): auth(REGISTRY_USER, "wrong")}})
            .to_string()
            .as_bytes(),
    ).map_err(anyhow::Error::msg)?;
    pod.add_dockercfg(
        serde_json::json!({ host.clone(): auth(REGISTRY_USER, REGISTRY_PASSWORD) })
            .to_string()
            .as_bytes(),
    )
    .map_err(anyhow::Error::msg)?;
    ensure!(pod.lookup(&format!("{host}/private/busybox")).len() == 2);
    let mut options = base.clone();
    options.keyrings = vec![pod];
    let pulled = block_on(store.pull(&reference, &options))?;
    ensure!(pulled.manifest_digest == image.manifest_digest);

    // The node's config.json, found in the search directories, after a pod keyring whose
    // only credential is wrong.
    let node_dir = dir.join("kubelet-root");
    std::fs::create_dir_all(&node_dir)?;
    std::fs::write(
        node_dir.join("config.json"),
        serde_json::json!({"auths": {host.clone(): auth(REGISTRY_USER, REGISTRY_PASSWORD)}})
            .to_string(),
    )?;
    let mut wrong = Keyring::new();
    wrong
        .add_config_json(
            serde_json::json!({"auths": {host.clone(): auth(REGISTRY_USER, "wrong")}})
                .to_string()
                .as_bytes(),
        )
        .map_err(anyhow::Error::msg)?;
    let store2 = ImageStore::open(dir.join("root2"))?;
    let mut options = base.clone();
    options.keyrings = vec![wrong.clone()];
    match block_on(store2.pull(&reference, &options)) {
        Err(ImageError::Unauthorized { .. }) => {}
        other => bail!("a wrong password only: expected unauthorized, got {other:?}"),
    }
    options.node_credentials = Some(NodeCredentialDirs {
        config_json: vec![dir.join("missing"), node_dir.clone()],
        dockercfg: vec![],
    });
    let pulled = block_on(store2.pull(&reference, &options))?;
    ensure!(pulled.layers[0].join("bin/busybox").is_file());
    drop(registry);
    guard.check()
}

const TOKEN: &str = "kubenode-test-token";

/// A registry front that speaks the distribution token flow: unauthenticated
/// requests get a `Bearer` challenge pointing at its `/token` endpoint, which
/// hands out [`TOKEN`] for the basic credentials `kn:kubenode-pw`; requests
/// bearing the token are forwarded to `backend`. One thread per connection,
/// each request answered with `Connection: close`.
struct TokenRegistry {
    host: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl TokenRegistry {
    fn start(backend: String) -> anyhow::Result<TokenRegistry> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let host = listener.local_addr()?.to_string();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (realm, flag) = (format!("http://{host}/token"), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (realm, backend) = (realm.clone(), backend.clone());
                std::thread::spawn(move || {
                    let _ = serve_token_front(conn, &realm, &backend);
                });
            }
        });
        Ok(TokenRegistry { host, stop })
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(&self.host);
    }
}

fn serve_token_front(
    mut conn: std::net::TcpStream,
    realm: &str,
    backend: &str,
) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader, Write as _};
    conn.set_read_timeout(Some(TIMEOUT))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let request_line = head.first().cloned().unwrap_or_default();
    let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    let auth = head
        .iter()
        .find_map(|h| {
            h.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        })
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("kn:kubenode-pw")
    );
    let respond = |conn: &mut std::net::TcpStream, status: &str, extra: &str, body: &str| {
        write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if path.starts_with("/token") {
        if auth == basic {
            respond(
                &mut conn,
                "200 OK",
                "",
                &format!(r#"{{"token":"{TOKEN}"}}"#),
            )?;
        } else {
            respond(
                &mut conn,
                "401 Unauthorized",
                "",
                r#"{"details":"bad credentials"}"#,
            )?;
        }
    } else if auth == format!("Bearer {TOKEN}") {
        let mut upstream = std::net::TcpStream::connect(backend)?;
        upstream.set_read_timeout(Some(TIMEOUT))?;
        write!(
            upstream,
            "{request_line}\r\nHost: {backend}\r\nConnection: close\r\n"
        )?;
        for h in head.iter().skip(1) {
            let name = h.split(':').next().unwrap_or_default().to_ascii_lowercase();
            if !["host", "connection", "authorization"].contains(&name.as_str()) {
                write!(upstream, "{h}\r\n")?;
            }
        }
        write!(upstream, "\r\n")?;
        std::io::copy(&mut upstream, &mut conn)?;
    } else {
        let challenge =
            format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"kubenode-test\"\r\n");
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        respond(&mut conn, "401 Unauthorized", &challenge, body)?;
    }
    Ok(())
}

fn bearer_auth() -> anyhow::Result<()> {
    let fx = Fixture::new("ib")?;
    let guard = LeakGuard::new(&fx.tag);
    let front = TokenRegistry::start(fx.registry.host())?;
    let reference = format!("{}/busybox:latest", front.host);
    let store = ImageStore::open(fx.root())?;
    let mut options = PullOptions {
        insecure_registries: vec![front.host.clone()],
        ..Default::default()
    };
    match block_on(store.pull(&reference, &options)) {
        Err(ImageError::Unauthorized { .. }) => {}
        other => bail!("anonymous pull: expected unauthorized, got {other:?}"),
    }

    // Basic credentials, exchanged for a token at the realm.
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("kn:kubenode-pw");
    let config = fx.dir.join("basic.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths": {{"http://{}": {{"auth": "{auth}"}}}}}}"#,
            front.host
        ),
    )?;
    options.auth_config_path = Some(config);
    let pulled = block_on(store.pull(&reference, &options))?;
    ensure!(pulled.manifest_digest == fx.image.manifest_digest);

    // A registry token from the config, used as is.
    let other_root = fx.dir.join("root-token");
    let store = ImageStore::open(&other_root)?;
    let config = fx.dir.join("token.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths": {{"{}": {{"registrytoken": "{TOKEN}"}}}}}}"#,
            front.host
        ),
    )?;
    options.auth_config_path = Some(config);
    let pulled = block_on(store.pull(&reference, &options))?;
    ensure!(pulled.layers[0].join("bin/busybox").is_file());
    drop(front);
    guard.check()
}

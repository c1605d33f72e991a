//! `berth pull`, `push`, `login`, `logout` and the run-time pull against real
//! registries: Debian's `docker-registry` (open, and with htpasswd basic
//! auth), fed and inspected by skopeo; and a tiny hostile registry served
//! from this process that lies about blobs and manifests.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;

use common::registry::{Registry, PASSWORD, USER};
use common::{code, describe, have, lines, skip, stderr, stdout, test_images, Berth};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The tools these tests need; a missing one skips (fails under CI).
fn tools(extra: &[&str]) -> bool {
    for tool in ["docker-registry", "skopeo"].iter().chain(extra) {
        if !have(tool) {
            skip(&format!(
                "{tool} not found: run scripts/setup-host (it installs docker-registry, skopeo and apache2-utils)"
            ));
            return false;
        }
    }
    true
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// A fixture with an empty store.
fn empty_berth() -> Option<Berth> {
    Berth::options().no_image().start()
}

fn image_ids(berth: &Berth) -> Vec<String> {
    lines(&berth.run_ok(&["images", "-q", "--no-trunc"]))
}

/// Files in the store's blob directory (temporary ones included).
fn blob_files(berth: &Berth) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(berth.root.join("data/blobs/sha256"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn pulled_image_runs_and_pushes_with_the_same_digests() {
    if !tools(&[]) {
        return;
    }
    let Some(berth) = empty_berth() else { return };
    let registry = Registry::start(false);
    registry.push_archive(&test_images().oci, "a/b:1");
    let source = format!("{}/a/b:1", registry.host());

    // `run` pulls the missing image by itself, then runs it.
    let out = berth.container(&[&source, "echo", "ok"]);
    assert_eq!(code(&out), 0, "{}", describe(&["run", &source], &out));
    assert_eq!(stdout(&out), "ok\n");
    assert!(stderr(&out).contains("Pull complete"), "{}", stderr(&out));
    assert_eq!(image_ids(&berth), [test_images().id.clone()]);

    let theirs = json_of(&registry.inspect("a/b:1", false));
    let listed = berth.run_ok(&["images", "--digests"]);
    assert!(
        listed.contains(theirs["Digest"].as_str().unwrap()),
        "{listed}"
    );

    // Push to another repository of the same registry: mounted, not uploaded.
    let dest = format!("{}/c/d:2", registry.host());
    let args = ["push", source.as_str(), dest.as_str()];
    let out = berth.cmd(&args);
    assert_eq!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("Mounted from a/b"),
        "{}",
        describe(&args, &out)
    );
    assert!(
        stdout(&out).contains(theirs["Digest"].as_str().unwrap()),
        "push prints the digest: {}",
        describe(&args, &out)
    );
    let pushed = json_of(&registry.inspect("c/d:2", false));
    assert_eq!(pushed["Digest"], theirs["Digest"]);
    assert_eq!(pushed["Layers"], theirs["Layers"]);

    // Pushing again uploads nothing.
    let out = berth.cmd(&args);
    assert_eq!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        !stderr(&out).contains("Pushed") && stderr(&out).contains("already exists"),
        "{}",
        describe(&args, &out)
    );

    // A tag of the pushed copy, by `berth tag` then `berth push REF`.
    let tagged = format!("{}/e/f:3", registry.host());
    berth.run_ok(&["tag", &source, &tagged]);
    berth.run_ok(&["push", "-q", &tagged]);
    assert_eq!(
        json_of(&registry.inspect("e/f:3", false))["Digest"],
        theirs["Digest"]
    );
}

#[test]
fn a_second_pull_transfers_nothing() {
    if !tools(&[]) {
        return;
    }
    let Some(berth) = empty_berth() else { return };
    let registry = Registry::start(false);
    registry.push_archive(&test_images().oci, "a/b:1");
    let image = format!("{}/a/b:1", registry.host());
    let id = berth.run_ok(&["pull", &image]);
    assert_eq!(id.trim(), test_images().id);
    let blob_gets = |log: &str| log.matches("GET /v2/a/b/blobs/").count();
    let first = blob_gets(&registry.log());
    assert!(first >= 3, "config and two layers:\n{}", registry.log());

    let out = berth.cmd(&["pull", &image]);
    assert_eq!(code(&out), 0, "{}", describe(&["pull", &image], &out));
    assert!(
        stderr(&out).contains("Image is up to date"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stderr(&out).matches("Already exists").count(),
        2,
        "{}",
        stderr(&out)
    );
    assert_eq!(
        blob_gets(&registry.log()),
        first,
        "the second pull fetched blobs"
    );

    // By digest, quietly: the id alone on stdout, nothing on stderr.
    let digest = json_of(&registry.inspect("a/b:1", false))["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let by_digest = format!("{}/a/b@{digest}", registry.host());
    let out = berth.cmd(&["pull", "-q", &by_digest]);
    assert_eq!(code(&out), 0, "{}", describe(&["pull", &by_digest], &out));
    assert_eq!(stdout(&out).trim(), test_images().id);
    assert_eq!(stderr(&out), "");
    berth.container_ok(&[&by_digest, "true"]);

    // A tag the registry lacks: a clear error.
    let missing = format!("{}/a/b:nope", registry.host());
    let out = berth.cmd(&["pull", &missing]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn registry_settings_give_mirrors_and_the_search_registry() {
    if !tools(&[]) {
        return;
    }
    let registry = Registry::start(false);
    registry.push_archive(&test_images().oci, "library/app:1");
    let config = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(config.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(config.path().join("berth")).unwrap();
    fs::set_permissions(
        config.path().join("berth"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::write(
        config.path().join("berth/registries.toml"),
        format!(
            "unqualified-search-registries = [\"{host}\"]\n\n\
             [[registry]]\nprefix = \"registry.invalid\"\nlocation = \"registry.invalid\"\n\
             [[registry.mirror]]\nlocation = \"{host}\"\n",
            host = registry.host()
        ),
    )
    .unwrap();
    let Some(berth) = Berth::options()
        .no_image()
        .env("XDG_CONFIG_HOME", &config.path().to_string_lossy())
        .start()
    else {
        return;
    };
    // The mirror serves a registry that does not exist.
    let out = berth.cmd(&["pull", "registry.invalid/library/app:1"]);
    assert_eq!(code(&out), 0, "{}", describe(&["pull"], &out));
    assert!(stderr(&out).contains("from mirror"), "{}", stderr(&out));
    // A short name goes to the search registry.
    let out = berth.cmd(&["run", "--rm", "library/app:1", "echo", "short"]);
    assert_eq!(
        code(&out),
        0,
        "{}",
        describe(&["run", "library/app:1"], &out)
    );
    assert_eq!(stdout(&out), "short\n");
    assert_eq!(image_ids(&berth), [test_images().id.clone()]);

    // A broken settings file is an error that names it.
    fs::write(
        config.path().join("berth/registries.toml"),
        "[[registry]]\nlocation = \"https://x\"\n",
    )
    .unwrap();
    let out = berth.cmd(&["pull", "anything"]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("registries.toml"), "{}", stderr(&out));
}

#[test]
fn login_and_logout_against_a_registry_with_basic_auth() {
    if !tools(&["htpasswd"]) {
        return;
    }
    let Some(berth) = empty_berth() else { return };
    let registry = Registry::start(true);
    registry.push_archive(&test_images().oci, "private/app:1");
    let host = registry.host();
    let image = format!("{host}/private/app:1");
    let auth_file = berth.runtime_dir.join("containers/auth.json");

    let out = berth.cmd(&["pull", &image]);
    assert_ne!(code(&out), 0, "no credentials yet");
    assert!(stderr(&out).contains("berth login"), "{}", stderr(&out));

    let login = ["login", "-u", USER, "--password-stdin", host.as_str()];
    let out = berth.cmd_with_stdin(&login, b"wrong-password\n");
    assert_ne!(code(&out), 0, "{}", describe(&login, &out));
    assert!(
        stderr(&out).contains("refused the user name or password"),
        "{}",
        describe(&login, &out)
    );
    assert!(!auth_file.exists(), "a failed login saves nothing");

    let out = berth.cmd_with_stdin(&login, format!("{PASSWORD}\n").as_bytes());
    assert_eq!(code(&out), 0, "{}", describe(&login, &out));
    assert!(
        stdout(&out).contains("Login Succeeded"),
        "{}",
        describe(&login, &out)
    );
    for text in [stdout(&out), stderr(&out)] {
        assert!(!text.contains(PASSWORD), "the password was printed");
    }
    let meta = fs::metadata(&auth_file).expect("auth file written");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let saved = json_of(&fs::read(&auth_file).unwrap());
    assert!(saved["auths"][&host]["auth"].is_string(), "{saved}");

    // skopeo reads berth's auth file.
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--authfile"])
        .arg(&auth_file)
        .arg(format!("docker://{image}"))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = berth.cmd(&["pull", &image]);
    assert_eq!(code(&out), 0, "{}", describe(&["pull", &image], &out));
    for text in [stdout(&out), stderr(&out)] {
        assert!(!text.contains(PASSWORD), "the password was printed");
    }
    let dest = format!("{host}/private/copy:1");
    berth.run_ok(&["push", &image, &dest]);

    let out = berth.run_ok(&["logout", &host]);
    assert!(out.contains(&host), "{out}");
    let saved = json_of(&fs::read(&auth_file).unwrap());
    assert!(saved["auths"].get(&host).is_none(), "{saved}");
    let out = berth.cmd(&["logout", &host]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("not logged in"), "{}", stderr(&out));
    berth.run_ok(&["rmi", &image]);
    let out = berth.cmd(&["pull", &image]);
    assert_ne!(code(&out), 0, "logged out: {}", describe(&["pull"], &out));
}

/// The OCI platform name of this machine, and another one.
fn platforms() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    }
}

#[test]
fn a_multi_platform_index_pulls_the_platform_asked_for() {
    if !tools(&["curl"]) {
        return;
    }
    let Some(berth) = empty_berth() else { return };
    let registry = Registry::start(false);
    let (native, other) = platforms();
    registry.push_archive(&test_images().oci, &format!("multi/app:{native}"));
    registry.push_archive(&test_images().config_oci, &format!("multi/app:{other}"));
    let entry = |tag: &str, arch: &str, variant: Option<&str>| {
        let raw = registry.inspect(&format!("multi/app:{tag}"), true);
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        json!({
            "mediaType": json_of(&raw)["mediaType"],
            "digest": sha256(&raw),
            "size": raw.len(),
            "platform": platform,
        })
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry(other, other, (other == "arm64").then_some("v8")),
            entry(native, native, None),
        ],
    });
    let url = format!("http://{}/v2/multi/app/manifests/multi", registry.host());
    let out = Command::new("curl")
        .args(["-fsS", "-X", "PUT", "-H"])
        .arg("Content-Type: application/vnd.oci.image.index.v1+json")
        .arg("--data-binary")
        .arg(index.to_string())
        .arg(&url)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "PUT index: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let image = format!("{}/multi/app:multi", registry.host());
    let other_manifest = json_of(&registry.inspect(&format!("multi/app:{other}"), true));
    let config_id = other_manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let id = berth.run_ok(&[
        "pull",
        "-q",
        "--platform",
        &format!("linux/{other}"),
        &image,
    ]);
    assert_eq!(id.trim(), config_id, "--platform linux/{other}");
    // The host's platform by default.
    let id = berth.run_ok(&["pull", "-q", &image]);
    assert_eq!(id.trim(), test_images().id);
    berth.container_ok(&[&image, "true"]);

    let out = berth.cmd(&["pull", "--platform", "linux/s390x", &image]);
    assert_ne!(code(&out), 0);
    let err = stderr(&out);
    assert!(
        err.contains("no image for linux/s390x") && err.contains(&format!("linux/{native}")),
        "{err}"
    );
    let out = berth.cmd(&["pull", "--platform", "linux", &image]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("os/arch"), "{}", stderr(&out));
}

// ----------------------------------------------------------- hostile registry

/// What the hostile registry does wrong.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// A layer with the right length and the wrong bytes.
    WrongBlob,
    /// A layer cut short (Content-Length says the full size).
    TruncatedBlob,
    /// A manifest of a media type no one knows.
    UnknownManifestType,
    /// The first download of the layer sends half and then nothing (a pull to interrupt);
    /// later ones are honest.
    StallOnce,
}

/// Whether the StallOnce registry has stalled its one download yet.
static STALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A one-image registry on 127.0.0.1 that tells `lie`; returns its host.
fn hostile_registry(lie: Lie) -> String {
    let layer = b"pretend this is a layer tarball, it never gets unpacked".repeat(100);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
        "config": {},
    }))
    .unwrap();
    let media_type = match lie {
        Lie::UnknownManifestType => "application/vnd.example.unknown+json",
        _ => "application/vnd.oci.image.manifest.v1+json",
    };
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let host = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (manifest, config, layer) = (manifest.clone(), config.clone(), layer.clone());
            thread::spawn(move || serve(stream, lie, media_type, &manifest, &config, &layer));
        }
    });
    host
}

fn serve(
    stream: TcpStream,
    lie: Lie,
    media_type: &str,
    manifest: &[u8],
    config: &[u8],
    layer: &[u8],
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let head = request.starts_with("HEAD");
    let mut out = stream;
    let send = |out: &mut TcpStream, status: &str, ctype: &str, body: &[u8], length: usize| {
        let header = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        );
        let _ = out.write_all(header.as_bytes());
        if !head {
            let _ = out.write_all(body);
        }
    };
    if path == "/v2/" {
        send(&mut out, "200 OK", "application/json", b"{}", 2);
    } else if path.starts_with("/v2/h/x/manifests/") {
        send(&mut out, "200 OK", media_type, manifest, manifest.len());
    } else if path.ends_with(&sha256(config)) {
        send(
            &mut out,
            "200 OK",
            "application/octet-stream",
            config,
            config.len(),
        );
    } else if path.ends_with(&sha256(layer)) {
        match lie {
            Lie::WrongBlob => {
                let mut wrong = layer.to_vec();
                wrong[10] ^= 0xff;
                send(
                    &mut out,
                    "200 OK",
                    "application/octet-stream",
                    &wrong,
                    wrong.len(),
                );
            }
            Lie::TruncatedBlob => {
                let half = &layer[..layer.len() / 2];
                send(
                    &mut out,
                    "200 OK",
                    "application/octet-stream",
                    half,
                    layer.len(),
                );
            }
            Lie::StallOnce if !STALLED.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                let half = &layer[..layer.len() / 2];
                send(
                    &mut out,
                    "200 OK",
                    "application/octet-stream",
                    half,
                    layer.len(),
                );
                let _ = out.flush();
                thread::sleep(Duration::from_secs(120));
            }
            Lie::UnknownManifestType | Lie::StallOnce => send(
                &mut out,
                "200 OK",
                "application/octet-stream",
                layer,
                layer.len(),
            ),
        }
    } else {
        let body = br#"{"errors":[{"code":"NOT_FOUND","message":"no"}]}"#;
        send(
            &mut out,
            "404 Not Found",
            "application/json",
            body,
            body.len(),
        );
    }
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Both);
}

fn hostile_pull(lie: Lie, expect: &[&str]) {
    let Some(berth) = empty_berth() else { return };
    let host = hostile_registry(lie);
    let image = format!("{host}/h/x:1");
    for args in [
        vec!["pull", image.as_str()],
        vec!["run", "--rm", image.as_str(), "true"],
    ] {
        let out = berth.cmd(&args);
        assert_ne!(code(&out), 0, "{lie:?}: {}", describe(&args, &out));
        let err = stderr(&out);
        for e in expect {
            assert!(
                err.contains(e),
                "{lie:?}: expected \"{e}\" in: {}",
                describe(&args, &out)
            );
        }
        assert!(
            image_ids(&berth).is_empty(),
            "{lie:?}: an image was recorded"
        );
        // Nothing under the layer's digest, no temporary file left.
        let files = blob_files(&berth);
        assert!(
            files.iter().all(|f| !f.starts_with('.')),
            "{lie:?}: temporary files: {files:?}"
        );
        assert!(
            files.len() <= 1,
            "{lie:?}: only the (verified) config may stay: {files:?}"
        );
    }
}

#[test]
fn a_blob_with_the_wrong_digest_is_refused() {
    hostile_pull(Lie::WrongBlob, &["should have digest", "tampered"]);
}

#[test]
fn a_truncated_blob_is_refused() {
    hostile_pull(Lie::TruncatedBlob, &["truncated"]);
}

#[test]
fn a_manifest_of_an_unknown_media_type_is_refused() {
    hostile_pull(
        Lie::UnknownManifestType,
        &["application/vnd.example.unknown+json", "does not support"],
    );
}

#[test]
fn an_interrupted_pull_restarts_cleanly() {
    let Some(berth) = empty_berth() else { return };
    let host = hostile_registry(Lie::StallOnce);
    let image = format!("{host}/h/x:1");
    let pull = berth.spawn(&["pull", &image]);
    // The layer's download is under way once the registry has stalled it and its temporary
    // file is there (the config's temporary file alone comes earlier).
    let started = std::time::Instant::now();
    while !(STALLED.load(std::sync::atomic::Ordering::SeqCst)
        && blob_files(&berth).iter().any(|f| f.starts_with('.')))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the pull never started the layer: {:?}",
            blob_files(&berth)
        );
        thread::sleep(Duration::from_millis(20));
    }
    pull.signal(Signal::SIGKILL);
    let _ = pull.wait(Duration::from_secs(30));
    assert!(
        image_ids(&berth).is_empty(),
        "a killed pull recorded an image"
    );

    let id = berth.run_ok(&["pull", "-q", &image]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let files = blob_files(&berth);
    assert!(
        files.iter().all(|f| !f.starts_with('.')),
        "temporary files left: {files:?}"
    );
    assert_eq!(files.len(), 3, "manifest, config and layer: {files:?}");
    berth.run_ok(&["image", "inspect", &image]);
}

#[test]
fn prune_removes_untagged_images_only() {
    let Some(berth) = Berth::new() else { return };
    // Nothing to prune: the test image has a name.
    let out = berth.run_ok(&["image", "prune", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(image_ids(&berth), [test_images().id.clone()]);
    // Loaded again under another name, then the names go: untagged.
    berth.run_ok(&["tag", common::IMAGE, "localhost/other:1"]);
    berth.run_ok(&["run", "--name", "keeps-it", common::IMAGE, "true"]);
    let out = berth.run_ok(&["image", "prune", "-a"]);
    assert!(!out.contains("deleted:"), "a container uses it: {out}");
    berth.run_ok(&["rm", "keeps-it"]);
    let out = berth.run_ok(&["image", "prune", "-a"]);
    assert!(
        out.contains(&format!("deleted: {}", test_images().id)),
        "{out}"
    );
    assert!(image_ids(&berth).is_empty());
    assert!(blob_files(&berth).is_empty(), "{:?}", blob_files(&berth));
    let layers: Vec<PathBuf> = fs::read_dir(berth.root.join("data/layers"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        layers.iter().all(|p| !p.is_dir()),
        "unpacked layers left: {layers:?}"
    );
}

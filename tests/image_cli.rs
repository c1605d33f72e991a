//! `berth image tag|rm|inspect|history|save` through the real binary, and
//! `berth save` archives checked with skopeo and podman.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::image::CONFIG_ENTRYPOINT;
use common::{
    ci, code, describe, have, lines, skip, stderr, stdout, test_images, Berth, CONFIG_IMAGE, IMAGE,
};
use serde_json::Value;

fn inspect(berth: &Berth, reference: &str) -> Value {
    let out = berth.run_ok(&["image", "inspect", reference]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let arr = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {out}"));
    assert_eq!(arr.len(), 1, "{out}");
    arr[0].clone()
}

fn image_ids(berth: &Berth) -> Vec<String> {
    lines(&berth.run_ok(&["images", "-q", "--no-trunc"]))
}

fn blobs(berth: &Berth) -> Vec<String> {
    let dir = berth.root.join("data/blobs/sha256");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn layer_dir(berth: &Berth, diff_id: &str) -> PathBuf {
    berth
        .root
        .join("data/layers")
        .join(diff_id.trim_start_matches("sha256:"))
}

fn diff_ids(info: &Value) -> Vec<String> {
    info["RootFS"]["Layers"]
        .as_array()
        .expect("RootFS.Layers")
        .iter()
        .map(|l| l.as_str().expect("diff id").to_string())
        .collect()
}

#[test]
fn tag_then_run_by_the_new_name() {
    let Some(berth) = Berth::new() else { return };
    let out = berth.run_ok(&["image", "tag", IMAGE, "localhost/renamed:v1"]);
    assert_eq!(out, "", "tag prints nothing, as Docker");
    // Without a tag, `latest`.
    berth.run_ok(&["image", "tag", "localhost/renamed:v1", "plain"]);
    let text = berth.container_ok(&["localhost/renamed:v1", "cat", "/data/added"]);
    assert_eq!(text, "added by layer 2\n");
    berth.container_ok(&["plain:latest", "true"]);
    let info = inspect(&berth, "plain");
    assert_eq!(info["Id"], test_images().id.as_str());
    let tags: Vec<&str> = info["RepoTags"]
        .as_array()
        .expect("RepoTags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for t in [IMAGE, "localhost/renamed:v1", "plain:latest"] {
        assert!(tags.contains(&t), "{t} in {tags:?}");
    }
    assert_eq!(image_ids(&berth), [test_images().id.clone()]);

    let args = ["image", "tag", "localhost/nothere:1", "x"];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("nothere"),
        "{}",
        describe(&args, &out)
    );
}

#[test]
fn rmi_refuses_an_image_a_container_uses_until_forced() {
    let Some(berth) = Berth::new() else { return };
    let info = inspect(&berth, IMAGE);
    berth.run_ok(&["run", "--name", "user-of-image", IMAGE, "true"]);
    let layers = diff_ids(&info);
    assert!(
        layer_dir(&berth, &layers[0]).is_dir(),
        "run unpacked layer 1"
    );

    for target in [IMAGE, &test_images().id[7..19]] {
        let args = ["image", "rm", target];
        let out = berth.cmd(&args);
        assert_ne!(code(&out), 0, "{}", describe(&args, &out));
        assert!(
            stderr(&out).contains("conflict") && stderr(&out).contains("container"),
            "the refusal names the container:\n{}",
            describe(&args, &out)
        );
    }
    assert_eq!(image_ids(&berth), [test_images().id.clone()]);

    let out = berth.run_ok(&["image", "rm", "-f", IMAGE]);
    assert_eq!(
        lines(&out),
        [
            format!("Untagged: {IMAGE}"),
            format!("Deleted: {}", test_images().id)
        ],
        "Docker's rmi output"
    );
    assert!(image_ids(&berth).is_empty());
    assert!(blobs(&berth).is_empty(), "left blobs: {:?}", blobs(&berth));
    for l in &layers {
        assert!(
            !layer_dir(&berth, l).exists(),
            "unpacked layer {l} of the removed image is still there"
        );
    }
    // The container stays, as with Docker.
    berth.run_ok(&["rm", "user-of-image"]);

    let args = ["image", "rm", IMAGE];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
}

#[test]
fn rmi_keeps_what_another_image_shares() {
    let Some(berth) = Berth::new() else { return };
    berth.load_config_image();
    berth.container_ok(&[IMAGE, "true"]);
    let before = blobs(&berth);
    let layers = diff_ids(&inspect(&berth, IMAGE));
    assert_eq!(layers, diff_ids(&inspect(&berth, CONFIG_IMAGE)));

    // A name of several only untags.
    berth.run_ok(&["image", "tag", IMAGE, "localhost/second:1"]);
    let out = berth.run_ok(&["image", "rm", "localhost/second:1"]);
    assert_eq!(lines(&out), ["Untagged: localhost/second:1"]);
    assert_eq!(blobs(&berth), before);

    let out = berth.run_ok(&["image", "rm", IMAGE]);
    assert!(
        out.contains(&format!("Deleted: {}", test_images().id)),
        "{out}"
    );
    // Only the config and manifest of the removed image go; the layers are shared.
    let after = blobs(&berth);
    assert_eq!(after.len(), before.len() - 2, "{before:?} -> {after:?}");
    assert!(!after.contains(&test_images().id[7..].to_string()));
    for l in &layers {
        assert!(layer_dir(&berth, l).is_dir(), "shared layer {l} removed");
    }
    let text = berth.container_ok(&["--entrypoint", "cat", CONFIG_IMAGE, "/data/added"]);
    assert_eq!(text, "added by layer 2\n");
}

#[test]
fn image_inspect_is_shaped_like_docker() {
    let Some(berth) = Berth::new() else { return };
    berth.load_config_image();
    let info = inspect(&berth, CONFIG_IMAGE);
    assert_eq!(info["RepoTags"], serde_json::json!([CONFIG_IMAGE]));
    let digests = info["RepoDigests"].as_array().expect("RepoDigests");
    assert!(
        digests.iter().all(|d| d
            .as_str()
            .unwrap_or_default()
            .starts_with("localhost/berth-test-config@sha256:")),
        "{digests:?}"
    );
    assert_eq!(info["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(info["Os"], "linux");
    assert!(info["Architecture"].as_str().is_some_and(|a| !a.is_empty()));
    assert!(info["Size"].as_u64().is_some_and(|s| s > 0));
    let config = &info["Config"];
    assert_eq!(config["Entrypoint"], serde_json::json!(CONFIG_ENTRYPOINT));
    assert_eq!(config["Cmd"], serde_json::json!(["default-cmd"]));
    assert_eq!(config["WorkingDir"], "/data");
    assert_eq!(config["User"], "user");
    assert!(config["Labels"].is_null());
    assert!(config["Env"]
        .as_array()
        .expect("Env")
        .contains(&Value::from("IMAGE_VAR=from-image")));
    assert_eq!(info["RootFS"]["Type"], "layers");
    assert_eq!(diff_ids(&info).len(), 2);

    let plain = inspect(&berth, &test_images().id);
    assert_eq!(plain["Id"], test_images().id.as_str());
    assert!(plain["Config"]["Entrypoint"].is_null());
    assert_eq!(plain["Config"]["WorkingDir"], "");

    let args = ["image", "inspect", IMAGE, "localhost/nothere:1"];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("JSON even on error");
    assert_eq!(
        v.as_array().map(Vec::len),
        Some(1),
        "{}",
        describe(&args, &out)
    );
    assert!(stderr(&out).contains("nothere"));
}

#[test]
fn history_rows_newest_first() {
    let Some(berth) = Berth::new() else { return };
    let out = berth.run_ok(&["image", "history", IMAGE]);
    let rows = lines(&out);
    let header: Vec<&str> = rows[0]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        "{out}"
    );
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows[1].starts_with(&test_images().id[7..19]), "{out}");
    assert!(rows[1].contains("berth tests: whiteouts"), "{out}");
    assert!(rows[2].starts_with("<missing>"), "{out}");
    assert!(rows[2].contains("berth tests: busybox"), "{out}");
    // Layer 1 holds busybox: megabytes.
    assert!(rows[2].contains("MB"), "{out}");

    let out = berth.run_ok(&["image", "history", "-q", "--no-trunc", IMAGE]);
    assert_eq!(lines(&out), [test_images().id.clone(), "<missing>".into()]);
}

/// Saves IMAGE in `format` (None: the default) and returns the archive path.
fn save(berth: &Berth, format: Option<&str>, name: &str) -> PathBuf {
    let path = berth.host_path(name);
    let p = path.to_string_lossy().into_owned();
    let mut args = vec!["image", "save", "-o", &p];
    if let Some(f) = format {
        args.extend(["--format", f]);
    }
    args.push(IMAGE);
    let out = berth.run_ok(&args);
    assert_eq!(out, "", "save -o prints nothing");
    let leftovers: Vec<_> = fs::read_dir(&berth.host_dir)
        .expect("host dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    path
}

/// A copy of `src` the fixture's user can read, in its host directory.
fn hand_over(berth: &Berth, src: &Path, name: &str) -> PathBuf {
    let dest = berth.host_path(name);
    fs::copy(src, &dest).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).expect("chmod");
    dest
}

#[test]
fn save_in_both_formats_loads_back_with_the_same_id() {
    let Some(berth) = Berth::new() else { return };
    let docker = save(&berth, None, "docker.tar");
    let oci = save(&berth, Some("oci-archive"), "oci.tar");
    let explicit = save(&berth, Some("docker-archive"), "docker2.tar");
    assert_eq!(fs::read(&docker).ok(), fs::read(&explicit).ok());
    let tar = fs::read(&docker).expect("archive");
    assert!(tar.windows(13).any(|w| w == b"manifest.json"));

    for archive in [&docker, &oci] {
        let Some(fresh) = Berth::options().no_image().start() else {
            return;
        };
        let copy = hand_over(&fresh, archive, "in.tar");
        let out = fresh.load(&copy);
        assert!(out.contains(&format!("Loaded image: {IMAGE}")), "{out}");
        assert_eq!(image_ids(&fresh), [test_images().id.clone()]);
        let text = fresh.container_ok(&[IMAGE, "cat", "/data/added"]);
        assert_eq!(text, "added by layer 2\n");
    }

    let args = ["image", "save", "-o", "x.tar", "--format", "zip", IMAGE];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(!berth.host_path("x.tar").exists());
    let args = ["image", "save", "-o", "x.tar", "localhost/nothere:1"];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(!berth.host_path("x.tar").exists());

    // Without -o, to a pipe.
    let out = berth.cmd(&["image", "save", IMAGE]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(Some(out.stdout), fs::read(&docker).ok());
}

/// Whether interop tests can run; under CI a missing tool fails.
fn tool(name: &str) -> bool {
    if have(name) {
        return true;
    }
    let reason = format!("{name} is not installed: run scripts/setup-host");
    if ci() {
        panic!("{reason} (CI=true)");
    }
    skip(&reason);
    false
}

fn run_tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo_inspect(transport: &str, archive: &Path, raw: bool) -> Value {
    let mut cmd = Command::new("skopeo");
    cmd.arg("inspect");
    if raw {
        cmd.arg("--raw");
    }
    cmd.arg(format!("{transport}:{}", archive.display()));
    let out = run_tool(&mut cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn skopeo_reads_what_berth_saves() {
    if !tool("skopeo") {
        return;
    }
    let Some(berth) = Berth::new() else { return };
    let docker = save(&berth, None, "docker.tar");
    let oci = save(&berth, Some("oci-archive"), "oci.tar");
    let info = inspect(&berth, IMAGE);

    // docker-archive layers are uncompressed: their digests are the diff ids.
    let d = skopeo_inspect("docker-archive", &docker, false);
    assert_eq!(d["Layers"], info["RootFS"]["Layers"], "{d}");
    let raw = skopeo_inspect("docker-archive", &docker, true);
    assert_eq!(raw["config"]["digest"], test_images().id.as_str());

    // oci-archive keeps the blobs as loaded: the same digests as the source archive.
    let o = skopeo_inspect("oci-archive", &oci, false);
    let src = skopeo_inspect("oci-archive", &test_images().oci, false);
    assert_eq!(o["Layers"], src["Layers"], "{o}");
    assert_eq!(
        o["Digest"], src["Digest"],
        "the manifest is kept byte for byte"
    );
    let raw = skopeo_inspect("oci-archive", &oci, true);
    assert_eq!(raw["config"]["digest"], test_images().id.as_str());
}

/// podman as root with private storage under a temp dir: no host state touched.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn cmd(&self, args: &[&str]) -> String {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .args(args)
            .env("TMPDIR", d);
        run_tool(&mut cmd)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // vfs layers may hold read-only directories; root removes them anyway.
        let _ = Command::new("rm").arg("-rf").arg(self.dir.path()).status();
    }
}

#[test]
fn podman_loads_what_berth_saves_and_berth_loads_what_podman_saves() {
    if !tool("podman") {
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        skip("podman with private storage runs as root here; the suite is not root");
        return;
    }
    let Some(berth) = Berth::new() else { return };
    let docker = save(&berth, None, "docker.tar");
    let oci = save(&berth, Some("oci-archive"), "oci.tar");
    let hex = test_images().id.trim_start_matches("sha256:").to_string();

    for (archive, format) in [(&docker, "docker-archive"), (&oci, "oci-archive")] {
        let podman = Podman::new();
        let out = podman.cmd(&["load", "-i", &archive.to_string_lossy()]);
        assert!(out.contains("berth-test"), "podman load: {out}");
        let ids = podman.cmd(&["images", "--no-trunc", "--format", "{{.ID}}"]);
        assert!(
            ids.contains(&hex),
            "podman load of berth's {format} keeps the image id {hex}: {ids}"
        );

        // And back: podman's archive of that image loads in berth.
        let back = podman.dir.path().join(format!("podman-{format}.tar"));
        podman.cmd(&[
            "save",
            "--format",
            format,
            "-o",
            &back.to_string_lossy(),
            IMAGE,
        ]);
        let Some(fresh) = Berth::options().no_image().start() else {
            return;
        };
        let copy = hand_over(&fresh, &back, "from-podman.tar");
        let out = fresh.load(&copy);
        assert!(
            out.contains("berth-test"),
            "berth load of podman's {format}: {out}"
        );
        assert_eq!(image_ids(&fresh), [test_images().id.clone()], "{format}");
        let text = fresh.container_ok(&[IMAGE, "cat", "/data/added"]);
        assert_eq!(text, "added by layer 2\n");
    }
}

/// `images --format` prints what the template says (Docker's fields, `table` and `json`), an
/// unknown field is an error, and `image inspect -f` takes a template as `inspect -f` does.
#[test]
fn images_and_image_inspect_follow_the_format() {
    let Some(berth) = Berth::new() else { return };
    let out = berth.run_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(out, format!("{IMAGE}\n"));
    let out = berth.run_ok(&["images", "--format", "table {{.Repository}}\t{{.ID}}"]);
    let hex = test_images().id.trim_start_matches("sha256:").to_string();
    assert_eq!(
        lines(&out),
        [
            "REPOSITORY             IMAGE ID".to_string(),
            format!("localhost/berth-test   {}", &hex[..12]),
        ]
    );
    let out = berth.run_ok(&["images", "--format", "json"]);
    let row: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(row["Repository"], "localhost/berth-test");
    assert_eq!(row["Tag"], "latest");
    for args in [
        &["images", "--format", "{{.Nope}}"][..],
        &["image", "inspect", "-f", "{{.Nope}}", IMAGE],
    ] {
        let out = berth.cmd(args);
        assert_eq!(code(&out), 1, "{}", describe(args, &out));
        assert!(stderr(&out).contains("Nope"), "{}", describe(args, &out));
        assert!(
            !stdout(&out).contains("REPOSITORY"),
            "{}",
            describe(args, &out)
        );
    }
    let id = berth.run_ok(&["image", "inspect", "-f", "{{.Id}}", IMAGE]);
    assert_eq!(id, format!("{}\n", test_images().id));
    assert_eq!(berth.run_ok(&["inspect", "-f", "{{.Id}}", IMAGE]), id);
}

/// A typo in a local image's name says which name was likely meant, and apart and truly why
/// the pull failed (here: nothing listens at the registry's port), without TLS advice.
#[test]
fn a_misspelt_local_image_names_the_one_meant() {
    let Some(berth) = Berth::new() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let local = format!("localhost:{port}/bars/debian:12");
    berth.run_ok(&["tag", IMAGE, &local]);
    let typo = format!("localhost:{port}/bars/debain:12");
    let args = ["run", "--rm", &typo, "true"];
    let out = berth.cmd(&args);
    assert_eq!(code(&out), 125, "{}", describe(&args, &out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "no such image locally: {typo} (did you mean {local}?)"
        )),
        "{}",
        describe(&args, &out)
    );
    assert!(err.contains("connection refused"), "{err}");
    assert!(!err.contains("TLS") && !err.contains("insecure"), "{err}");
    // Nothing close: no suggestion, the pull's failure still told.
    let args = ["run", "--rm", &format!("localhost:{port}/zzz"), "true"];
    let out = berth.cmd(&args);
    assert_eq!(code(&out), 125, "{}", describe(&args, &out));
    assert!(
        !stderr(&out).contains("did you mean"),
        "{}",
        describe(&args, &out)
    );
    assert!(
        stderr(&out).contains("connection refused"),
        "{}",
        describe(&args, &out)
    );
}

/// SIZE is one thing in every store: the image's layers uncompressed (Docker's), whether the
/// image came gzip-compressed (the fixture, an oci-archive) or uncompressed (a docker-archive).
#[test]
fn size_is_the_same_after_save_and_load() {
    let Some(berth) = Berth::new() else { return };
    let size = |b: &Berth| {
        let listed = b.run_ok(&["images", "--format", "{{.Size}}"]);
        let inspected = b.run_ok(&["image", "inspect", "-f", "{{.Size}}", IMAGE]);
        (listed, inspected.trim().parse::<u64>().unwrap())
    };
    let original = size(&berth);
    for format in ["docker-archive", "oci-archive"] {
        let archive = save(&berth, Some(format), &format!("size-{format}.tar"));
        if format == "docker-archive" {
            // Its layers are the uncompressed tars: their sizes add up to SIZE.
            let mut tar = tar::Archive::new(fs::File::open(&archive).unwrap());
            let layers: u64 = tar
                .entries()
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.path().unwrap().to_string_lossy().ends_with(".tar"))
                .map(|e| e.size())
                .sum();
            assert_eq!(original.1, layers, "SIZE is the layers uncompressed");
        }
        let Some(fresh) = Berth::options().no_image().start() else {
            return;
        };
        let copy = hand_over(&fresh, &archive, "size.tar");
        fresh.load(&copy);
        assert_eq!(size(&fresh), original, "{format}");
    }
}

//! `berth load` and `berth images`: archives written by the harness, by
//! skopeo (the demo script's method), in both formats.

mod common;

use std::path::Path;
use std::process::Command;

use common::{code, describe, have, lines, skip, stderr, test_images, Berth, DOCKER_IMAGE, IMAGE};

/// One row of `berth images`.
#[derive(Debug)]
struct Row {
    repository: String,
    tag: String,
    id: String,
    size: String,
}

fn images(berth: &Berth) -> Vec<Row> {
    let out = berth.run_ok(&["images"]);
    let mut rows = lines(&out).into_iter();
    let header = rows.next().unwrap_or_default();
    let columns: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        "`berth images` header:\n{out}"
    );
    rows.map(|row| {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert!(
            cells.len() >= 5,
            "`berth images` row with fewer than 5 columns: {row:?}\n{out}"
        );
        Row {
            repository: cells[0].to_string(),
            tag: cells[1].to_string(),
            id: cells[2].to_string(),
            size: cells[cells.len() - 2..].join(" "),
        }
    })
    .collect()
}

fn find<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    let (repo, tag) = name.rsplit_once(':').expect("name with a tag");
    rows.iter()
        .find(|r| r.repository == repo && r.tag == tag)
        .unwrap_or_else(|| panic!("{name} is not listed by `berth images`: {rows:#?}"))
}

fn short_id(image_id: &str) -> String {
    image_id.trim_start_matches("sha256:")[..12].to_string()
}

#[test]
fn load_oci_archive_then_images_lists_it() {
    let Some(berth) = Berth::options().no_image().start() else {
        return;
    };
    let out = berth.load(&test_images().oci);
    assert!(
        out.contains(&format!("Loaded image: {IMAGE}")),
        "berth load output:\n{out}"
    );

    let rows = images(&berth);
    let row = find(&rows, IMAGE);
    assert_eq!(
        row.id,
        short_id(&test_images().id),
        "IMAGE ID is the config digest's first 12 hex digits"
    );
    assert!(
        row.size.chars().any(|c| c.is_ascii_digit()),
        "SIZE has no number: {row:?}"
    );
}

#[test]
fn load_docker_archive_gives_the_same_image() {
    let Some(berth) = Berth::new() else { return };
    let out = berth.load(&test_images().docker);
    assert!(
        out.contains(&format!("Loaded image: {DOCKER_IMAGE}")),
        "berth load output:\n{out}"
    );

    let rows = images(&berth);
    let (oci, docker) = (find(&rows, IMAGE), find(&rows, DOCKER_IMAGE));
    assert_eq!(
        oci.id, docker.id,
        "one config, one image id, whatever the archive format"
    );
    let text = berth.container_ok(&[DOCKER_IMAGE, "cat", "/data/added"]);
    assert_eq!(text, "added by layer 2\n");
}

#[test]
fn loading_twice_is_harmless() {
    let Some(berth) = Berth::new() else { return };
    berth.load(&test_images().oci);
    let rows = images(&berth);
    assert_eq!(
        rows.iter()
            .filter(|r| r.repository == "localhost/berth-test")
            .count(),
        1,
        "{rows:#?}"
    );
    berth.container_ok(&[IMAGE, "true"]);
}

#[test]
fn load_of_a_missing_or_broken_archive_fails_with_a_message() {
    let Some(berth) = Berth::options().no_image().start() else {
        return;
    };
    let missing = berth.host_path("no-such.tar");
    let args = ["load", "-i", missing.to_str().unwrap_or_default()];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("no-such.tar"),
        "the error names the file:\n{}",
        describe(&args, &out)
    );

    let junk = berth.host_file("junk.tar", "this is not a tar archive");
    let args = ["load", "-i", junk.to_str().unwrap_or_default()];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        !stderr(&out).trim().is_empty(),
        "a failed load says why:\n{}",
        describe(&args, &out)
    );
    assert!(
        lines(&berth.run_ok(&["images"])).len() <= 1,
        "a failed load leaves no image"
    );
}

#[test]
fn run_of_an_unknown_image_says_so() {
    let Some(berth) = Berth::new() else { return };
    let args = ["run", "--rm", "localhost/no-such-image:latest", "true"];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("no-such-image"),
        "{}",
        describe(&args, &out)
    );
}

/// Archives written by skopeo from an umoci-built layout: what real tools produce.
#[test]
fn load_archives_written_by_skopeo() {
    if !have("umoci") || !have("skopeo") {
        skip("umoci or skopeo missing: run scripts/setup-host");
        return;
    }
    let Some(berth) = Berth::options().no_image().start() else {
        return;
    };
    let dir = berth.host_mkdir("demo");
    build_demo_image(&dir);

    let out = berth.load(&dir.join("busybox-oci.tar"));
    assert!(
        out.contains("Loaded image: localhost/berth-demo:latest"),
        "berth load output:\n{out}"
    );
    let rows = images(&berth);
    let oci_id = find(&rows, "localhost/berth-demo:latest").id.clone();

    let text = berth.container_ok(&["localhost/berth-demo", "cat", "/etc/motd"]);
    assert_eq!(text, "Welcome to a berth demo container.\n");
    let gone = berth.container(&[
        "localhost/berth-demo",
        "test",
        "-e",
        "/etc/removed-by-layer2",
    ]);
    assert_eq!(
        code(&gone),
        1,
        "the second layer's whiteout deletes /etc/removed-by-layer2"
    );
    let id = berth.container_ok(&["-u", "user", "localhost/berth-demo", "id"]);
    assert!(
        id.starts_with("uid=1000(user) gid=1000(user)"),
        "id as user: {id}"
    );

    // The docker-archive of the same image replaces the tag with the same content.
    let out = berth.load(&dir.join("busybox-docker.tar"));
    assert!(
        out.contains("localhost/berth-demo"),
        "berth load output:\n{out}"
    );
    let rows = images(&berth);
    assert_eq!(
        find(&rows, "localhost/berth-demo:latest").id,
        oci_id,
        "same config, same id"
    );
    berth.container_ok(&[
        "localhost/berth-demo",
        "echo",
        "hello from a rootless container",
    ]);
}

fn build_demo_image(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-demo-image");
    let out = Command::new(&script)
        .arg(dir)
        .output()
        .expect("running scripts/build-demo-image");
    assert!(
        out.status.success(),
        "scripts/build-demo-image failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The harness's own archives, checked with other tools, so a failure in
/// the tests above points at berth and not at the fixture.
#[test]
fn harness_archives_are_valid_for_skopeo_and_umoci() {
    if !have("umoci") || !have("skopeo") {
        skip("umoci or skopeo missing: run scripts/setup-host");
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let images = test_images();
    for (archive, transport) in [
        (&images.oci, "oci-archive"),
        (&images.docker, "docker-archive"),
    ] {
        let status = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--quiet"])
            .arg(format!("{transport}:{}", archive.display()))
            .arg(format!("oci:{}:{transport}", layout.display()))
            .status()
            .expect("skopeo");
        assert!(status.success(), "skopeo cannot read {}", archive.display());
    }
    let bundle = work.path().join("bundle");
    let mut unpack = Command::new("umoci");
    unpack.arg("unpack");
    if !nix::unistd::Uid::effective().is_root() {
        unpack.arg("--rootless");
    }
    let status = unpack
        .arg("--image")
        .arg(format!("{}:oci-archive", layout.display()))
        .arg(&bundle)
        .status()
        .expect("umoci");
    assert!(status.success(), "umoci cannot unpack the test image");
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join("bin/busybox").is_file());
    assert!(rootfs.join("bin/sh").is_symlink());
    assert!(
        !rootfs.join("data/remove-me").exists(),
        "whiteout not applied by umoci"
    );
    let mut dir: Vec<String> = std::fs::read_dir(rootfs.join("data/dir"))
        .expect("data/dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    dir.sort();
    assert_eq!(dir, ["new-b"], "opaque directory not applied by umoci");
}

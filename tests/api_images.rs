//! Images over the Docker Engine API (`berth system service`), driven by the real docker CLI
//! (28.x) through the real socket as the unprivileged test user: listing with formats and
//! filters, inspect, history, tag, rmi, prune, save and load, pull, push and login against a
//! local registry, `docker run` of an image only in the registry, commit, and system df.

mod common;

use common::api::{setup, Service};
use common::registry::{Registry, PASSWORD, USER};
use common::{code, describe, have, lines, skip, stderr, stdout, test_images, Berth, IMAGE};

/// As [`setup`], and a local `docker-registry` (with `auth`, only USER gets in).
fn setup_registry(auth: bool) -> Option<(Berth, Service, Registry)> {
    for tool in ["docker-registry", "skopeo", "htpasswd"] {
        if !have(tool) {
            skip(&format!(
                "{tool} not found: run scripts/setup-host (it installs docker-registry, skopeo and apache2-utils)"
            ));
            return None;
        }
    }
    let (berth, api) = setup()?;
    Some((berth, api, Registry::start(auth)))
}

/// The repositories `docker images --filter FILTER` lists.
fn repositories(berth: &Berth, api: &Service, filter: &str) -> String {
    api.docker_ok(
        berth,
        &["images", "--filter", filter, "--format", "{{.Repository}}"],
    )
}

fn short(id: &str) -> String {
    id.trim_start_matches("sha256:")[..12].to_string()
}

#[test]
fn docker_images_lists_filters_inspects_tags_and_removes() {
    let Some((berth, api)) = setup() else { return };
    let id = &test_images().id;
    let listed = api.docker_ok(
        &berth,
        &["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"],
    );
    assert_eq!(
        listed.trim(),
        format!("localhost/berth-test:latest {}", short(id)),
        "docker images: {listed}"
    );
    // inspect: Docker's fields.
    let shown = api.docker_ok(
        &berth,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{.Os}} {{.RootFS.Type}} {{len .RootFS.Layers}} {{index .RepoTags 0}}",
            IMAGE,
        ],
    );
    assert_eq!(
        shown.trim(),
        format!("{id} linux layers 2 localhost/berth-test:latest"),
        "docker image inspect: {shown}"
    );
    let size: u64 = api
        .docker_ok(
            &berth,
            &["image", "inspect", "--format", "{{.Size}}", IMAGE],
        )
        .trim()
        .parse()
        .expect("a size");
    assert!(size > 0, "an image has a size");

    // tag: a second name for the same image; the reference filter finds it by a pattern.
    api.docker_ok(&berth, &["tag", IMAGE, "example.test/shop/web:v2"]);
    let found = api.docker_ok(
        &berth,
        &[
            "images",
            "--filter",
            "reference=example.test/*/web",
            "--format",
            "{{.Repository}} {{.Tag}}",
        ],
    );
    assert_eq!(found.trim(), "example.test/shop/web v2", "{found}");
    // berth's own CLI filters the same way.
    let cli = berth.run_ok(&[
        "images",
        "--filter",
        "reference=example.test/*/web",
        "--format",
        "{{.Repository}} {{.Tag}}",
    ]);
    assert_eq!(cli, found, "berth images --filter");
    let none = api.docker_ok(
        &berth,
        &["images", "-q", "--filter", "reference=nothing-like-it"],
    );
    assert_eq!(none, "", "no image matches: {none}");
    // One image with two names: both are its RepoTags.
    let tags = api.docker_ok(
        &berth,
        &["image", "inspect", "--format", "{{len .RepoTags}}", IMAGE],
    );
    assert_eq!(tags.trim(), "2");
    // history: the newest row is the image.
    let history = api.docker_ok(
        &berth,
        &["history", "--no-trunc", "--format", "{{.ID}}", IMAGE],
    );
    assert_eq!(
        lines(&history).first().map(String::as_str),
        Some(id.as_str()),
        "{history}"
    );

    // rmi of one name only untags.
    let out = api.docker_ok(&berth, &["rmi", "example.test/shop/web:v2"]);
    assert_eq!(out.trim(), "Untagged: example.test/shop/web:v2", "{out}");
    // A missing image is Docker's 404 text.
    let args = ["rmi", "no-such-image:1"];
    let out = api.docker(&berth, &args);
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("No such image: no-such-image:1"),
        "{}",
        describe(&args, &out)
    );
    // ... which `rmi -f` passes over, as Docker's does.
    api.docker_ok(&berth, &["rmi", "-f", "no-such-image:1"]);
    // rmi of the last name deletes the image; berth's CLI sees the same store.
    let out = api.docker_ok(&berth, &["rmi", IMAGE]);
    assert!(
        out.contains("Untagged: localhost/berth-test:latest"),
        "{out}"
    );
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert_eq!(berth.run_ok(&["images", "-q"]), "");
}

#[test]
fn docker_save_and_load_round_trip_and_prune_takes_dangling_images() {
    let Some((berth, api)) = setup() else { return };
    let id = &test_images().id;
    api.docker_ok(&berth, &["save", "-o", "saved.tar", IMAGE]);
    let tar = berth.host_dir.join("saved.tar");
    assert!(
        std::fs::metadata(&tar).map(|m| m.len()).unwrap_or(0) > 1024,
        "docker save wrote an archive"
    );
    // A missing image is an error, not an empty archive.
    let out = api.docker(&berth, &["save", "-o", "none.tar", "no-such:1"]);
    assert_ne!(code(&out), 0, "{}", describe(&["save"], &out));

    api.docker_ok(&berth, &["rmi", IMAGE]);
    let loaded = api.docker_ok(&berth, &["load", "-i", "saved.tar"]);
    assert_eq!(loaded.trim(), "Loaded image: localhost/berth-test:latest");
    let inspected = api.docker_ok(&berth, &["image", "inspect", "--format", "{{.Id}}", IMAGE]);
    assert_eq!(inspected.trim(), id.as_str());
    // The loaded image runs.
    let out = api.docker(&berth, &["run", "--rm", IMAGE, "echo", "loaded-runs"]);
    assert_eq!(
        stdout(&out),
        "loaded-runs\n",
        "{}",
        describe(&["run"], &out)
    );
    // Garbage is a 4xx/5xx answer and the service serves on.
    let junk = berth.host_file("junk.tar", "not an archive at all");
    let out = api.docker(&berth, &["load", "-i", junk.to_str().unwrap()]);
    assert_ne!(code(&out), 0, "{}", describe(&["load"], &out));

    // A commit without a name dangles; prune takes it and keeps the named image.
    let dangling = api.docker_ok(&berth, &["images", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling, "", "no image dangles yet");
    api.docker_ok(&berth, &["run", "--name", "c", IMAGE, "touch", "/x"]);
    let unnamed = api.docker_ok(&berth, &["commit", "c"]);
    api.docker_ok(&berth, &["rm", "c"]);
    let dangling = api.docker_ok(
        &berth,
        &["images", "--no-trunc", "-q", "--filter", "dangling=true"],
    );
    assert_eq!(
        dangling.trim(),
        unnamed.trim(),
        "the unnamed commit dangles"
    );
    let report = api.docker_ok(&berth, &["image", "prune", "-f"]);
    assert!(
        report.contains(&format!("deleted: {}", unnamed.trim())),
        "{report}"
    );
    assert!(report.contains("Total reclaimed space"), "{report}");
    // A named image is kept by prune without -a, and goes with it.
    assert_eq!(
        api.docker_ok(&berth, &["images", "-q"]).trim(),
        short(id),
        "prune keeps named images"
    );
    let report = api.docker_ok(&berth, &["image", "prune", "-a", "-f"]);
    assert!(report.contains(&format!("deleted: {id}")), "{report}");
    assert_eq!(api.docker_ok(&berth, &["images", "-q"]), "");
}

#[test]
fn docker_login_push_pull_and_run_of_an_image_only_in_the_registry() {
    let Some((berth, api, registry)) = setup_registry(true) else {
        return;
    };
    let host = registry.host();
    // Wrong credentials are refused; the right ones are accepted and kept by the client.
    let out = api.docker_with_stdin(
        &berth,
        &["login", "-u", USER, "--password-stdin", &host],
        b"wrong-password\n",
    );
    assert_ne!(code(&out), 0, "{}", describe(&["login"], &out));
    let out = api.docker_with_stdin(
        &berth,
        &["login", "-u", USER, "--password-stdin", &host],
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert_eq!(code(&out), 0, "{}", describe(&["login"], &out));
    assert!(stdout(&out).contains("Login Succeeded"), "{}", stdout(&out));

    // Push: the progress stream, ending with the digest.
    let remote = format!("{host}/team/app:1");
    api.docker_ok(&berth, &["tag", IMAGE, &remote]);
    let pushed = api.docker_ok(&berth, &["push", &remote]);
    assert!(
        pushed.contains(&format!("The push refers to repository [{host}/team/app]")),
        "{pushed}"
    );
    assert!(pushed.contains("1: digest: sha256:"), "{pushed}");
    let theirs = registry.inspect("team/app:1", false);
    assert!(!theirs.is_empty(), "the registry has the image");

    // Pull it back after removing every local copy.
    api.docker_ok(&berth, &["rmi", &remote]);
    api.docker_ok(&berth, &["rmi", IMAGE]);
    let pulled = api.docker_ok(&berth, &["pull", &remote]);
    assert!(pulled.contains("Pulling from team/app"), "{pulled}");
    assert!(pulled.contains("Digest: sha256:"), "{pulled}");
    assert!(
        pulled.contains("Status: Downloaded newer image for"),
        "{pulled}"
    );
    let again = api.docker_ok(&berth, &["pull", &remote]);
    assert!(again.contains("Image is up to date"), "{again}");

    // docker run of an image only in the registry: create answers 404, the CLI pulls, then
    // creates again.
    registry.push_archive(&test_images().oci, "only/remote:7");
    let only = format!("{host}/only/remote:7");
    let args = ["run", "--rm", only.as_str(), "echo", "pulled-and-ran"];
    let out = api.docker(&berth, &args);
    assert_eq!(code(&out), 0, "{}", describe(&args, &out));
    assert_eq!(
        stdout(&out),
        "pulled-and-ran\n",
        "{}",
        describe(&args, &out)
    );
    assert!(
        stderr(&out).contains("Unable to find image"),
        "{}",
        describe(&args, &out)
    );
    // A name the registry lacks: the pull's error, not a hang or a crash.
    let missing = format!("{host}/only/missing:1");
    let out = api.docker(&berth, &["pull", &missing]);
    assert_ne!(code(&out), 0, "{}", describe(&["pull"], &out));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    // Logged out, the registry refuses the pull.
    api.docker_ok(&berth, &["logout", &host]);
    api.docker_ok(&berth, &["rmi", &remote]);
    let out = api.docker(&berth, &["pull", &remote]);
    assert_ne!(code(&out), 0, "{}", describe(&["pull"], &out));
}

#[test]
fn docker_commit_makes_an_image_that_runs() {
    let Some((berth, api)) = setup() else { return };
    api.docker_ok(
        &berth,
        &[
            "run",
            "--name",
            "maker",
            IMAGE,
            "sh",
            "-c",
            "echo made-in-container > /made.txt",
        ],
    );
    let id = api.docker_ok(
        &berth,
        &[
            "commit",
            "-m",
            "added made.txt",
            "-a",
            "Ada",
            "-c",
            "CMD [\"cat\", \"/made.txt\"]",
            "-c",
            "LABEL team=core",
            "maker",
            "committed:1",
        ],
    );
    assert!(
        id.trim().starts_with("sha256:"),
        "commit prints the id: {id}"
    );
    let out = api.docker(&berth, &["run", "--rm", "committed:1"]);
    assert_eq!(
        stdout(&out),
        "made-in-container\n",
        "{}",
        describe(&["run"], &out)
    );
    let shown = api.docker_ok(
        &berth,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Author}}|{{.Comment}}|{{index .Config.Labels \"team\"}}",
            "committed:1",
        ],
    );
    assert_eq!(shown.trim(), "Ada|added made.txt|core", "{shown}");
    // The label filter finds the committed image and only it; since= orders by creation.
    let by_label = repositories(&berth, &api, "label=team=core");
    assert_eq!(by_label.trim(), "committed", "{by_label}");
    let newer = repositories(&berth, &api, &format!("since={IMAGE}"));
    assert_eq!(newer.trim(), "committed", "{newer}");
    let older = repositories(&berth, &api, "before=committed:1");
    assert_eq!(older.trim(), "localhost/berth-test", "{older}");
    // prune -a with filters: only images with the label, made before `until`.
    let prune = |filters: &[&str]| {
        let mut args = vec!["image", "prune", "-a", "-f"];
        for f in filters {
            args.extend(["--filter", *f]);
        }
        api.docker_ok(&berth, &args)
    };
    let report = prune(&["label=team=other"]);
    assert!(!report.contains("deleted:"), "{report}");
    let report = prune(&["label=team=core", "until=2000-01-01T00:00:00Z"]);
    assert!(
        !report.contains("deleted:"),
        "nothing is that old: {report}"
    );
    let report = prune(&["label=team=core", "until=0s"]);
    assert!(
        report.contains(&format!("deleted: {}", id.trim())),
        "{report}"
    );
    let left = api.docker_ok(&berth, &["images", "--format", "{{.Repository}}"]);
    assert_eq!(left.trim(), "localhost/berth-test", "{left}");
    // A container that does not exist is Docker's 404.
    let out = api.docker(&berth, &["commit", "no-such-container", "x:1"]);
    assert_ne!(code(&out), 0, "{}", describe(&["commit"], &out));
}

#[test]
fn docker_system_df_prints_sizes() {
    let Some((berth, api)) = setup() else { return };
    api.docker_ok(
        &berth,
        &[
            "run",
            "--name",
            "writer",
            "-v",
            "data:/data",
            IMAGE,
            "sh",
            "-c",
            "head -c 200000 /dev/zero > /data/blob; head -c 300000 /dev/zero > /big",
        ],
    );
    let out = api.docker_ok(
        &berth,
        &[
            "system",
            "df",
            "--format",
            "{{.Type}}|{{.TotalCount}}|{{.Active}}|{{.Size}}",
        ],
    );
    let rows = lines(&out);
    let row = |kind: &str| {
        rows.iter()
            .find(|r| r.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} row: {out}"))
            .clone()
    };
    assert!(row("Images|1|1|").len() > "Images|1|1|".len(), "{out}");
    let containers = row("Containers|1|");
    assert!(
        containers.ends_with("kB"),
        "the writable layer's 300 kB: {out}"
    );
    let volumes = row("Local Volumes|1|1|");
    assert!(volumes.ends_with("kB"), "the volume's 200 kB: {out}");
    assert!(row("Build Cache|0|").contains("0B"), "{out}");
    // -v lists each.
    let verbose = api.docker_ok(&berth, &["system", "df", "-v"]);
    assert!(verbose.contains("localhost/berth-test"), "{verbose}");
    assert!(verbose.contains("writer"), "{verbose}");
    assert!(verbose.contains("data"), "{verbose}");
}

#[test]
fn hostile_image_requests_get_json_errors_and_the_service_serves_on() {
    let Some((berth, api)) = setup() else { return };
    let send = |head: &str, body: &[u8]| api.send(head, body);
    let cases: [(&str, &[u8], &str); 7] = [
        ("POST /v1.47/images/create HTTP/1.1", b"", " 400 "),
        (
            "POST /v1.47/images/create?fromImage=Bad%21%21Name&tag=x HTTP/1.1",
            b"",
            " 400 ",
        ),
        (
            "POST /v1.47/images/create?fromImage=a/b&tag=1 HTTP/1.1\r\nX-Registry-Auth: %%%not-base64",
            b"",
            " 400 ",
        ),
        (
            "GET /v1.47/images/..%2F..%2Fetc%2Fpasswd/json HTTP/1.1",
            b"",
            " 400 ",
        ),
        ("POST /v1.47/commit?container=nope HTTP/1.1", b"", " 404 "),
        ("POST /v1.47/auth HTTP/1.1", b"{not json", " 400 "),
        (
            "POST /v1.47/images/prune?filters=%7B%22color%22%3A%5B%22red%22%5D%7D HTTP/1.1",
            b"",
            " 400 ",
        ),
    ];
    for (head, body, want) in cases {
        let (status, answer) = send(head, body);
        assert!(status.contains(want), "{head}: {status} {answer}");
        assert!(answer.contains("\"message\""), "{head}: {answer}");
    }
    // A body that is no archive is refused with a JSON error, and the store is as it was.
    let (status, answer) = send("POST /v1.47/images/load HTTP/1.1", b"garbage, not a tar");
    assert!(status.contains(" 400 "), "{status} {answer}");
    assert!(answer.contains("\"message\""), "{answer}");
    let listed = api.docker_ok(&berth, &["images", "-q"]);
    assert_eq!(
        listed.trim(),
        short(&test_images().id),
        "the service serves on"
    );
}

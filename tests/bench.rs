//! `berth bench`, through the real binary as the unprivileged test user, with small counts:
//! its JSON has every asked system with sane figures or a skip with a reason, its charts are
//! real SVG/PNG files, and it leaves no sandbox, podman container or helper process behind —
//! also when interrupted. No timing thresholds: figures only have to be consistent.
//!
//! The microVM rows are checked inside scripts/kvm-nested by tests/vm.rs.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::{code, describe, have, stdout, Berth, IMAGE};

/// Two rootless podmans of one user at once trip over each other (one loses the image it
/// loaded); the tests that run podman take turns.
static PODMAN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The JSON a `berth bench ... --format json` printed.
fn report(berth: &Berth, args: &[&str]) -> Value {
    let out = berth.cmd(args);
    assert_eq!(code(&out), 0, "{}", describe(args, &out));
    serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: not JSON\n{}", describe(args, &out)))
}

/// The measured system called `name`, or why it was skipped.
fn system<'a>(v: &'a Value, name: &str) -> Result<&'a Value, String> {
    find(v, name).unwrap_or_else(|| panic!("{name} is neither measured nor skipped in {v:#}"))
}

/// The measured system called `name`, why it was skipped, or None when it is not listed.
fn find<'a>(v: &'a Value, name: &str) -> Option<Result<&'a Value, String>> {
    let find = |key: &str| {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"].as_str().is_some_and(|n| n.starts_with(name)))
    };
    match (find("systems"), find("skipped")) {
        (Some(s), _) => Some(Ok(s)),
        (None, Some(s)) => Some(Err(s["reason"].as_str().unwrap_or("").to_string())),
        (None, None) => None,
    }
}

/// Each measured system has the fields and consistent figures.
fn check_figures(v: &Value, runs: u64) {
    let systems = v["systems"].as_array().expect("systems");
    assert!(!systems.is_empty(), "{v:#}");
    for s in systems {
        for key in ["name", "wall", "command"] {
            assert!(s[key].is_string(), "{key} in {s:#}");
        }
        assert!(["container", "vm"].contains(&s["wall"].as_str().unwrap()));
        assert_eq!(s["runs"].as_u64(), Some(runs), "{s:#}");
        let f = |k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{k} in {s:#}"));
        let (min, median, max) = (f("min_ms"), f("median_ms"), f("max_ms"));
        assert!(min > 0.0 && min <= median && median <= max, "{s:#}");
    }
    for s in v["skipped"].as_array().expect("skipped") {
        assert!(
            s["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "a skip says why: {s:#}"
        );
    }
    let m = &v["machine"];
    assert!(
        m["cores"].as_u64().unwrap_or(0) >= 1 && m["cpu"].is_string(),
        "{m:#}"
    );
    assert!(v["date"]
        .as_str()
        .is_some_and(|d| d.len() == 20 && d.ends_with('Z')));
}

/// Nothing the bench started is left: no sandbox record, no monitor, no podman helper.
fn nothing_left(berth: &Berth) {
    let ps = berth.run_ok(&["ps", "-a", "--format", "json"]);
    assert!(!ps.contains("berth-bench-"), "sandboxes left behind: {ps}");
    let left = common::procs::wait_until_gone(Duration::from_secs(10), || berth.own_processes());
    assert!(left.is_empty(), "processes left behind: {left:#?}");
    let cache = berth.root.join("cache");
    let scratch: Vec<_> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("bench-"))
        .map(|e| e.path())
        .collect();
    assert!(scratch.is_empty(), "scratch left behind: {scratch:?}");
}

#[test]
fn startup_bench_measures_berth_and_the_peers_and_draws_a_chart() {
    let Some(berth) = Berth::new() else { return };
    let _podman = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    let chart = berth.host_path("startup.svg");
    let chart_s = chart.display().to_string();
    let v = report(
        &berth,
        &[
            "bench",
            "startup",
            "--image",
            IMAGE,
            "--runs",
            "3",
            "--warmups",
            "1",
            "--peers",
            "podman,crun,bwrap,qemu,unshare",
            "--format",
            "json",
            "--chart",
            &chart_s,
        ],
    );
    check_figures(&v, 3);
    assert_eq!(v["benchmark"], "startup");
    let base = system(&v, "berth container").expect("berth's container run is measured");
    assert_eq!(base["ratio"], 1.0, "{base:#}");
    assert_eq!(base["wall"], "container");
    // Every asked system is there, measured or skipped with a reason; with the packages
    // scripts/setup-host installs, the container peers are measured.
    for name in ["podman", "bwrap", "unshare"] {
        if have(name) {
            let s = system(&v, name).unwrap_or_else(|why| panic!("{name} skipped: {why}"));
            assert!(s["ratio"].as_f64().unwrap() > 0.0);
        }
    }
    let oci = ["crun", "runc"].iter().find_map(|n| find(&v, n));
    match oci {
        Some(Ok(_)) => {}
        Some(Err(why)) if !have("runc") => eprintln!("crun/runc skipped: {why}"),
        other => panic!("crun or runc is measured: {other:?} in {v:#}"),
    }
    // The microVM wall and the VMM comparison: measured where /dev/kvm is hardware KVM (a
    // failed row fails the test there), else skipped with the reason (PVM says so).
    for name in ["berth microVM", "berth vmm", "qemu microvm"] {
        match system(&v, name) {
            Ok(s) => assert_eq!(s["wall"], "vm"),
            Err(why) if common::hardware_kvm() => {
                panic!("{name} failed on a host with hardware KVM: {why}")
            }
            Err(why) => assert!(!why.is_empty()),
        }
    }
    let svg = std::fs::read_to_string(&chart).expect("the chart file");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for s in v["systems"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        assert!(svg.contains(name), "{name} is not on the chart");
    }
    nothing_left(&berth);
}

#[test]
fn density_bench_reports_memory_per_sandbox_and_removes_them() {
    let Some(berth) = Berth::new() else { return };
    let _podman = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    let chart = berth.host_path("density.png");
    let chart_s = chart.display().to_string();
    let v = report(
        &berth,
        &[
            "bench",
            "density",
            "--image",
            IMAGE,
            "--count",
            "3",
            "--walls",
            "container",
            "--peers",
            "podman",
            "--format",
            "json",
            "--chart",
            &chart_s,
        ],
    );
    check_figures(&v, 3);
    assert_eq!(v["benchmark"], "density");
    let mut measured = vec![system(&v, "berth container").expect("berth containers")];
    if have("podman") {
        measured.push(system(&v, "podman").unwrap_or_else(|why| panic!("podman skipped: {why}")));
    }
    for s in measured {
        let f = |k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{k} in {s:#}"));
        assert!(
            f("pss_min_mib") > 0.0 && f("pss_min_mib") <= f("pss_mib"),
            "{s:#}"
        );
        assert!(f("pss_mib") <= f("pss_max_mib"), "{s:#}");
        // Starting all takes at least as long as the slowest one.
        assert!(f("total_ms") >= f("max_ms"), "{s:#}");
        assert!(s["fits"].as_u64().unwrap_or(0) > 0, "{s:#}");
        assert_eq!(
            s["unreadable_processes"], 0,
            "every process's memory was read: {s:#}"
        );
    }
    let png = std::fs::read(&chart).expect("the chart file");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    nothing_left(&berth);
}

#[test]
fn an_interrupted_density_bench_removes_what_it_started() {
    let Some(berth) = Berth::new() else { return };
    let bench = berth.spawn(&[
        "bench",
        "density",
        "--image",
        IMAGE,
        "--count",
        "200",
        "--walls",
        "container",
        "--peers",
        "none",
    ]);
    // Interrupt once a few sandboxes run.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ps = berth.run_ok(&["ps", "-q", "--filter", "name=berth-bench-"]);
        if ps.lines().count() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no bench sandbox started");
        std::thread::sleep(Duration::from_millis(50));
    }
    bench.signal(nix::sys::signal::Signal::SIGINT);
    let out = bench.wait(Duration::from_secs(60));
    let args = ["bench", "density"];
    assert_eq!(code(&out), 130, "{}", describe(&args, &out));
    assert!(
        common::stderr(&out).contains("interrupted"),
        "{}",
        describe(&args, &out)
    );
    nothing_left(&berth);
}

#[test]
fn bad_bench_arguments_are_refused_with_the_choices() {
    let Some(berth) = Berth::new() else { return };
    for (args, says) in [
        (
            &["bench", "startup", "--peers", "docker"][..],
            "choose from podman",
        ),
        (&["bench", "density", "--walls", "lxc"][..], "container, vm"),
        (
            &["bench", "startup", "--runs", "0"][..],
            "--runs must be at least 1",
        ),
        (
            &[
                "bench",
                "startup",
                "--image",
                IMAGE,
                "--walls",
                "container",
                "--peers",
                "none",
                "--runs",
                "1",
                "--chart",
                "x.pdf",
            ][..],
            ".svg or .png",
        ),
        (
            &[
                "bench",
                "startup",
                "--image",
                "no/such:image",
                "--peers",
                "none",
                "--walls",
                "container",
            ][..],
            "no/such",
        ),
    ] {
        let out = berth.cmd(args);
        assert_ne!(code(&out), 0, "{}", describe(args, &out));
        let err = common::stderr(&out);
        assert!(err.contains(says), "{}", describe(args, &out));
    }
    nothing_left(&berth);
}

#[test]
fn api_bench_measures_the_docker_cli_through_each_api_and_leaves_nothing() {
    if !have("docker") {
        common::skip("the docker CLI is not installed: bench api drives the APIs with it");
        return;
    }
    let Some(berth) = Berth::new() else { return };
    let _podman = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    let v = report(
        &berth,
        &[
            "bench",
            "api",
            "--image",
            IMAGE,
            "--runs",
            "2",
            "--warmups",
            "0",
            "--concurrent",
            "3",
            "--peers",
            "podman,docker",
            "--format",
            "json",
        ],
    );
    assert_eq!(v["benchmark"], "api");
    check_figures(&v, 2);
    for name in [
        "berth CLI",
        "docker CLI -> berth API",
        "3 x docker run -d -> berth API",
    ] {
        assert!(system(&v, name).is_ok(), "{name} measured: {v:#}");
    }
    // The ratio column compares with the berth CLI.
    let api = system(&v, "docker CLI -> berth API").unwrap();
    assert!(api["ratio"].as_f64().is_some_and(|r| r > 0.0), "{api:#}");
    assert!(
        api["note"]
            .as_str()
            .is_some_and(|n| n.contains("RSS") && n.contains("PSS")),
        "the service's memory is reported: {api:#}"
    );
    if have("podman") || common::ci() {
        for name in [
            "docker CLI -> podman API",
            "3 x docker run -d -> podman API",
        ] {
            assert!(system(&v, name).is_ok(), "{name} measured: {v:#}");
        }
    }
    // Rootful Docker needs root; the test user's bench says so instead of measuring it.
    let docker = system(&v, "docker CLI -> Docker (rootful)");
    assert!(
        docker
            .as_ref()
            .is_err_and(|why| why.contains("root") || why.contains("dockerd")),
        "{docker:?}"
    );
    nothing_left(&berth);
}

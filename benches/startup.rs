//! Startup benchmark: `true` in a fresh container, berth against its peers,
//! on the same busybox image, in the same run, as the same unprivileged user.
//!
//! Systems measured (each N runs after 3 warm-ups; N = env BENCH_RUNS, default 20):
//! - `berth run --rm --network none IMG true`, and with `--network slirp4netns` (the default
//!   where installed) and `--network pasta`
//! - `podman run --rm --network none --runtime runc IMG true`, native overlay storage
//! - `crun run` on a ready bundle (rootfs = the unpacked image, config from
//!   `crun spec --rootless` with the namespaces berth uses); `runc run` when
//!   crun refuses this host (crun 1.8 rejects hybrid cgroups)
//! - `bwrap --unshare-all` on the same rootfs
//! - `unshare -Urmpf true`, the floor: namespaces and nothing else
//!
//! A peer that is missing or fails is listed as skipped, with the reason.
//! Run with `cargo bench --bench startup` (as root, berth and peers run as
//! `berthtest`; otherwise as you).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

use common::{have, test_images, Berth, Identity, IMAGE};

const WARMUPS: usize = 3;

/// What one system did.
enum Outcome {
    Measured(Vec<f64>),
    Skipped(String),
}

struct Row {
    system: String,
    outcome: Outcome,
    /// Said under the table (e.g. why runc stands in for crun).
    note: Option<String>,
}

impl Row {
    fn new(system: impl Into<String>, outcome: Outcome) -> Self {
        Row {
            system: system.into(),
            outcome,
            note: None,
        }
    }
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1);
    let Some(berth) = Berth::new() else {
        eprintln!("startup bench: berth cannot run here (see the reason above)");
        return;
    };
    let id = berth.identity.clone();
    println!(
        "startup: `true` in a fresh container; {runs} runs after {WARMUPS} warm-ups each, as {} (uid {})",
        id.name, id.uid
    );
    println!("berth binary: {}", common::berth_bin());

    let mut rows = Vec::new();
    let berth_run = measure(runs, || {
        berth.command(&["run", "--rm", "--network", "none", IMAGE, "true"])
    });
    rows.push(Row::new("berth run --rm --network none", berth_run));
    // The default: a user-mode network started alongside the container's own set-up.
    for network in ["slirp4netns", "pasta"] {
        let outcome = if have(network) {
            measure(runs, || {
                berth.command(&["run", "--rm", "--network", network, IMAGE, "true"])
            })
        } else {
            Outcome::Skipped(format!("{network} not installed"))
        };
        rows.push(Row::new(
            format!("berth run --rm --network {network}"),
            outcome,
        ));
    }
    rows.push(podman(&berth, &id, runs));
    match bundle(&berth, &id) {
        Ok(bundle) => {
            rows.push(oci_runtime(&berth, &id, &bundle, runs));
            rows.push(bwrap(&id, &bundle.join("rootfs"), runs));
        }
        Err(reason) => {
            for system in ["crun run (ready bundle)", "bwrap --unshare-all"] {
                rows.push(Row::new(system, Outcome::Skipped(reason.clone())));
            }
        }
    }
    let floor = if have("unshare") {
        measure(runs, || id.command("unshare", ["-Urmpf", "true"]))
    } else {
        Outcome::Skipped("unshare not installed".into())
    };
    rows.push(Row::new("unshare -Urmpf (floor)", floor));
    print_table(&rows);
}

/// Times `make()`'s command `runs` times after the warm-ups; the first
/// failure turns the row into a skip with the command's error.
fn measure(runs: usize, make: impl Fn() -> Command) -> Outcome {
    let mut times = Vec::with_capacity(runs);
    for i in 0..WARMUPS + runs {
        let mut cmd = make();
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let start = Instant::now();
        let out = match cmd.output() {
            Ok(out) => out,
            Err(e) => return Outcome::Skipped(format!("cannot start: {e}")),
        };
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        if !out.status.success() {
            return Outcome::Skipped(format!(
                "failed ({}): {}",
                out.status,
                first_line(&out.stderr)
            ));
        }
        if i >= WARMUPS {
            times.push(elapsed);
        }
    }
    Outcome::Measured(times)
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no error output")
        .trim()
        .to_string()
}

/// A directory of the fixture owned by the benchmark user.
fn user_dir(berth: &Berth, name: &str) -> PathBuf {
    berth.host_mkdir(name)
}

/// Runs `program args` as the benchmark user; Err with its stderr on failure.
fn as_user(
    id: &Identity,
    program: &str,
    args: &[&str],
    dir: &Path,
    env: &[(&str, &Path)],
) -> Result<(), String> {
    let mut cmd = id.command(program, args);
    cmd.current_dir(dir);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            first_line(&out.stderr)
        ))
    }
}

fn podman(berth: &Berth, id: &Identity, runs: usize) -> Row {
    let system = "podman run --rm --network none --runtime runc".to_string();
    if !have("podman") || !have("runc") {
        return Row::new(
            system,
            Outcome::Skipped("podman or runc not installed".into()),
        );
    }
    let dir = user_dir(berth, "podman");
    let storage = berth.host_file(
        "podman/storage.conf",
        &format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            dir.display()
        ),
    );
    // No systemd here: cgroupfs, and events to a file.
    let containers = berth.host_file(
        "podman/containers.conf",
        "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    );
    let env = [
        ("CONTAINERS_STORAGE_CONF", storage.as_path()),
        ("CONTAINERS_CONF", containers.as_path()),
        ("XDG_RUNTIME_DIR", berth.runtime_dir.as_path()),
    ];
    let archive = test_images().oci.to_string_lossy().into_owned();
    if let Err(reason) = as_user(id, "podman", &["load", "-q", "-i", &archive], &dir, &env) {
        return Row::new(system, Outcome::Skipped(reason));
    }
    let outcome = measure(runs, || {
        let mut cmd = id.command(
            "podman",
            [
                "run",
                "--rm",
                "--network",
                "none",
                "--runtime",
                "runc",
                IMAGE,
                "true",
            ],
        );
        cmd.current_dir(&dir);
        for (key, value) in &env {
            cmd.env(key, value);
        }
        cmd
    });
    // Rootless podman keeps a pause process holding its user namespace; it
    // carries our storage.conf in its environment, which names it exactly.
    let ours = common::procs::with_env(&format!("CONTAINERS_STORAGE_CONF={}", storage.display()));
    common::procs::kill_all(&ours);
    Row::new(system, outcome)
}

/// An OCI bundle of the test image: rootfs unpacked by umoci (rootless),
/// config.json from `crun spec --rootless` adjusted to run `true` in the
/// namespaces berth uses.
fn bundle(berth: &Berth, id: &Identity) -> Result<PathBuf, String> {
    for tool in ["skopeo", "umoci", "crun"] {
        if !have(tool) {
            return Err(format!(
                "{tool} not installed (needed to prepare the bundle)"
            ));
        }
    }
    let dir = user_dir(berth, "oci");
    let archive = format!("oci-archive:{}", test_images().oci.display());
    as_user(
        id,
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--quiet",
            &archive,
            "oci:layout:bench",
        ],
        &dir,
        &[],
    )?;
    as_user(
        id,
        "umoci",
        &["unpack", "--rootless", "--image", "layout:bench", "bundle"],
        &dir,
        &[],
    )?;
    let bundle = dir.join("bundle");
    let config = bundle.join("config.json");
    fs::remove_file(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    as_user(id, "crun", &["spec", "--rootless"], &bundle, &[])?;
    let text = fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut spec: Value =
        serde_json::from_str(&text).map_err(|e| format!("crun spec output: {e}"))?;
    spec["process"]["args"] = json!(["true"]);
    spec["process"]["terminal"] = json!(false);
    spec["linux"]["namespaces"] = json!(["user", "mount", "pid", "uts", "ipc", "network"]
        .iter()
        .map(|t| json!({ "type": t }))
        .collect::<Vec<_>>());
    spec["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": id.uid, "size": 1 }]);
    spec["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": id.gid, "size": 1 }]);
    // A cgroup mount needs a cgroup the user may use; berth mounts none either.
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
    }
    fs::write(
        &config,
        serde_json::to_vec_pretty(&spec).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    Ok(bundle)
}

/// `crun run`, or `runc run` when crun refuses this host.
fn oci_runtime(berth: &Berth, id: &Identity, bundle: &Path, runs: usize) -> Row {
    let state = user_dir(berth, "runtime-state");
    let run = |runtime: &str, extra: &[&str]| {
        let state = state.join(runtime);
        measure(runs, || {
            let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            args.extend(["--root".into(), state.display().to_string(), "run".into()]);
            args.extend(["-b".into(), bundle.display().to_string(), "bench".into()]);
            let mut cmd = id.command(runtime, &args);
            cmd.current_dir(bundle);
            cmd
        })
    };
    match run("crun", &["--cgroup-manager=disabled"]) {
        Outcome::Measured(times) => Row::new("crun run (ready bundle)", Outcome::Measured(times)),
        Outcome::Skipped(crun_reason) => {
            if !have("runc") {
                return Row::new("crun run (ready bundle)", Outcome::Skipped(crun_reason));
            }
            let outcome = match run("runc", &[]) {
                Outcome::Skipped(runc_reason) => {
                    Outcome::Skipped(format!("crun {crun_reason}; runc {runc_reason}"))
                }
                measured => measured,
            };
            let mut row = Row::new("runc run (ready bundle)", outcome);
            row.note = Some(format!("runc stands in for crun, which {crun_reason}"));
            row
        }
    }
}

fn bwrap(id: &Identity, rootfs: &Path, runs: usize) -> Row {
    let system = "bwrap --unshare-all (same rootfs)".to_string();
    if !have("bwrap") {
        return Row::new(system, Outcome::Skipped("bwrap not installed".into()));
    }
    let rootfs = rootfs.display().to_string();
    let outcome = measure(runs, || {
        id.command(
            "bwrap",
            [
                "--unshare-all",
                "--ro-bind",
                rootfs.as_str(),
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "true",
            ],
        )
    });
    Row::new(system, outcome)
}

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(times: &[f64]) -> Stats {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Stats {
        median,
        min: sorted[0],
        max: sorted[n - 1],
    }
}

fn print_table(rows: &[Row]) {
    let berth = match &rows[0].outcome {
        Outcome::Measured(times) => Some(stats(times).median),
        Outcome::Skipped(_) => None,
    };
    let width = rows
        .iter()
        .map(|r| r.system.len())
        .max()
        .unwrap_or(10)
        .max(6);
    println!();
    println!(
        "{:<width$}  {:>9}  {:>8}  {:>8}  {:>10}",
        "system", "median ms", "min ms", "max ms", "berth/peer"
    );
    for row in rows {
        match &row.outcome {
            Outcome::Measured(times) => {
                let s = stats(times);
                let ratio = berth
                    .map(|b| format!("{:.2}x", b / s.median))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<width$}  {:>9.1}  {:>8.1}  {:>8.1}  {:>10}",
                    row.system, s.median, s.min, s.max, ratio
                );
            }
            Outcome::Skipped(reason) => println!("{:<width$}  skipped: {reason}", row.system),
        }
    }
    for note in rows.iter().filter_map(|r| r.note.as_ref()) {
        println!("note: {note}");
    }
}

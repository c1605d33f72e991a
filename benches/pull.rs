//! Pull benchmark: a multi-layer image of about 100 MB from a local
//! `docker-registry` into an empty store, berth against its peers, same run.
//!
//! The image: BENCH_LAYERS (default 5) gzip'd layers of about 20 MB each of
//! random-ish files (90% noise, 10% repeated text, so gzip has some work to do),
//! written as an OCI layout and pushed with skopeo.
//!
//! Systems measured (each N runs after one warm-up; N = env BENCH_RUNS, default 5),
//! every run into a fresh, empty store:
//! - `berth pull -q` (BERTH_ROOT in a new temporary directory)
//! - `skopeo copy docker://... dir:NEW_DIR`
//! - `podman pull -q` with a private `--root`, `--runroot` and `--storage-driver vfs`
//!
//! A peer that is missing or fails is listed as skipped, with the reason.
//! Run with `cargo bench --bench pull` (a debug build works too:
//! `cargo test --bench pull` runs it once with BENCH_RUNS).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};

use common::have;
use common::registry::Registry;

const FILES_PER_LAYER: usize = 20;
const FILE_BYTES: usize = 1 << 20;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// xorshift64: fast, deterministic noise.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// One layer: a tar of files, mostly noise with some text; (tar, gzip'd tar).
fn layer(index: usize, noise: &mut Noise) -> (Vec<u8>, Vec<u8>) {
    let mut builder = tar::Builder::new(Vec::new());
    let text = format!("layer {index}: the quick brown fox jumps over the lazy dog\n");
    for f in 0..FILES_PER_LAYER {
        let mut data = vec![0u8; FILE_BYTES];
        let split = FILE_BYTES / 10 * 9;
        noise.fill(&mut data[..split]);
        for (i, b) in data[split..].iter_mut().enumerate() {
            *b = text.as_bytes()[i % text.len()];
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("data/l{index}/f{f}"), &data[..])
            .expect("tar");
    }
    let tar = builder.into_inner().expect("tar");
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (tar.clone(), gz.finish().expect("gzip"))
}

/// Writes the bench image as an OCI layout at `dir`, tagged `bench`; returns its size.
fn write_layout(dir: &Path, layers: usize) -> u64 {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("layout");
    let put = |data: &[u8]| -> (String, usize) {
        let hex = sha256_hex(data);
        fs::write(blobs.join(&hex), data).expect("blob");
        (format!("sha256:{hex}"), data.len())
    };
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    let mut total = 0;
    for i in 0..layers {
        let (tar, gz) = layer(i, &mut noise);
        diff_ids.push(format!("sha256:{}", sha256_hex(&tar)));
        let (digest, size) = put(&gz);
        total += size as u64;
        descs.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": size,
        }));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config");
    let (config_digest, config_size) = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": descs,
    }))
    .expect("manifest");
    let (manifest_digest, manifest_size) = put(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "bench"},
        }],
    });
    fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    total
}

enum Outcome {
    Measured(Vec<f64>),
    Skipped(String),
}

/// Runs `command(fresh_dir)` `runs` times after one warm-up, each in a new empty directory.
fn measure(runs: usize, command: impl Fn(&Path) -> Command) -> Outcome {
    let mut times = Vec::new();
    for i in 0..=runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = command(dir.path());
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let start = Instant::now();
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => return Outcome::Skipped(format!("{cmd:?}: {e}")),
        };
        let elapsed = start.elapsed().as_secs_f64();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Outcome::Skipped(format!(
                "failed: {}",
                err.lines().last().unwrap_or("no output")
            ));
        }
        if i > 0 {
            times.push(elapsed);
        }
        // vfs leaves read-only trees behind for root only: remove as root.
        let _ = Command::new("rm").arg("-rf").arg(dir.path()).status();
    }
    Outcome::Measured(times)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let layers: usize = std::env::var("BENCH_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    for tool in ["docker-registry", "skopeo"] {
        if !have(tool) {
            eprintln!("pull bench: {tool} not found; run scripts/setup-host");
            return;
        }
    }
    let registry = Registry::start(false);
    let layout = tempfile::tempdir().expect("tempdir");
    let size = write_layout(layout.path(), layers);
    registry.push(
        &format!("oci:{}:bench", layout.path().display()),
        "bench/img:1",
    );
    let image = format!("{}/bench/img:1", registry.host());
    println!(
        "pull: {layers} gzip layers, {:.1} MB compressed, from docker-registry on {}; \
         {runs} runs after 1 warm-up each, into an empty store every time",
        size as f64 / 1e6,
        registry.host()
    );
    println!("berth binary: {}", common::berth_bin());

    let mut rows: Vec<(&str, Outcome)> = Vec::new();
    rows.push((
        "berth pull",
        measure(runs, |dir| {
            let mut cmd = Command::new(common::berth_bin());
            cmd.args(["pull", "-q", &image])
                .env("BERTH_ROOT", dir.join("berth"))
                .env("XDG_CONFIG_HOME", dir.join("config"))
                .env("XDG_RUNTIME_DIR", dir);
            cmd
        }),
    ));
    rows.push((
        "skopeo copy to dir:",
        measure(runs, |dir| {
            let mut cmd = Command::new("skopeo");
            cmd.args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{image}"))
                .arg(format!("dir:{}", dir.join("out").display()));
            cmd
        }),
    ));
    rows.push((
        "podman pull (vfs, private root)",
        if !have("podman") {
            Outcome::Skipped("podman not found".into())
        } else if !nix::unistd::Uid::effective().is_root() {
            Outcome::Skipped("needs root (a private --root per run)".into())
        } else {
            measure(runs, |dir| {
                let mut cmd = Command::new("podman");
                cmd.arg("--root")
                    .arg(dir.join("root"))
                    .arg("--runroot")
                    .arg(dir.join("runroot"))
                    .args([
                        "--storage-driver",
                        "vfs",
                        "pull",
                        "-q",
                        "--tls-verify=false",
                    ])
                    .arg(&image);
                cmd
            })
        },
    ));

    let fastest = rows
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Measured(t) => Some(median(t)),
            Outcome::Skipped(_) => None,
        })
        .fold(f64::INFINITY, f64::min);
    let width = rows.iter().map(|(s, _)| s.len()).max().unwrap_or(10);
    println!();
    println!(
        "{:<width$}  {:>9}  {:>9}  {:>9}  {:>8}",
        "system", "median s", "min s", "max s", "ratio"
    );
    for (system, outcome) in &rows {
        match outcome {
            Outcome::Measured(t) => {
                let min = t.iter().copied().fold(f64::INFINITY, f64::min);
                let max = t.iter().copied().fold(0.0, f64::max);
                let m = median(t);
                println!(
                    "{system:<width$}  {m:>9.3}  {min:>9.3}  {max:>9.3}  {:>7.2}x",
                    m / fastest
                );
            }
            Outcome::Skipped(reason) => println!("{system:<width$}  skipped: {reason}"),
        }
    }
    println!("ratio: median over the fastest median");
}

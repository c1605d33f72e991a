//! The microVM wall on a real KVM, inside `scripts/kvm-nested` when this host's KVM is PVM:
//! `berth bench startup` (berth's container and microVM walls, and berth's VMM against QEMU's
//! microvm booting the same kernel and busybox init) and `berth bench density` for idle
//! microVMs (`--memory 64M`), run in one nested machine as the unprivileged test user — the
//! same measuring code as the CLI (src/bench).
//!
//! Absolute times inside the nested machine are emulated (QEMU TCG); the ratios between
//! systems measured side by side there are what carries over.
//!
//!     cargo bench --bench vm_nested     # BENCH_RUNS (default 10), BENCH_COUNT (default 10)

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;

use common::{have, Berth, IMAGE};

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let count: usize = std::env::var("BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    if !have("qemu-system-x86_64") {
        eprintln!("vm_nested: qemu-system-x86 is not installed; nothing to measure");
        return;
    }
    let Some(berth) = Berth::new() else {
        eprintln!("vm_nested: no unprivileged test user (run scripts/setup-host)");
        return;
    };
    // Unpack the layers here: the nested machine sees this directory over 9p, which cannot
    // hold overlay whiteouts (the microVM's layer disks are then built from these layers).
    berth.container_ok(&[IMAGE, "true"]);
    let results = berth.host_mkdir("results");
    let mut script = String::new();
    writeln!(
        script,
        "set -u; R={}; B={}; IMG={IMAGE}; {}",
        results.display(),
        common::berth_bin(),
        common::NESTED_ENV,
    )
    .unwrap();
    writeln!(
        script,
        "$B bench startup --image $IMG --walls container,vm --peers qemu --runs {runs} --warmups 1 >$R/startup 2>&1"
    )
    .unwrap();
    writeln!(
        script,
        "$B bench density --image $IMG --walls container,vm --peers none --count {count} --vm-memory 64M >$R/density 2>&1"
    )
    .unwrap();
    let script_path = berth.host_file("bench.sh", &script);
    if let Err(e) = common::kvm_nested(&berth, &script_path, 3000, 120) {
        eprintln!("vm_nested: {e}");
        std::process::exit(1);
    }
    println!("inside scripts/kvm-nested (QEMU TCG, 2 vCPUs, 3 GiB):\n");
    for name in ["startup", "density"] {
        let text = std::fs::read_to_string(results.join(name)).unwrap_or_default();
        println!("{text}");
    }
}

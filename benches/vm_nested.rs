//! The microVM wall end to end on a real KVM, inside `scripts/kvm-nested` when this host's KVM
//! is PVM: in one nested machine, in one run,
//!   - `berth run --vm --rm IMAGE true` (image lookup, layer disks, boot, agent, process, exit),
//!     with the agent's ready time as berth reports it (BERTH_BOOT_TIMES);
//!   - `berth vmm` booting berth's guest kernel with a busybox initramfs that prints a marker
//!     and resets (the VMM and kernel alone);
//!   - QEMU `-M microvm -accel kvm` booting the same kernel and initramfs.
//!
//! Medians, min and max over BENCH_RUNS runs (default 10) after one warm-up, and the ratio of
//! each to berth's. Absolute times inside the nested machine are emulated (QEMU TCG); the
//! ratios between systems measured side by side there are what carries over.
//!
//!     cargo bench --bench vm_nested

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use common::{have, Berth, IMAGE};

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
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
    let info = common::stdout(&berth.cmd(&["info", "--format", "json"]));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
    let Some(kernel) = info["vm_kernel"].as_str().map(str::to_string) else {
        eprintln!("vm_nested: no guest kernel installed: run scripts/build-guest");
        return;
    };
    // Unpack the layers here: the nested machine sees this directory over 9p, which cannot
    // hold overlay whiteouts (the microVM's layer disks are then built from these layers).
    berth.container_ok(&[IMAGE, "true"]);
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static");

    // A busybox initramfs: print a marker with the guest's uptime, then reset.
    let ir = berth.host_mkdir("ir");
    for d in ["bin", "proc", "dev"] {
        std::fs::create_dir_all(ir.join(d)).unwrap();
    }
    std::fs::copy(busybox, ir.join("bin/busybox")).unwrap();
    std::fs::write(
        ir.join("init"),
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\necho \"BENCH-MARKER $(/bin/busybox cut -d' ' -f1 /proc/uptime)\"\n/bin/busybox reboot -f\n",
    )
    .unwrap();
    std::fs::set_permissions(
        ir.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let initrd = berth.host_path("bench-initrd.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet -R 0:0 > {}",
            ir.display(),
            initrd.display()
        ))
        .status()
        .expect("cpio");
    assert!(status.success(), "building the initramfs");
    let _ = Command::new("chmod").arg("0644").arg(&initrd).status();

    let results = berth.host_mkdir("results");
    let cmdline = "console=ttyS0 reboot=k panic=-1 pci=off quiet rdinit=/init";
    let mut script = String::new();
    writeln!(
        script,
        "set -u; R={}; B={}; K={kernel}; I={}",
        results.display(),
        common::berth_bin(),
        initrd.display()
    )
    .unwrap();
    writeln!(script, "now() {{ date +%s%N; }}").unwrap();
    writeln!(
        script,
        r#"for i in $(seq 0 {runs}); do
  s=$(now); BERTH_BOOT_TIMES=1 $B run --vm --rm {IMAGE} true 2>$R/err >/dev/null; rc=$?; e=$(now)
  ready=$(sed -n 's/.*agent ready \([0-9]*\) ms after start (guest uptime \([0-9]*\) ms).*/\1 \2/p' $R/err)
  echo "berth-run $i $rc $(( (e-s)/1000 )) $ready" >> $R/times
  [ $rc = 0 ] || {{ echo "berth-run $i:"; cat $R/err; }} >&2
  s=$(now); out=$($B vmm --kernel $K --initrd $I --memory 256M --cmdline "{cmdline}" 2>/dev/null); rc=$?; e=$(now)
  up=$(echo "$out" | sed -n 's/.*BENCH-MARKER \([0-9.]*\).*/\1/p')
  echo "berth-vmm $i $rc $(( (e-s)/1000 )) $up" >> $R/times
  s=$(now); out=$(qemu-system-x86_64 -M microvm,pic=off,pit=off,rtc=off -accel kvm -cpu host -m 256M -smp 1 -nodefaults -no-user-config -display none -no-reboot -serial stdio -kernel $K -initrd $I -append "{cmdline} reboot=t" </dev/null 2>/dev/null); rc=$?; e=$(now)
  up=$(echo "$out" | sed -n 's/.*BENCH-MARKER \([0-9.]*\).*/\1/p')
  echo "qemu-microvm $i $rc $(( (e-s)/1000 )) $up" >> $R/times
done"#
    )
    .unwrap();
    let script_path = berth.host_file("bench.sh", &script);
    match common::kvm_nested(&berth, &script_path, 3000) {
        Ok(out) => eprint!("{}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            eprintln!("vm_nested: {e}");
            std::process::exit(1);
        }
    }

    // name -> (end-to-end ms, guest-side ms), run 0 (the warm-up) left out.
    let mut samples: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let text = std::fs::read_to_string(results.join("times")).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[1] == "0" {
            continue;
        }
        let entry = samples.entry(f[0].to_string()).or_default();
        if f[2] != "0" {
            eprintln!("vm_nested: failed run: {line}");
            continue;
        }
        entry.0.push(f[3].parse::<f64>().unwrap_or(0.0) / 1000.0);
        match f[0] {
            // agent ready (ms after berth's start)
            "berth-run" if f.len() >= 5 => entry.1.push(f[4].parse().unwrap_or(0.0)),
            // guest uptime at the marker, in seconds
            _ if f.len() >= 5 => entry.1.push(f[4].parse::<f64>().unwrap_or(0.0) * 1000.0),
            _ => {}
        }
    }
    let base = samples
        .get("berth-run")
        .map(|s| median(&s.0))
        .unwrap_or(f64::NAN);
    println!("inside scripts/kvm-nested (QEMU TCG, 2 vCPUs), {runs} runs after 1 warm-up; ms");
    println!(
        "{:<54} {:>9} {:>9} {:>9} {:>14} {:>10}",
        "system", "median", "min", "max", "guest median", "vs berth"
    );
    for (name, label, guest) in [
        (
            "berth-run",
            "berth run --vm --rm IMAGE true (end to end)",
            "agent ready",
        ),
        (
            "berth-vmm",
            "berth vmm, same kernel, busybox init, reset",
            "uptime@marker",
        ),
        (
            "qemu-microvm",
            "qemu -M microvm -accel kvm, same kernel and init",
            "uptime@marker",
        ),
    ] {
        let Some((e2e, g)) = samples.get(name) else {
            continue;
        };
        if e2e.is_empty() {
            println!("{label:<54} no successful run");
            continue;
        }
        println!(
            "{:<54} {:>9.1} {:>9.1} {:>9.1} {:>14} {:>9.2}x",
            label,
            median(e2e),
            min(e2e),
            max(e2e),
            if g.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0} ({guest})", median(g))
            },
            median(e2e) / base
        );
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

//! VMM benchmark: the tiny PVH test guest (tests/guests/tiny.S) booted on this host's
//! /dev/kvm by `berth vmm` and by QEMU's microvm machine, in the same run, as the same user,
//! with the same guest size (64 MiB, 1 vCPU).
//!
//! Measured per system (N runs after 3 warm-ups; N = env BENCH_RUNS, default 20):
//! - time from spawning the VMM to the guest's first serial line on its stdout (the marker);
//! - time from spawning to the VMM's exit (the guest resets right after its boot lines);
//! - the VMM's resident memory while the guest sits at its marker (the halting variant of the
//!   same guest, so the process is still there to be measured): all of it, without the
//!   guest RAM the guest touched (the Rss of the anonymous mapping of guest-memory size), and
//!   its anonymous part alone (what the VMM costs beyond the page cache it shares).
//!
//! berth's VMM is the jailed `berth-vmm` program, two processes below `berth vmm`: a waiter
//! outside the VMM's PID namespace and the VMM itself. The table's memory is the VMM's (the
//! process that runs the guest), as for QEMU; the line below the table gives the Rss of the
//! other two (the `berth vmm` front end and the waiter), which a `run --vm` sandbox has in
//! another shape (its host-side session and the waiter).
//!
//! Firecracker is listed as skipped unless installed. Run with `cargo bench --bench vmm`
//! (as root, the VMMs run as `berthtest`; otherwise as you).

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "../tests/guests/mod.rs"]
mod guests;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{have, Berth};
use guests::Variant;

const WARMUPS: usize = 3;
const MEM_MIB: u64 = 64;

/// One boot, timed.
struct Timing {
    marker_ms: f64,
    exit_ms: f64,
}

/// Resident memory of a VMM at the guest's marker.
struct Footprint {
    rss_kib: u64,
    /// Anonymous (private) memory: what this VMM alone costs the host.
    anon_kib: u64,
    /// The guest RAM the guest touched (all of it anonymous).
    guest_kib: u64,
    /// The Rss of the processes between the one spawned and the VMM (berth's front end and
    /// the jailed program's waiter); 0 where the VMM is the process spawned.
    helpers_kib: u64,
}

/// What one system did.
enum Outcome {
    Measured {
        timings: Vec<Timing>,
        footprints: Vec<Footprint>,
    },
    Skipped(String),
}

struct Row {
    system: &'static str,
    outcome: Outcome,
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1);
    if !Path::new("/dev/kvm").exists() {
        println!("vmm bench: skipped: no /dev/kvm on this host");
        return;
    }
    let (reset, halt) = match (guests::build(Variant::Reset), guests::build(Variant::Halt)) {
        (Ok(reset), Ok(halt)) => (reset, halt),
        (Err(reason), _) | (_, Err(reason)) => {
            println!("vmm bench: skipped: {reason}");
            return;
        }
    };
    let Some(berth) = Berth::options().no_image().start() else {
        eprintln!("vmm bench: berth cannot run here (see the reason above)");
        return;
    };
    let id = berth.identity.clone();
    let kvm = if berth::vm::kvm_is_pvm() {
        "PVM (software nested virtualization)"
    } else {
        "hardware KVM"
    };
    println!(
        "vmm: tiny PVH guest, {MEM_MIB} MiB, 1 vCPU, on /dev/kvm = {kvm}; \
         {runs} runs after {WARMUPS} warm-ups each, as {} (uid {})",
        id.name, id.uid
    );
    println!("berth binary: {}", common::berth_bin());

    let mem = format!("{MEM_MIB}M");
    let berth_vmm = |guest: &Path| {
        let kernel = guest.to_str().expect("utf-8 path").to_string();
        berth.command(&["vmm", "--kernel", &kernel, "--memory", &mem, "--cpus", "1"])
    };
    let mut boot_times = Vec::new();
    let berth_row = Row {
        system: "berth vmm",
        outcome: measure(
            runs,
            || berth_vmm(&reset),
            || berth_vmm(&halt),
            Some(&mut boot_times),
        ),
    };

    let qemu_row = if have("qemu-system-x86_64") {
        let qemu = |guest: &Path| {
            let mut args: Vec<String> = [
                "-M",
                "microvm",
                "-accel",
                "kvm",
                "-nodefaults",
                "-no-user-config",
                "-nographic",
                "-serial",
                "stdio",
                // The guest's reset falls back to a triple fault under QEMU: end there.
                "-no-reboot",
                "-smp",
                "1",
                "-m",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push(mem.clone());
            args.push("-kernel".into());
            args.push(guest.to_string_lossy().into_owned());
            id.command("qemu-system-x86_64", &args)
        };
        Row {
            system: "qemu-system-x86_64 -M microvm",
            outcome: measure(runs, || qemu(&reset), || qemu(&halt), None),
        }
    } else {
        Row {
            system: "qemu-system-x86_64 -M microvm",
            outcome: Outcome::Skipped(
                "qemu-system-x86_64 not installed (scripts/setup-host installs it)".into(),
            ),
        }
    };

    let firecracker_row = Row {
        system: "firecracker",
        outcome: Outcome::Skipped(if have("firecracker") {
            "installed, but this bench does not drive it yet".into()
        } else {
            "not installed (not packaged by Debian; build it from its repository)".into()
        }),
    };

    let helpers = match &berth_row.outcome {
        Outcome::Measured { footprints, .. } => Some(stats(
            &footprints
                .iter()
                .map(|f| f.helpers_kib as f64 / 1024.0)
                .collect::<Vec<_>>(),
        )),
        Outcome::Skipped(_) => None,
    };
    print_table(&[berth_row, qemu_row, firecracker_row]);
    if let Some(h) = helpers {
        println!(
            "berth: besides the VMM, `berth vmm` and the jailed program's waiter hold Rss {:.1} MiB (median; min {:.1}, max {:.1})",
            h.median, h.min, h.max
        );
    }
    if !boot_times.is_empty() {
        let s = stats(&boot_times);
        println!(
            "berth Guest-boot-time (VMM start to the guest's boot-timer write): median {:.0} us, min {:.0}, max {:.0}",
            s.median, s.min, s.max
        );
    }
}

/// Times `runs` boots of `timed()` and measures `runs` footprints of `resident()`, after
/// warm-ups; the first failure skips the system with its reason.
fn measure(
    runs: usize,
    timed: impl Fn() -> Command,
    resident: impl Fn() -> Command,
    mut boot_times: Option<&mut Vec<f64>>,
) -> Outcome {
    let mut timings = Vec::with_capacity(runs);
    let mut footprints = Vec::with_capacity(runs);
    for i in 0..WARMUPS + runs {
        let (timing, boot_us) = match time_boot(timed()) {
            Ok(t) => t,
            Err(reason) => return Outcome::Skipped(reason),
        };
        let footprint = match footprint(resident()) {
            Ok(f) => f,
            Err(reason) => return Outcome::Skipped(reason),
        };
        if i >= WARMUPS {
            timings.push(timing);
            footprints.push(footprint);
            if let (Some(times), Some(us)) = (boot_times.as_deref_mut(), boot_us) {
                times.push(us);
            }
        }
    }
    Outcome::Measured {
        timings,
        footprints,
    }
}

/// Spawns `cmd`, times its first stdout line carrying the marker and its exit (which must be
/// a success); returns berth's Guest-boot-time from stderr too, when it printed one.
fn time_boot(mut cmd: Command) -> Result<(Timing, Option<f64>), String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut marker = None;
    let mut out = String::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if marker.is_none() && line.contains(guests::HELLO) {
            marker = Some(start.elapsed());
        }
        out.push_str(&line);
        out.push('\n');
    }
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    let exit = start.elapsed();
    let err = err_reader.join().unwrap_or_default();
    let Some(marker) = marker else {
        return Err(format!(
            "no marker on stdout ({status}); stdout: {out:?}; stderr: {err:?}"
        ));
    };
    if !status.success() {
        return Err(format!("exited with {status}; stderr: {err:?}"));
    }
    let boot_us = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("berth: Guest-boot-time = ")?
                .strip_suffix(" us")
        })
        .and_then(|us| us.parse().ok());
    Ok((
        Timing {
            marker_ms: marker.as_secs_f64() * 1000.0,
            exit_ms: exit.as_secs_f64() * 1000.0,
        },
        boot_us,
    ))
}

/// Spawns `cmd` (the halting guest), waits for the guest to halt, reads the VMM's memory, and
/// kills it.
fn footprint(mut cmd: Command) -> Result<Footprint, String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut halted = false;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if line.contains("berth-tiny-guest: halting") {
            halted = true;
            break;
        }
    }
    let measured = if halted {
        // The process running the guest: the last berth-vmm below the one spawned (the
        // jailed VMM, below its waiter), else the one spawned (QEMU).
        let chain: Vec<u32> = berth::bench::procs::tree(pid as i32)[1..]
            .iter()
            .map(|&p| p as u32)
            .collect();
        let vmm = chain
            .iter()
            .copied()
            .rfind(|p| {
                fs::read_link(format!("/proc/{p}/exe"))
                    .is_ok_and(|e| e.file_name().is_some_and(|n| n == "berth-vmm"))
            })
            .unwrap_or(pid);
        let helpers: u64 = std::iter::once(pid)
            .chain(chain)
            .filter(|p| *p != vmm)
            .map(|p| read_footprint(p).map_or(0, |f| f.rss_kib))
            .sum();
        read_footprint(vmm).map(|f| Footprint {
            helpers_kib: helpers,
            ..f
        })
    } else {
        Err("the halting guest ended before halting".into())
    };
    let _ = child.kill();
    let _ = child.wait();
    measured
}

/// The process's Rss, and the Rss of its guest-RAM mapping: the anonymous mappings of at
/// least the guest's size and at most 8 MiB more (QEMU pads its RAM block).
fn read_footprint(pid: u32) -> Result<Footprint, String> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map_err(|e| format!("reading /proc/{pid}/smaps: {e}"))?;
    let guest_min = MEM_MIB << 10;
    let guest_max = guest_min + (8 << 10);
    let (mut rss_kib, mut anon_kib, mut guest_kib) = (0, 0, 0);
    let mut is_guest = false;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: range, perms, offset, dev, inode, [path].
            is_guest = fields.nth(4).is_none();
            continue;
        }
        let kib = || fields.clone().next().and_then(|v| v.parse::<u64>().ok());
        match first {
            "Size:" => {
                let size = kib().unwrap_or(0);
                is_guest = is_guest && (guest_min..=guest_max).contains(&size);
            }
            "Rss:" => {
                let rss = kib().unwrap_or(0);
                rss_kib += rss;
                if is_guest {
                    guest_kib += rss;
                }
            }
            "Anonymous:" => anon_kib += kib().unwrap_or(0),
            _ => {}
        }
    }
    Ok(Footprint {
        rss_kib,
        anon_kib,
        guest_kib,
        helpers_kib: 0,
    })
}

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(values: &[f64]) -> Stats {
    let mut sorted = values.to_vec();
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

/// Medians of (marker ms, exit ms, RSS MiB without guest RAM, anonymous MiB without guest
/// RAM, RSS MiB).
fn medians(timings: &[Timing], footprints: &[Footprint]) -> [f64; 5] {
    let mib = |kib: u64| kib as f64 / 1024.0;
    [
        stats(&timings.iter().map(|t| t.marker_ms).collect::<Vec<_>>()).median,
        stats(&timings.iter().map(|t| t.exit_ms).collect::<Vec<_>>()).median,
        stats(
            &footprints
                .iter()
                .map(|f| mib(f.rss_kib - f.guest_kib))
                .collect::<Vec<_>>(),
        )
        .median,
        stats(
            &footprints
                .iter()
                .map(|f| mib(f.anon_kib.saturating_sub(f.guest_kib)))
                .collect::<Vec<_>>(),
        )
        .median,
        stats(
            &footprints
                .iter()
                .map(|f| mib(f.rss_kib))
                .collect::<Vec<_>>(),
        )
        .median,
    ]
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.system.len()).max().unwrap_or(10);
    let berth = match &rows[0].outcome {
        Outcome::Measured {
            timings,
            footprints,
        } => Some(medians(timings, footprints)),
        Outcome::Skipped(_) => None,
    };
    println!();
    println!(
        "{:<width$}  {:>9}  {:>8}  {:>13}  {:>14}  {:>7}  {:>22}",
        "system (medians)",
        "marker ms",
        "exit ms",
        "RSS-guest MiB",
        "anon-guest MiB",
        "RSS MiB",
        "peer/berth (m, e, rss)"
    );
    for row in rows {
        match &row.outcome {
            Outcome::Measured {
                timings,
                footprints,
            } => {
                let m = medians(timings, footprints);
                let ratio = berth
                    .map(|b| {
                        format!(
                            "{:.1}x {:.1}x {:.1}x",
                            m[0] / b[0],
                            m[1] / b[1],
                            m[2] / b[2]
                        )
                    })
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<width$}  {:>9.1}  {:>8.1}  {:>13.2}  {:>14.2}  {:>7.2}  {:>22}",
                    row.system, m[0], m[1], m[2], m[3], m[4], ratio
                );
            }
            Outcome::Skipped(reason) => println!("{:<width$}  skipped: {reason}", row.system),
        }
    }
    println!(
        "RSS-guest: the VMM's resident memory at the guest's marker minus the guest RAM the \
         guest touched; anon-guest: the same for its anonymous (private) memory, without the \
         binary's and shared libraries' file pages"
    );
}

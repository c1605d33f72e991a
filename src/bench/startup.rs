//! `berth bench startup`: the end-to-end time of "start a sandbox running `true` and wait for
//! it to exit", for each wall of berth and each peer, after warm-up runs.

use std::process::Command;

use super::peers::{self, Peer, Podman};
use super::report::{Measured, Report, Row};
use super::{interrupted, time_command, BenchEnv, BenchError, Machine, Ran, Wall};

/// What `berth bench startup` was asked.
#[derive(Debug, Clone)]
pub struct StartupOptions {
    pub image: String,
    pub runs: usize,
    pub warmups: usize,
    pub walls: Vec<Wall>,
    pub peers: Vec<Peer>,
}

/// The command line that boots the marker initramfs, for berth's VMM and QEMU alike.
const MARKER_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off quiet rdinit=/init";

/// Measures every asked system; rows for those that cannot run here say why.
pub fn run(env: &BenchEnv, opts: &StartupOptions) -> Result<Report, BenchError> {
    if opts.runs == 0 {
        return Err(BenchError::Zero { flag: "runs" });
    }
    env.check_image(&opts.image)?;
    let machine = Machine::probe();
    let image = opts.image.as_str();
    let mut rows = Vec::new();
    let kvm_unusable = peers::kvm_unusable();

    if opts.walls.contains(&Wall::Container) {
        let args = ["run", "--rm", "--network", "none", image, "true"];
        let result = measure(env, opts, "berth container", |_| env.berth(&args), no_boot);
        rows.push(row(
            "berth container",
            Wall::Container,
            true,
            "berth",
            &args,
            result,
        ));
    }
    check()?;
    if opts.walls.contains(&Wall::Vm) {
        let args = ["run", "--vm", "--rm", "--network", "none", image, "true"];
        let result = match &kvm_unusable {
            Some(why) => Err(why.clone()),
            None => measure(
                env,
                opts,
                "berth microVM",
                |_| {
                    let mut cmd = env.berth(&args);
                    cmd.env("BERTH_BOOT_TIMES", "1");
                    cmd
                },
                agent_ready,
            ),
        };
        rows.push(row("berth microVM", Wall::Vm, true, "berth", &args, result));
    }
    check()?;

    for &peer in &opts.peers {
        match peer {
            Peer::Podman => rows.push(podman(env, opts)),
            Peer::Crun => rows.push(oci_runtime(env, opts)),
            Peer::Bwrap => rows.push(bwrap(env, opts)),
            Peer::Qemu => rows.extend(vmm_and_qemu(env, opts, kvm_unusable.as_deref())),
            Peer::Unshare => {
                let args = ["-Urmpf", "true"];
                let result = match super::have("unshare") {
                    None => Err("unshare not installed (apt-get install util-linux)".into()),
                    Some(_) => measure(
                        env,
                        opts,
                        "unshare",
                        |_| {
                            let mut c = Command::new("unshare");
                            c.args(args);
                            c
                        },
                        no_boot,
                    ),
                };
                let mut r = row(
                    "unshare -Urmpf (floor)",
                    Wall::Container,
                    false,
                    "unshare",
                    &args,
                    result,
                );
                r.note = Some("namespaces and nothing else: no image, no mounts".into());
                rows.push(r);
            }
        }
        check()?;
    }

    Ok(Report {
        benchmark: "startup",
        machine,
        date: date(),
        image: opts.image.clone(),
        runs: opts.runs,
        warmups: opts.warmups,
        rows,
    })
}

pub(crate) fn date() -> String {
    let stamp = crate::clock::rfc3339(crate::clock::now_nanos());
    // Seconds are enough for a report.
    format!("{}Z", &stamp[..19])
}

fn check() -> Result<(), BenchError> {
    if interrupted() {
        return Err(BenchError::Interrupted);
    }
    Ok(())
}

pub(crate) fn row(
    name: &str,
    wall: Wall,
    berth: bool,
    program: &str,
    args: &[&str],
    result: Result<Measured, String>,
) -> Row {
    Row {
        name: name.into(),
        wall,
        berth,
        command: std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" "),
        result,
        note: None,
    }
}

/// A run's guest boot figure from its output, or why the run does not count.
type BootFrom = fn(&str, &str) -> Result<Option<f64>, String>;

fn no_boot(_: &str, _: &str) -> Result<Option<f64>, String> {
    Ok(None)
}

/// `berth: microVM agent ready N ms after start (guest uptime M ms)`: M.
fn agent_ready(_stdout: &str, stderr: &str) -> Result<Option<f64>, String> {
    let line = stderr
        .lines()
        .find(|l| l.contains("agent ready"))
        .ok_or("berth printed no agent ready time")?;
    let uptime = line
        .split("guest uptime ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| format!("cannot read the guest uptime in {line:?}"))?;
    Ok(Some(uptime))
}

/// `BENCH-MARKER <seconds>` printed by the marker initramfs: the guest's uptime in ms.
fn marker(stdout: &str, _stderr: &str) -> Result<Option<f64>, String> {
    let secs = stdout
        .lines()
        .find_map(|l| l.split("BENCH-MARKER ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or("the guest never printed its marker (did it boot?)")?;
    Ok(Some(secs * 1000.0))
}

/// Warm-ups, then `opts.runs` timed runs of `make(i)`'s command; the first failure skips the
/// system with its reason.
fn measure(
    env: &BenchEnv,
    opts: &StartupOptions,
    label: &str,
    make: impl Fn(usize) -> Command,
    boot: BootFrom,
) -> Result<Measured, String> {
    measure_with(env, opts.warmups, opts.runs, label, make, boot)
}

/// [`measure`] for a command with no guest: `warmups`, then `runs` timed runs.
pub(crate) fn measure_runs(
    env: &BenchEnv,
    warmups: usize,
    runs: usize,
    label: &str,
    make: impl Fn(usize) -> Command,
) -> Result<Measured, String> {
    measure_with(env, warmups, runs, label, make, no_boot)
}

fn measure_with(
    env: &BenchEnv,
    warmups: usize,
    runs: usize,
    label: &str,
    make: impl Fn(usize) -> Command,
    boot: BootFrom,
) -> Result<Measured, String> {
    let bar = super::progress(warmups + runs, label);
    let mut m = Measured::default();
    for i in 0..warmups + runs {
        let warm = i < warmups;
        bar.set_message(if warm { "warm-up" } else { "" });
        match time_command(env, make(i)) {
            Ran::Ok(elapsed, stdout, stderr) => {
                let b = boot(&stdout, &stderr).inspect_err(|_| bar.finish_and_clear())?;
                if !warm {
                    m.times_ms.push(elapsed.as_secs_f64() * 1000.0);
                    m.boot_ms.extend(b);
                }
            }
            Ran::Failed(reason) => {
                bar.finish_and_clear();
                return Err(format!("failed: {reason}"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(m)
}

fn podman(env: &BenchEnv, opts: &StartupOptions) -> Row {
    let prepared = Podman::prepare(env, &opts.image);
    let runtime = prepared.as_ref().map(|p| p.runtime).unwrap_or("runc");
    let args = [
        "run",
        "--rm",
        "--network",
        "none",
        "--runtime",
        runtime,
        "IMAGE",
        "true",
    ];
    let result = prepared.and_then(|p| {
        let mut a = args;
        a[6] = &p.image;
        measure(env, opts, "podman", |_| p.command(&a), no_boot)
    });
    let mut r = row(
        &format!("podman ({runtime}, overlay)"),
        Wall::Container,
        false,
        "podman",
        &args,
        result,
    );
    r.command = r.command.replace("IMAGE", &opts.image);
    r
}

/// `crun run` on a bundle of the image, or `runc run` where crun refuses this host.
fn oci_runtime(env: &BenchEnv, opts: &StartupOptions) -> Row {
    let bundle = match peers::bundle(env, &opts.image) {
        Ok(b) => b,
        Err(reason) => {
            return row(
                "crun (bundle)",
                Wall::Container,
                false,
                "crun",
                &[],
                Err(reason),
            );
        }
    };
    let state = env.scratch.join("oci-state");
    let bundle_s = bundle.display().to_string();
    let attempt = |runtime: &str, extra: &[&str]| -> (Vec<String>, Result<Measured, String>) {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--root".into(),
            state.join(runtime).display().to_string(),
            "run".into(),
            "-b".into(),
            bundle_s.clone(),
        ]);
        let id = env.sandbox_name(runtime, 0);
        args.push(id);
        let result = match super::have(runtime) {
            None => Err(format!(
                "{runtime} not installed (apt-get install {runtime})"
            )),
            Some(_) => measure(
                env,
                opts,
                runtime,
                |_| {
                    let mut c = Command::new(runtime);
                    c.args(&args).current_dir(&bundle);
                    c
                },
                no_boot,
            ),
        };
        (args, result)
    };
    let (args, crun) = attempt("crun", &["--cgroup-manager=disabled"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    match crun {
        Ok(m) => row(
            "crun (bundle)",
            Wall::Container,
            false,
            "crun",
            &refs,
            Ok(m),
        ),
        Err(crun_reason) if !interrupted() => {
            let (args, runc) = attempt("runc", &[]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut r = match runc {
                Ok(m) => row(
                    "runc (bundle)",
                    Wall::Container,
                    false,
                    "runc",
                    &refs,
                    Ok(m),
                ),
                Err(runc_reason) => row(
                    "crun (bundle)",
                    Wall::Container,
                    false,
                    "crun",
                    &refs,
                    Err(format!("crun {crun_reason}; runc {runc_reason}")),
                ),
            };
            if r.result.is_ok() {
                r.note = Some(format!("runc stands in for crun, which {crun_reason}"));
            }
            r
        }
        Err(reason) => row(
            "crun (bundle)",
            Wall::Container,
            false,
            "crun",
            &refs,
            Err(reason),
        ),
    }
}

fn bwrap(env: &BenchEnv, opts: &StartupOptions) -> Row {
    let name = "bwrap --unshare-all (same rootfs)";
    if super::have("bwrap").is_none() {
        return row(
            name,
            Wall::Container,
            false,
            "bwrap",
            &[],
            Err("bwrap not installed (apt-get install bubblewrap)".into()),
        );
    }
    let rootfs = env.scratch.join("bundle/rootfs");
    let bundle = if rootfs.join("bin").exists() {
        Ok(())
    } else {
        peers::bundle(env, &opts.image).map(|_| ())
    };
    let rootfs_s = rootfs.display().to_string();
    let args = [
        "--unshare-all",
        "--ro-bind",
        rootfs_s.as_str(),
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "true",
    ];
    let result = bundle.and_then(|_| {
        measure(
            env,
            opts,
            "bwrap",
            |_| {
                let mut c = Command::new("bwrap");
                c.args(args);
                c
            },
            no_boot,
        )
    });
    row(name, Wall::Container, false, "bwrap", &args, result)
}

/// berth's VMM and QEMU's microvm machine booting the same kernel and marker initramfs: the
/// VMMs alone, without images or agents.
fn vmm_and_qemu(env: &BenchEnv, opts: &StartupOptions, kvm_unusable: Option<&str>) -> Vec<Row> {
    let vmm_name = "berth vmm (same kernel, busybox init)";
    let qemu_name = "qemu microvm (same kernel, busybox init)";
    let prepared = (|| {
        if let Some(why) = kvm_unusable {
            return Err(why.to_string());
        }
        super::have("qemu-system-x86_64")
            .ok_or("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")?;
        let kernel = peers::guest_kernel(env)?;
        let initrd = peers::marker_initramfs(env)?;
        Ok((kernel, initrd))
    })();
    let (kernel, initrd) = match prepared {
        Ok(p) => p,
        Err(reason) => {
            return vec![
                row(
                    vmm_name,
                    Wall::Vm,
                    true,
                    "berth",
                    &["vmm"],
                    Err(reason.clone()),
                ),
                row(
                    qemu_name,
                    Wall::Vm,
                    false,
                    "qemu-system-x86_64",
                    &[],
                    Err(reason),
                ),
            ]
        }
    };
    let (k, i) = (kernel.display().to_string(), initrd.display().to_string());
    let vmm_args = [
        "vmm",
        "--kernel",
        k.as_str(),
        "--initrd",
        i.as_str(),
        "--memory",
        "256M",
        "--cmdline",
        MARKER_CMDLINE,
    ];
    let vmm = measure(env, opts, "berth vmm", |_| env.berth(&vmm_args), marker);
    let append = format!("{MARKER_CMDLINE} reboot=t");
    let qemu_args = [
        "-M",
        "microvm,pic=off,pit=off,rtc=off",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256M",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        k.as_str(),
        "-initrd",
        i.as_str(),
        "-append",
        append.as_str(),
    ];
    let qemu = measure(
        env,
        opts,
        "qemu microvm",
        |_| {
            let mut c = Command::new("qemu-system-x86_64");
            c.args(qemu_args);
            c
        },
        marker,
    );
    vec![
        row(vmm_name, Wall::Vm, true, "berth", &vmm_args, vmm),
        row(
            qemu_name,
            Wall::Vm,
            false,
            "qemu-system-x86_64",
            &qemu_args,
            qemu,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_figures_are_read_from_what_berth_and_the_guest_print() {
        let err = "berth: microVM agent ready 812 ms after start (guest uptime 640 ms)\n";
        assert_eq!(agent_ready("", err).unwrap(), Some(640.0));
        assert!(agent_ready("", "nothing").is_err());
        assert_eq!(marker("x\nBENCH-MARKER 0.52\n", "").unwrap(), Some(520.0));
        assert!(marker("Kernel panic", "").is_err());
    }
}

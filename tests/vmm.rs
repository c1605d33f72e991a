//! `berth vmm` on this host's /dev/kvm with the tiny test guest (tests/guests/tiny.S): the
//! boot path (PVH and 64-bit), serial console, memory and vCPUs as the guest sees them, the
//! clean exit on reset, the error paths, and `kill -9` leaving nothing behind.
//!
//! Needs /dev/kvm usable by the test user (scripts/setup-host makes it so) and binutils; skips
//! without them, except under CI=true.

mod common;
#[path = "guests/mod.rs"]
mod guests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{code, describe, skip, stderr, stdout, Berth};
use guests::Variant;
use nix::sys::signal::Signal;

/// A fixture for VMM tests (no image needed) and the guest, or `None` after a skip.
fn setup(variant: Variant) -> Option<(Berth, PathBuf)> {
    if !Path::new("/dev/kvm").exists() {
        skip("no /dev/kvm on this host: the VMM tests need KVM");
        return None;
    }
    let guest = match guests::build(variant) {
        Ok(path) => path,
        Err(reason) => {
            skip(&reason);
            return None;
        }
    };
    let berth = Berth::options().no_image().start()?;
    Some((berth, guest))
}

fn vmm_args<'a>(guest: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["vmm", "--kernel", guest.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    args
}

/// `berth vmm` with the guest, which must exit 0; returns stdout and stderr.
fn boot_ok(berth: &Berth, guest: &Path, extra: &[&str]) -> (String, String) {
    let args = vmm_args(guest, extra);
    let out = berth.cmd(&args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    (stdout(&out), stderr(&out))
}

#[test]
fn tiny_guest_prints_its_marker_and_exits_0_on_reset() {
    let Some((berth, guest)) = setup(Variant::Reset) else {
        return;
    };
    let (out, err) = boot_ok(&berth, &guest, &["--memory", "64M", "--cpus", "2"]);
    assert!(out.starts_with(guests::HELLO), "{out}");
    assert!(out.contains("berth-tiny-guest: memory-mib=64\n"), "{out}");
    assert!(out.contains("berth-tiny-guest: cpus=2\n"), "{out}");
    assert!(out.ends_with("berth-tiny-guest: reset\n"), "{out}");
    assert!(err.contains("berth: guest reset"), "{err}");
    // The guest wrote the boot timer after its boot information.
    let boot_us: u64 = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("berth: Guest-boot-time = ")?
                .strip_suffix(" us")
        })
        .unwrap_or_else(|| panic!("no boot time on stderr: {err}"))
        .parse()
        .expect("boot time in microseconds");
    assert!(boot_us > 0 && boot_us < 60_000_000, "{boot_us}");
}

#[test]
fn memory_size_reaches_the_guest_memory_map() {
    let Some((berth, guest)) = setup(Variant::Reset) else {
        return;
    };
    for (flag, mib) in [("256M", 256), ("1G", 1024), ("4G", 4096)] {
        let (out, _) = boot_ok(&berth, &guest, &["--memory", flag]);
        let want = format!("berth-tiny-guest: memory-mib={mib}\n");
        assert!(out.contains(&want), "--memory {flag}: {out}");
    }
}

#[test]
fn vcpu_count_reaches_the_guest_mp_table() {
    let Some((berth, guest)) = setup(Variant::Reset) else {
        return;
    };
    for cpus in ["1", "4"] {
        let (out, _) = boot_ok(&berth, &guest, &["--memory", "32M", "--cpus", cpus]);
        let want = format!("berth-tiny-guest: cpus={cpus}\n");
        assert!(out.contains(&want), "--cpus {cpus}: {out}");
    }
}

#[test]
fn command_line_reaches_the_guest() {
    let Some((berth, guest)) = setup(Variant::Reset) else {
        return;
    };
    let (out, _) = boot_ok(&berth, &guest, &["--cmdline", "berth.test=1 quiet"]);
    assert!(
        out.contains("berth-tiny-guest: cmdline=berth.test=1 quiet\n"),
        "{out}"
    );
    let (out, _) = boot_ok(&berth, &guest, &[]);
    assert!(
        out.contains("berth-tiny-guest: cmdline=console=ttyS0 reboot=k panic=1 pci=off\n"),
        "default command line: {out}"
    );
}

#[test]
fn initrd_reaches_the_guest_as_a_boot_module() {
    let Some((berth, guest)) = setup(Variant::Reset) else {
        return;
    };
    let content = format!("berth-initrd-ok\n{}", "x".repeat(12_000));
    let initrd = berth.host_file("initrd.img", &content);
    let initrd = initrd.to_str().unwrap();
    let (out, _) = boot_ok(&berth, &guest, &["--memory", "16M", "--initrd", initrd]);
    let want = format!(
        "berth-tiny-guest: initrd-bytes={} initrd-head=berth-initrd-ok\n",
        content.len()
    );
    assert!(out.contains(&want), "{out}");
    // Without --initrd the guest sees no module.
    let (out, _) = boot_ok(&berth, &guest, &["--memory", "16M"]);
    assert!(!out.contains("initrd-bytes"), "{out}");
}

#[test]
fn initrd_too_big_for_memory_is_refused() {
    let Some((berth, guest)) = setup(Variant::Reset) else {
        return;
    };
    let initrd = berth.host_file("big.img", &"x".repeat(9 << 20));
    let args = vmm_args(
        &guest,
        &["--memory", "8M", "--initrd", initrd.to_str().unwrap()],
    );
    let out = berth.cmd(&args);
    assert_eq!(code(&out), 1, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("big.img: the initrd (9437184 bytes) does not fit in guest memory above the kernel: raise --memory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn elf_without_pvh_note_boots_in_long_mode() {
    let Some((berth, guest)) = setup(Variant::LongMode) else {
        return;
    };
    let (out, err) = boot_ok(&berth, &guest, &["--memory", "64M"]);
    assert_eq!(out, "berth-tiny-guest: hello from long mode\n");
    assert!(err.contains("berth: guest reset"), "{err}");
}

#[test]
fn triple_fault_is_a_clear_error() {
    let Some((berth, guest)) = setup(Variant::TripleFault) else {
        return;
    };
    let args = vmm_args(&guest, &["--memory", "64M"]);
    let out = berth.cmd(&args);
    assert_eq!(code(&out), 1, "{}", describe(&args, &out));
    assert!(stdout(&out).starts_with(guests::HELLO), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the guest triple-faulted on vCPU 0 at rip 0x"),
        "{err}"
    );
    // Its paging state: the tiny guest runs in 32-bit protected mode, without paging.
    assert!(
        err.contains("; cr0 0x11 cr3 0x0") && err.contains("not in long mode with paging"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line of error: {err}");
}

#[test]
fn kill_9_leaves_no_process_behind() {
    let Some((berth, guest)) = setup(Variant::Halt) else {
        return;
    };
    let args = vmm_args(&guest, &["--memory", "64M", "--cpus", "2"]);
    let mut vmm = berth.spawn(&args);
    vmm.wait_for_line("berth-tiny-guest: halting", Duration::from_secs(60));
    let pid = vmm.pid();
    vmm.signal(Signal::SIGKILL);
    let out = vmm.wait(Duration::from_secs(10));
    assert_eq!(code(&out), 128 + 9, "{}", describe(&args, &out));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "berth vmm (pid {pid}) still exists"
    );
    // Dropping the fixture checks that no process of this fixture is left.
    assert!(berth.own_processes().is_empty());
}

#[test]
fn sigterm_ends_a_halted_guest() {
    let Some((berth, guest)) = setup(Variant::Halt) else {
        return;
    };
    let args = vmm_args(&guest, &["--memory", "64M"]);
    let mut vmm = berth.spawn(&args);
    vmm.wait_for_line("berth-tiny-guest: halting", Duration::from_secs(60));
    vmm.signal(Signal::SIGTERM);
    let out = vmm.wait(Duration::from_secs(10));
    assert_eq!(code(&out), 128 + 15, "{}", describe(&args, &out));
}

#[test]
fn a_file_that_is_not_a_kernel_is_refused_clearly() {
    let Some((berth, _)) = setup(Variant::Reset) else {
        return;
    };
    let text = berth.host_file("notes.txt", "not a kernel\n");
    let args = ["vmm", "--kernel", text.to_str().unwrap()];
    let out = berth.cmd(&args);
    assert_eq!(code(&out), 1, "{}", describe(&args, &out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "notes.txt: not a kernel: berth boots ELF kernels (PVH or 64-bit vmlinux) and bzImages"
        ),
        "{err}"
    );

    let args = ["vmm", "--kernel", "/nonexistent/vmlinux"];
    let out = berth.cmd(&args);
    assert_eq!(code(&out), 1, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("/nonexistent/vmlinux: cannot read it"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_sizes_are_refused_with_the_range() {
    let Some((berth, guest)) = setup(Variant::Reset) else {
        return;
    };
    for (flags, message) in [
        (["--memory", "1M"], "pick --memory between 8M and 1024G"),
        (["--memory", "lots"], "invalid --memory \"lots\""),
        (["--cpus", "0"], "--cpus must be at least 1"),
    ] {
        let args = vmm_args(&guest, &flags);
        let out = berth.cmd(&args);
        assert_eq!(code(&out), 1, "{}", describe(&args, &out));
        assert!(stderr(&out).contains(message), "{}", describe(&args, &out));
        assert!(stdout(&out).is_empty(), "{}", describe(&args, &out));
    }
}

#[test]
fn a_forbidden_system_call_ends_the_vmm_with_a_report() {
    let Some((berth, guest)) = setup(Variant::Reset) else {
        return;
    };
    // The hook makes the first thread of a kind call socket() once filtered: a vCPU thread
    // (which emulates the devices the guest touches) and the main thread (once the guest runs).
    for kind in ["vcpu", "main"] {
        let args = vmm_args(&guest, &["--memory", "64M"]);
        let mut cmd = berth.command(&args);
        cmd.env("BERTH_VMM_TEST_SECCOMP", kind);
        let out = common::finish(cmd, None, &args);
        assert_eq!(code(&out), 1, "{kind}: {}", describe(&args, &out));
        let want = format!(
            "the VMM's {kind} thread made system call {} (socket), which its seccomp filter forbids, and the VMM was stopped",
            libc::SYS_socket
        );
        assert!(
            stderr(&out).contains(&want),
            "{kind}: {}",
            describe(&args, &out)
        );
        assert!(
            !stdout(&out).contains("berth-tiny-guest: reset"),
            "{kind}: the guest ran on: {}",
            describe(&args, &out)
        );
    }
}

#[test]
fn the_vmm_is_a_small_program_in_namespaces_of_its_own_with_an_empty_root() {
    let Some((berth, guest)) = setup(Variant::Halt) else {
        return;
    };
    let args = vmm_args(&guest, &["--memory", "64M", "--cpus", "2"]);
    let mut vmm = berth.spawn(&args);
    vmm.wait_for_line("berth-tiny-guest: halting", Duration::from_secs(60));
    let berth_pid = vmm.pid();
    // berth -> berth-vmm (the waiter, outside the VMM's PID namespace) -> berth-vmm (the VMM).
    let below = berth::bench::procs::tree(berth_pid)[1..].to_vec();
    assert_eq!(below.len(), 2, "processes below berth: {below:?}");
    for p in &below {
        let exe = std::fs::read_link(format!("/proc/{p}/exe")).unwrap();
        assert_eq!(
            exe.file_name().unwrap(),
            "berth-vmm",
            "pid {p} runs {}",
            exe.display()
        );
    }
    let pid = below[1];
    let ns = |p: i32, kind: &str| std::fs::read_link(format!("/proc/{p}/ns/{kind}")).unwrap();
    for kind in ["user", "mnt", "pid", "net", "ipc", "uts"] {
        assert_ne!(
            ns(pid, kind),
            ns(berth_pid, kind),
            "{kind} namespace shared"
        );
    }
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(root.is_empty(), "the VMM's root holds {root:?}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for line in [
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
    ] {
        assert!(status.contains(line), "no {line:?} in\n{status}");
    }
    // Every thread (main, two vCPUs; KVM may add a kernel worker of its own, such as
    // kvm-nx-lpage-recovery) under a filter.
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let names: Vec<String> = tasks
        .iter()
        .map(|t| {
            std::fs::read_to_string(t.join("comm"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    let ours = names.iter().filter(|n| n.starts_with("berth-")).count();
    assert_eq!(ours, 3, "{names:?}");
    for task in &tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        assert!(
            status.contains("Seccomp:\t2"),
            "{}:\n{status}",
            task.display()
        );
    }
    // Of the host's files it holds only /dev/kvm: the rest are pipes, sockets and KVM's own.
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let target = std::fs::read_link(fd.unwrap().path()).unwrap();
        let t = target.to_string_lossy();
        assert!(
            t == "/dev/kvm"
                || t == "/dev/null"
                || t.starts_with("pipe:")
                || t.starts_with("socket:")
                || t.starts_with("anon_inode:"),
            "the VMM holds {t}"
        );
    }
    vmm.signal(Signal::SIGTERM);
    vmm.wait(Duration::from_secs(10));
}

#[test]
fn a_shared_directory_is_all_of_the_host_in_the_vmm_root() {
    let Some((berth, guest)) = setup(Variant::Halt) else {
        return;
    };
    let dir = berth.host_mkdir("shared");
    berth.host_file("shared/hello", "hi\n");
    let share = format!("{}:berth0:ro", dir.display());
    let args = vmm_args(&guest, &["--memory", "64M", "--share", &share]);
    let mut vmm = berth.spawn(&args);
    vmm.wait_for_line("berth-tiny-guest: halting", Duration::from_secs(60));
    let below = berth::bench::procs::tree(vmm.pid())[1..].to_vec();
    assert_eq!(below.len(), 2, "processes below berth: {below:?}");
    let root = format!("/proc/{}/root", below[1]);
    let list = |path: &str| {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(list(&root), ["proc", "shares"]);
    assert_eq!(list(&format!("{root}/shares/0")), ["hello"]);
    // The VMM's proc is of its own PID namespace: itself alone.
    let pids: Vec<String> = list(&format!("{root}/proc"))
        .into_iter()
        .filter(|n| n.parse::<u32>().is_ok())
        .collect();
    assert_eq!(pids, ["1"]);
    // Read-only in the jail, whatever the guest asks of the 9P server.
    let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", below[1])).unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/shares/0"))
        .unwrap_or_else(|| panic!("no /shares/0 in\n{mounts}"));
    assert!(
        line.split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{line}"
    );
    vmm.signal(Signal::SIGTERM);
    vmm.wait(Duration::from_secs(10));
}

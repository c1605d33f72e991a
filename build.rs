//! Builds `berth-monitor` (monitor/), the program that runs once per detached sandbox, as a
//! static executable, and puts it next to the `berth` binary being built, where berth looks
//! for it (`berth::monitor::program`).
//!
//! Why here and not as a `[[bin]]` of this package: cargo gives every binary of a package the
//! same flags, and the monitor's memory depends on how it is linked. Measured with 20 idle
//! containers (PSS per monitor, `/proc/PID/smaps_rollup`): linked dynamically against glibc
//! 188 KiB (ld.so's and libc's relocated data and libc's heap are private to each process),
//! static glibc 139 KiB (the static glibc code paged in is 0.8 MiB, shared between monitors
//! only), static musl 65 KiB. So the monitor is its own small package (std and libc, berth's
//! `src/monitor/` and `src/clock.rs` compiled again), built here with its own cargo for
//! `<arch>-unknown-linux-musl` (`rustup target add x86_64-unknown-linux-musl`; scripts/lib.sh
//! adds it), else as static glibc with a warning.
//!
//! `berth-vmm` (vmm/), the program that runs a microVM's guest, jailed, is built the same way
//! and for the same reasons, into its own target directory: a small static program is what
//! the VMM's jail wants (an empty root has no ld.so or libc to load) and what keeps its memory
//! beside the guest's small.
//!
//! It also compiles `berth-dmz` (src/container/dmz.c), the few-KiB static program berth runs
//! inside a container from a sealed memfd (see src/container/dmz.rs), with the C compiler
//! that links Rust programs here anyway.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    for p in [
        "monitor/main.rs",
        "monitor/Cargo.toml",
        "monitor/Cargo.lock",
        "src/monitor",
        "src/clock.rs",
        "vmm/src",
        "vmm/Cargo.toml",
        "vmm/Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env("OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/berth-HASH/out; berth itself lands in <profile>.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR is <target>/<profile>/build/<pkg>/out")
        .to_path_buf();
    // One build of the monitor for every profile of berth (it always uses its own release
    // profile); its cargo locks that directory, so concurrent berth builds share it safely.
    let target_root = profile_dir
        .parent()
        .expect("the profile directory has a parent")
        .to_path_buf();

    let arch = env("CARGO_CFG_TARGET_ARCH");
    let musl = format!("{arch}-unknown-linux-musl");
    let musl_installed = target_installed(&musl);
    if !musl_installed {
        println!(
            "cargo:warning=berth-monitor and berth-vmm: the Rust target {musl} is not installed, \
             so they are linked statically against glibc (about twice the memory per sandbox); \
             run `rustup target add {musl}` and build again"
        );
    }
    for (dir, program) in [("monitor", "berth-monitor"), ("vmm", "berth-vmm")] {
        let target_dir = target_root.join(program);
        let built = if musl_installed {
            build(&manifest_dir, dir, program, &target_dir, &musl, &[])
        } else {
            let target = env("TARGET");
            build(
                &manifest_dir,
                dir,
                program,
                &target_dir,
                &target,
                &["-C", "target-feature=+crt-static"],
            )
        };
        install(&built, &profile_dir.join(program));
    }
    build_dmz(&manifest_dir, &out_dir);
}

/// Compiles src/container/dmz.c into `OUT_DIR/berth-dmz`: freestanding (raw system calls, no
/// libc), static, stripped.
fn build_dmz(manifest_dir: &Path, out_dir: &Path) {
    let source = manifest_dir.join("src/container/dmz.c");
    println!("cargo:rerun-if-changed=src/container/dmz.c");
    println!("cargo:rerun-if-env-changed=CC");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = out_dir.join("berth-dmz");
    let status = Command::new(&cc)
        .args([
            "-static",
            "-nostdlib",
            "-nostartfiles",
            "-ffreestanding",
            "-fno-builtin",
            "-fno-stack-protector",
            "-fno-pie",
            "-no-pie",
            "-fno-asynchronous-unwind-tables",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wl,--build-id=none",
            "-Wl,--gc-sections",
            "-s",
            "-o",
        ])
        .arg(&out)
        .arg(&source)
        .stdout(std::io::stderr())
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "running {cc} to build berth-dmz: {e}; install a C compiler (apt-get install gcc)"
            )
        });
    if !status.success() {
        panic!(
            "building berth-dmz ({}) with {cc} failed ({status}); see its output above",
            source.display()
        );
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

/// Whether the toolchain building berth has the standard library for `target`.
fn target_installed(target: &str) -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    out.status.success()
        && Path::new(&sysroot)
            .join("lib/rustlib")
            .join(target)
            .join("lib")
            .is_dir()
}

/// `cargo rustc --release` of `program` in `dir` (monitor/, vmm/) for `target`, with `flags`
/// for the program's own compilation and link; returns the executable.
fn build(
    manifest_dir: &Path,
    dir: &str,
    program: &str,
    target_dir: &Path,
    target: &str,
    flags: &[&str],
) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("rustc")
        .arg("--release")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(manifest_dir.join(dir).join("Cargo.toml"))
        .arg("--target")
        .arg(target)
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--bin")
        .arg(program);
    if !flags.is_empty() {
        cmd.arg("--").args(flags);
    }
    // What the outer cargo set for berth's own compilation is not the monitor's: its flags,
    // a clippy or other wrapper, a target directory.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    // A build script's stdout is read by cargo as directives: the monitor's build talks on
    // stderr only.
    cmd.stdout(std::io::stderr());
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build {program}: {e}"));
    if !status.success() {
        panic!("building {program} ({dir}/) for {target} failed ({status}); see its output above");
    }
    target_dir.join(target).join("release").join(program)
}

/// Copies `from` to `to` through a temporary name, so that processes running the old program
/// keep it (writing over a running executable fails with ETXTBSY).
fn install(from: &Path, to: &Path) {
    let tmp = to.with_file_name(format!(
        ".{}.tmp",
        to.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::copy(from, &tmp)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), tmp.display()));
    std::fs::rename(&tmp, to)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.display(), to.display()));
}

//! The tiny test guest (`tiny.S`, linked by `tiny.ld`), assembled and linked with binutils the
//! first time a test or bench asks for it, into cargo's target tmp directory.

// The tests and the bench use different parts.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// What the guest does after printing its boot information (see tiny.S).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Resets through the i8042 (triple-faults where nothing answers, as under QEMU).
    Reset = 0,
    /// Halts forever.
    Halt = 1,
    /// Triple-faults right after its first line.
    TripleFault = 2,
    /// No PVH note: boots through the 64-bit entry, prints a line and resets.
    LongMode = 3,
}

/// The marker every variant prints first (the long-mode one on a line of its own).
pub const HELLO: &str = "berth-tiny-guest: hello";

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests")
}

/// The guest ELF for `variant`, built if missing or older than its sources; `Err` says why it
/// cannot be built (no binutils). Panics when the source does not assemble.
pub fn build(variant: Variant) -> Result<PathBuf, String> {
    // One build at a time in this process; other processes use other file names.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("berth-guests");
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    // The guest is read by berth running as the unprivileged test user.
    let _ = fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o755));
    let (source, script) = (source_dir().join("tiny.S"), source_dir().join("tiny.ld"));
    let elf = out_dir.join(format!("tiny-{}.elf", variant as u8));
    if is_newer(&elf, &[&source, &script]) {
        return Ok(elf);
    }
    // Built under unique names and renamed, so concurrent test processes never see half a file.
    let unique = format!("{}-{}", std::process::id(), variant as u8);
    let object = out_dir.join(format!("tiny-{unique}.o"));
    let partial = out_dir.join(format!("tiny-{unique}.elf.partial"));
    let defsym = format!("VARIANT={}", variant as u8);
    run(Command::new("as")
        .args(["--64", "--defsym", &defsym, "-o"])
        .arg(&object)
        .arg(&source))?;
    run(Command::new("ld")
        .args(["--no-warn-rwx-segments", "-nostdlib", "-static", "-T"])
        .arg(&script)
        .arg("-o")
        .arg(&partial)
        .arg(&object))?;
    let _ = fs::remove_file(&object);
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    fs::rename(&partial, &elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    Ok(elf)
}

fn is_newer(target: &Path, sources: &[&Path]) -> bool {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    match modified(target) {
        Some(built) => sources
            .iter()
            .all(|s| modified(s).is_some_and(|m| m <= built)),
        None => false,
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| {
        format!("cannot run {program} ({e}): install binutils (scripts/setup-host does)")
    })?;
    // A source that does not assemble is a bug to see, never a reason to skip.
    assert!(
        out.status.success(),
        "{program} failed on the tiny guest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

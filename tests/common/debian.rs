//! A real Debian 12 image with the runtimes developers run (Python, Node.js, the JVM, a Go
//! program), built by `scripts/debian-image` with debootstrap from Debian's mirror and
//! cached under `~/.cache/berth/images/` by its inputs, so a machine builds it once.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The image `scripts/debian-image` writes: Debian 12, `Cmd ["bash"]`.
pub const DEBIAN_IMAGE: &str = "localhost/berth-debian:bookworm";

/// The archive's path in the cache, or why there is none: a missing prerequisite (not root,
/// no debootstrap, Debian's mirror out of reach) is a reason to skip; any other failure of
/// the script fails the test. Built (or found) once per test process.
pub fn debian_archive() -> Result<PathBuf, String> {
    static ARCHIVE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ARCHIVE.get_or_init(build).clone()
}

fn build() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debian-image");
    let started = std::time::Instant::now();
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            // Said on stderr when it was built now (minutes), not found in the cache.
            if !stderr.is_empty() {
                eprint!("{stderr}");
                eprintln!(
                    "scripts/debian-image took {:.0}s",
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(path)
        }
        Some(2) | Some(3) => Err(format!(
            "the Debian test image cannot be built here: {}",
            stderr.trim()
        )),
        _ => panic!("{} failed ({}):\n{stderr}", script.display(), out.status),
    }
}

/// Copies the archive into `dir` (which the user berth runs as can read; the cache is
/// root's) and returns the copy's path.
pub fn copy_archive_into(archive: &Path, dir: &Path) -> PathBuf {
    let copy = dir.join("debian.oci.tar");
    fs::copy(archive, &copy)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", archive.display(), copy.display()));
    copy
}

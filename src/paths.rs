//! Where berth keeps its files: XDG data, runtime and cache directories, per user.

use std::path::PathBuf;

/// The directories one user's berth works in.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// `$XDG_DATA_HOME/berth`: content store, unpacked layers, containers.
    pub data: PathBuf,
    /// `$XDG_RUNTIME_DIR/berth` (fallback `/tmp/berth-$UID`): sockets, locks.
    pub runtime: PathBuf,
    /// `$XDG_CACHE_HOME/berth`: derived artifacts that can be rebuilt.
    pub cache: PathBuf,
}

impl Dirs {
    /// Reads the XDG variables (and `BERTH_ROOT`, which puts everything under one folder;
    /// `BERTH_RUNTIME_DIR` then moves the sockets and locks elsewhere, for a `BERTH_ROOT` on a
    /// file system without UNIX sockets, such as the 9p shares of scripts/kvm-nested).
    pub fn from_env() -> Dirs {
        if let Some(root) = std::env::var_os("BERTH_ROOT") {
            let root = PathBuf::from(root);
            let runtime = std::env::var_os("BERTH_RUNTIME_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("run"));
            return Dirs {
                data: root.join("data"),
                runtime,
                cache: root.join("cache"),
            };
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let xdg = |var: &str, fallback: PathBuf| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or(fallback)
        };
        let uid = nix::unistd::geteuid().as_raw();
        Dirs {
            data: xdg("XDG_DATA_HOME", home.join(".local/share")).join("berth"),
            runtime: xdg(
                "XDG_RUNTIME_DIR",
                PathBuf::from(format!("/tmp/berth-{uid}")),
            )
            .join("berth"),
            cache: xdg("XDG_CACHE_HOME", home.join(".cache")).join("berth"),
        }
    }
}

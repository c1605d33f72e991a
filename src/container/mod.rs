//! The container backend: runs an OCI bundle in user, mount, pid, uts, ipc, cgroup (and
//! network) namespaces. It reads nothing but the bundle's config.json.

pub mod dmz;
pub mod enter;
pub mod exec;
pub mod idmap;
pub mod mounts;
pub mod process;
pub mod pty;
pub mod seccomp;
pub mod userns;

pub use idmap::{IdMapping, IdMode, UsernsMode};
pub use process::{run, start, End, RunOptions, Started, INIT_ANNOTATION};

/// Connects a container's new network namespace before its process starts.
pub trait NetworkAttach {
    /// `pid` is a process in the container's user and network namespaces that lives as long
    /// as the container (its `/proc/PID/ns/{user,net}` name them).
    fn attach(&mut self, pid: i32) -> Result<(), String>;
}

/// Errors of the container backend.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The bundle's spec is unusable.
    #[error("invalid bundle: {0}")]
    Spec(String),
    /// Setting up the container failed before the process could start.
    #[error("{0}")]
    Setup(String),
    /// The container process could not be started; `code` is Docker's (125/126/127).
    #[error("{message}")]
    Start { code: i32, message: String },
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
    #[error(transparent)]
    Userns(#[from] userns::UsernsError),
}

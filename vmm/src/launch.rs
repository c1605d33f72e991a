//! What passes between berth and the `berth-vmm` program: one definition for both sides.
//!
//! berth starts the program with the descriptors it needs at fixed numbers from 3 on (in the
//! order berth lists them) and writes a [`Launch`] as JSON on the first of them, [`LAUNCH_FD`],
//! then closes its end. Every resource in it is a descriptor number: the program is jailed
//! before it boots the guest and opens nothing by host path (the shares' directories are bound
//! into its empty root from their descriptors).
//!
//! The program reports on the [`Launch::report`] pipe, one [`Report`] as a line (the text of
//! a failure may span lines: it is the rest of the stream), and exits 0 when the guest ended
//! the run, 1 when the VM could not boot or failed.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ExitReason, RunReport};

/// The descriptor the program reads its [`Launch`] from.
pub const LAUNCH_FD: RawFd = 3;
/// The most a [`Launch`] may take (it is a few KiB: descriptor numbers, tags, the command line).
pub const MAX_LAUNCH: u64 = 1 << 20;
/// The environment variable that makes one thread kind of the jailed VMM call a system call
/// its filter forbids (`socket`) once its filter is in place: how the tests see that a
/// violation ends the VMM with a report. Only `berth-vmm` reads it.
pub const TEST_VIOLATION_ENV: &str = "BERTH_VMM_TEST_SECCOMP";

/// A VM to boot and where its streams go; every `RawFd` is a descriptor the program inherits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Launch {
    /// /dev/kvm, opened and checked by berth.
    pub kvm: RawFd,
    pub kernel: FileFd,
    pub initrd: Option<FileFd>,
    pub cmdline: String,
    pub vcpus: u8,
    pub mem_mib: u64,
    pub disks: Vec<DiskFd>,
    pub shares: Vec<ShareFd>,
    pub balloon: bool,
    /// The serial console's output.
    pub console: RawFd,
    /// A second copy of the console (berth's stderr with BERTH_VM_DEBUG).
    pub console_copy: Option<RawFd>,
    /// The agent channel (a UNIX stream socket).
    pub channel: Option<RawFd>,
    pub net: Option<NetFd>,
    /// Where the program writes its [`Report`].
    pub report: RawFd,
}

/// An open file, with the host path berth opened it at (for messages only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileFd {
    pub fd: RawFd,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskFd {
    pub fd: RawFd,
    pub read_only: bool,
}

/// A shared directory: an `O_PATH` descriptor of it, bound into the jail at [`share_path`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareFd {
    pub fd: RawFd,
    pub tag: String,
    pub read_only: bool,
    /// What the guest sees the user's ids as ([`crate::ShareConfig::guest_owner`]).
    #[serde(default)]
    pub guest_owner: (u32, u32),
}

/// The NIC's back end: a stream of length-prefixed frames (passt) or a tap.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetFd {
    pub fd: RawFd,
    pub tap: bool,
    pub mac: [u8; 6],
}

/// Where the `index`th share is in the jail's root.
pub fn share_path(index: usize) -> PathBuf {
    PathBuf::from(format!("/shares/{index}"))
}

/// Why a launch description could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("reading the launch description on descriptor {LAUNCH_FD}")]
    Read(#[source] io::Error),
    #[error("the launch description is larger than {MAX_LAUNCH} bytes")]
    TooLarge,
    #[error("the launch description is not valid: {0}")]
    Parse(#[source] serde_json::Error),
}

impl Launch {
    /// Every descriptor the launch names, the report's included.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.kvm, self.kernel.fd, self.console, self.report];
        fds.extend(self.initrd.iter().map(|f| f.fd));
        fds.extend(self.disks.iter().map(|d| d.fd));
        fds.extend(self.shares.iter().map(|s| s.fd));
        fds.extend(self.console_copy);
        fds.extend(self.channel);
        fds.extend(self.net.iter().map(|n| n.fd));
        fds
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of numbers, strings and booleans always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a launch description to the end of `input`.
    pub fn read_from(input: impl Read) -> Result<Launch, LaunchError> {
        let mut text = Vec::new();
        input
            .take(MAX_LAUNCH + 1)
            .read_to_end(&mut text)
            .map_err(LaunchError::Read)?;
        if text.len() as u64 > MAX_LAUNCH {
            return Err(LaunchError::TooLarge);
        }
        serde_json::from_slice(&text).map_err(LaunchError::Parse)
    }
}

/// The thread kinds of the jailed VMM, each with its own seccomp filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The program's first process, outside the VMM's PID namespace: waits for the VMM.
    Waiter,
    /// The VMM's main thread: boots the VM, then waits for it to end and reports.
    Main,
    /// A vCPU thread: KVM_RUN, and the emulation of the devices the guest touches (serial,
    /// virtio-mmio registers, and the block, 9p, console and balloon requests it queues).
    Vcpu,
    /// A device I/O thread: host input for the agent channel and the NIC, the NIC's queue
    /// notifications.
    Io,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 4] = [
        ThreadKind::Waiter,
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::Io,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Waiter => "waiter",
            ThreadKind::Main => "main",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Io => "io",
        }
    }

    pub fn from_name(name: &str) -> Option<ThreadKind> {
        ThreadKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What the program says on the report pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The guest ended the run.
    Ended(RunReport),
    /// The VM could not boot or failed; the error with its causes.
    Failed(String),
    /// A thread made a system call its seccomp filter forbids, and the VMM was killed.
    Seccomp { kind: String, syscall: i64 },
}

impl Report {
    /// The report as the program writes it.
    pub fn to_text(&self) -> String {
        match self {
            Report::Ended(r) => format!(
                "ended {} {}\n",
                r.exit,
                r.boot_time
                    .map_or_else(|| "-".to_string(), |t| t.as_micros().to_string())
            ),
            Report::Failed(text) => format!("failed {text}"),
            Report::Seccomp { kind, syscall } => format!("seccomp {kind} {syscall}\n"),
        }
    }

    /// Parses what the program wrote; `None` when it wrote nothing it could mean.
    pub fn parse(text: &str) -> Option<Report> {
        let (word, rest) = text.split_once(' ')?;
        match word {
            "failed" => Some(Report::Failed(rest.trim_end().to_string())),
            "ended" => {
                let mut parts = rest.split_whitespace();
                let exit = match parts.next()? {
                    "reset" => ExitReason::Reset,
                    "power-off" => ExitReason::PowerOff,
                    "halted" => ExitReason::Halted,
                    _ => return None,
                };
                let boot_time = match parts.next()? {
                    "-" => None,
                    us => Some(Duration::from_micros(us.parse().ok()?)),
                };
                Some(Report::Ended(RunReport { exit, boot_time }))
            }
            "seccomp" => {
                let mut parts = rest.split_whitespace();
                let kind = parts.next()?.to_string();
                let syscall = parts.next()?.parse().ok()?;
                Some(Report::Seccomp { kind, syscall })
            }
            _ => None,
        }
    }

    /// Writes the report on `out` in one write (a pipe keeps writes of up to 4 KiB whole).
    pub fn write_to(&self, mut out: impl Write) -> io::Result<()> {
        out.write_all(self.to_text().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_back_as_written() {
        for r in [
            Report::Ended(RunReport {
                exit: ExitReason::Reset,
                boot_time: Some(Duration::from_micros(1234)),
            }),
            Report::Ended(RunReport {
                exit: ExitReason::PowerOff,
                boot_time: None,
            }),
            Report::Failed("the guest triple-faulted\nand more".into()),
            Report::Seccomp {
                kind: "io".into(),
                syscall: 41,
            },
        ] {
            assert_eq!(Report::parse(&r.to_text()), Some(r));
        }
        assert_eq!(Report::parse(""), None);
        assert_eq!(Report::parse("ended sideways 1"), None);
    }

    #[test]
    fn launch_reads_back_and_lists_its_descriptors() {
        let launch = Launch {
            kvm: 4,
            kernel: FileFd {
                fd: 5,
                path: "/k".into(),
            },
            initrd: None,
            cmdline: "console=ttyS0".into(),
            vcpus: 1,
            mem_mib: 64,
            disks: vec![DiskFd {
                fd: 6,
                read_only: true,
            }],
            shares: vec![ShareFd {
                fd: 7,
                tag: "s0".into(),
                read_only: false,
                guest_owner: (1000, 1000),
            }],
            balloon: false,
            console: 8,
            console_copy: None,
            channel: Some(9),
            net: None,
            report: 10,
        };
        let back = Launch::read_from(&launch.to_json()[..]).unwrap();
        assert_eq!(back, launch);
        let mut fds = back.fds();
        fds.sort();
        assert_eq!(fds, (4..=10).collect::<Vec<_>>());
        assert!(Launch::read_from(&b"{"[..]).is_err());
    }
}

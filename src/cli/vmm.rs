//! `berth vmm`: the bare microVM monitor. Boots a kernel with a serial console on stdout and
//! exits when the guest resets or powers off — for debugging kernels and measuring the VMM.

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use berth::vm::jailed::{self, JailedIo};
use berth::vm::{self, DiskConfig, ShareConfig, VmConfig};

#[derive(Args)]
pub struct VmmArgs {
    /// The kernel: a PVH ELF, an ELF vmlinux or a bzImage.
    #[arg(long, value_name = "FILE")]
    kernel: PathBuf,
    /// An initrd (or, for PVH kernels, the first boot module).
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long, value_name = "STRING", default_value = vm::DEFAULT_CMDLINE)]
    cmdline: String,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u8,
    /// Guest memory: 512M, 2G, 65536k, or a plain number of MiB.
    #[arg(long, value_name = "SIZE", default_value = "128M")]
    memory: String,
    /// A virtio block device: FILE, or FILE,ro for a read-only one (repeatable; the guest
    /// sees vda, vdb, ... in this order).
    #[arg(long, value_name = "FILE[,ro]")]
    disk: Vec<String>,
    /// A host directory the guest can mount over virtio-9p with mount tag TAG: DIR:TAG, or
    /// DIR:TAG:ro for a read-only one (repeatable).
    #[arg(long, value_name = "DIR:TAG[:ro]")]
    share: Vec<String>,
    /// Add a virtio-balloon device (the last virtio device): the guest reports the pages it
    /// frees and the VMM gives them back to the host.
    #[arg(long)]
    balloon: bool,
}

/// Runs the VM; 0 when the guest reset or powered off, 1 when it could not boot or failed.
pub fn vmm(args: VmmArgs) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => super::report(e, 1),
    }
}

fn run(args: VmmArgs) -> anyhow::Result<()> {
    let mem_mib = parse_mib(&args.memory)?;
    let config = VmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        vcpus: args.cpus,
        mem_mib,
        disks: args
            .disk
            .iter()
            .map(|d| match d.strip_suffix(",ro") {
                Some(path) => DiskConfig {
                    path: path.into(),
                    read_only: true,
                },
                None => DiskConfig {
                    path: d.into(),
                    read_only: false,
                },
            })
            .collect(),
        shares: args
            .share
            .iter()
            .map(|s| parse_share(s))
            .collect::<anyhow::Result<_>>()?,
        balloon: args.balloon,
    };
    let context = || format!("microVM with kernel {}", config.kernel.display());
    // The jailed VMM writes the serial console straight to this stdout.
    let console = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stdout for the console")?;
    let io = JailedIo {
        console,
        console_copy: None,
        channel: None,
        net: None,
    };
    let report = jailed::start(&config, io)
        .and_then(|vm| vm.wait())
        .with_context(context)?;
    if let Some(boot) = report.boot_time {
        eprintln!("berth: Guest-boot-time = {} us", boot.as_micros());
    }
    eprintln!("berth: guest {}", report.exit);
    Ok(())
}

/// `--share DIR:TAG[:ro]`.
fn parse_share(spec: &str) -> anyhow::Result<ShareConfig> {
    let (rest, read_only) = match spec.strip_suffix(":ro") {
        Some(rest) => (rest, true),
        None => (spec, false),
    };
    match rest.rsplit_once(':') {
        Some((dir, tag)) if !dir.is_empty() && !tag.is_empty() => Ok(ShareConfig {
            path: dir.into(),
            tag: tag.to_string(),
            read_only,
            guest_owner: (0, 0),
        }),
        _ => bail!("invalid --share {spec:?}: use DIR:TAG or DIR:TAG:ro"),
    }
}

/// `SIZE` in MiB: `64M`, `64MiB`, `1g`, `65536k`, or a plain number of MiB.
pub fn parse_mib(size: &str) -> anyhow::Result<u64> {
    let text = size.trim();
    let lower = text.to_ascii_lowercase();
    let lower = lower
        .strip_suffix("ib")
        .or(lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, unit) = match lower.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&lower[..i], Some(c)),
        _ => (lower, None),
    };
    let Ok(n) = digits.parse::<u64>() else {
        bail!("invalid --memory {size:?}: use a size such as 512M or 2G");
    };
    let bytes = match unit {
        Some('k') => n.checked_mul(1 << 10),
        Some('m') => n.checked_mul(1 << 20),
        Some('g') => n.checked_mul(1 << 30),
        None => n.checked_mul(1 << 20),
        Some(_) => None,
    };
    match bytes {
        Some(bytes) if bytes % (1 << 20) == 0 => Ok(bytes >> 20),
        Some(_) => bail!("--memory {size:?} is not a whole number of MiB"),
        None => bail!("invalid --memory {size:?}: use a size such as 512M or 2G"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares() {
        let s = parse_share("/a:b/c:tag0:ro").unwrap();
        assert_eq!(
            (s.path, s.tag.as_str(), s.read_only),
            ("/a:b/c".into(), "tag0", true)
        );
        let s = parse_share("dir:t").unwrap();
        assert_eq!((s.path, s.read_only), ("dir".into(), false));
        assert!(parse_share("dir").is_err());
        assert!(parse_share(":t").is_err());
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_mib("64M").unwrap(), 64);
        assert_eq!(parse_mib("64m").unwrap(), 64);
        assert_eq!(parse_mib("64MiB").unwrap(), 64);
        assert_eq!(parse_mib("2G").unwrap(), 2048);
        assert_eq!(parse_mib("65536k").unwrap(), 64);
        assert_eq!(parse_mib("256").unwrap(), 256);
        assert!(parse_mib("1000k").is_err());
        assert!(parse_mib("lots").is_err());
        assert!(parse_mib("12T").is_err());
        assert!(parse_mib("").is_err());
    }
}

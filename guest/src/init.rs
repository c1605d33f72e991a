//! PID 1 duties: kernel file systems, the root file system from the image's layer disks
//! (each a read-only erofs/ext4 block device, stacked by overlayfs with a tmpfs upper),
//! the agent channel, and powering off.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, MsFlags};

/// What berth tells the agent on the kernel command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BootArgs {
    /// Layer block devices, bottom first (`berth.layers=vdb,vdc`).
    pub layers: Vec<String>,
    /// Filesystem of the layer disks (`berth.layerfs=erofs`).
    pub layer_fs: String,
    /// The channel device (`berth.channel=hvc0`).
    pub channel: String,
    /// The disk that holds the root's writable layer across the sandbox's runs
    /// (`berth.upper=vdd`, ext4); without it the layer is a tmpfs, gone with the VM.
    pub upper: Option<String>,
    /// The smallest block of free memory, as a power of two of pages, that the kernel reports
    /// to the VMM's balloon (`berth.reporting_order=3`); the kernel's own is 4 MiB blocks.
    pub reporting_order: Option<u8>,
}

impl BootArgs {
    pub fn parse(cmdline: &str) -> BootArgs {
        let mut b = BootArgs {
            layer_fs: "erofs".into(),
            channel: "hvc0".into(),
            ..Default::default()
        };
        for word in cmdline.split_whitespace() {
            let Some((k, v)) = word.split_once('=') else {
                continue;
            };
            let valid = |d: &str| !d.is_empty() && d.chars().all(|c| c.is_ascii_alphanumeric());
            match k {
                "berth.layers" => {
                    b.layers = v
                        .split(',')
                        .filter(|d| valid(d))
                        .map(String::from)
                        .collect()
                }
                "berth.layerfs" if matches!(v, "erofs" | "ext4" | "squashfs") => {
                    b.layer_fs = v.into()
                }
                "berth.channel" if valid(v) => b.channel = v.into(),
                "berth.upper" if valid(v) => b.upper = Some(v.into()),
                "berth.reporting_order" => {
                    b.reporting_order = v.parse().ok().filter(|&o: &u8| o <= MAX_REPORTING_ORDER)
                }
                _ => {}
            }
        }
        b
    }
}

/// The largest order the kernel's buddy allocator has (MAX_ORDER - 1).
const MAX_REPORTING_ORDER: u8 = 10;

/// Where the kernel takes the page reporting order (a parameter of mm/page_reporting.c).
const REPORTING_ORDER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";

/// Sets the order of the free blocks the kernel reports to the balloon. The balloon driver
/// sets it to the page block order (4 MiB) when it registers; in a small guest few free
/// blocks are that large, so the pages freed after boot would stay on the host. sysfs is
/// mounted read-write for this moment only.
///
/// The kernel reports two seconds after the driver registered, and after that only when a
/// block of at least the order is freed. On a slow boot that first report can come before
/// this, with the old order, and an idle guest may free nothing more: so free such blocks
/// once (2 MiB touched and unmapped, more than the per-CPU page lists hold back), and the
/// kernel reports all free memory with the new order.
fn set_reporting_order(order: u8) -> Result<(), String> {
    m(
        "sysfs",
        "/sys",
        "sysfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    let written = std::fs::write(REPORTING_ORDER, order.to_string())
        .map_err(|e| format!("writing {REPORTING_ORDER}: {e} (a guest kernel without the balloon: rebuild it with scripts/build-guest)"));
    let _ = nix::mount::umount("/sys");
    written?;
    let len = 2 << 20;
    // SAFETY: a new private anonymous mapping, populated, then unmapped; no Rust reference
    // to its memory exists.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        );
        if p != libc::MAP_FAILED {
            libc::munmap(p, len);
        }
    }
    Ok(())
}

/// The options of the root's overlay over the layer disks `lowers` (top first).
///
/// The layer disks carry berth's rootless whiteouts: char 0:0 nodes and `user.overlay.opaque`,
/// which overlayfs reads with `userxattr`; with `userxattr` it also keeps its own markers in
/// the upper directory as `user.overlay.*`. An ext4 upper holds those. A `--rm` sandbox's
/// upper is a tmpfs (`in_memory`), and tmpfs holds no `user.*` xattrs before Linux 6.6: the
/// overlay then cannot mark a directory opaque or clear one for removal, and `rm -rf` of an
/// image directory fails with EIO, dpkg with EXDEV. The agent is real root here, so for a
/// tmpfs upper the layers are first merged by a read-only overlay with `userxattr` (which
/// writes nothing), and the root's overlay stacks on that with overlayfs's own
/// `trusted.overlay.*` markers, which tmpfs holds for root.
fn overlay_options(
    lowers: &[String],
    upper: &str,
    work: &str,
    in_memory: bool,
) -> Result<String, String> {
    let lower = if in_memory && lowers.len() > 1 {
        let merged = "/run/berth/layers";
        m(
            "overlay",
            merged,
            "overlay",
            MsFlags::MS_RDONLY,
            Some(&format!("lowerdir={},userxattr", lowers.join(":"))),
        )?;
        merged.to_string()
    } else {
        lowers.join(":")
    };
    let xattrs = if in_memory { "" } else { ",userxattr" };
    Ok(format!(
        "lowerdir={lower},upperdir={upper},workdir={work}{xattrs}"
    ))
}

fn m(src: &str, dst: &str, fs: &str, flags: MsFlags, data: Option<&str>) -> Result<(), String> {
    let _ = std::fs::create_dir_all(dst);
    mount(Some(src), dst, Some(fs), flags, data).map_err(|e| format!("mounting {fs} on {dst}: {e}"))
}

/// Mounts the kernel file systems, reads what berth put on the command line, mounts the
/// image root, switches into it and opens the channel.
pub fn prepare() -> Result<OwnedFd, String> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    m("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, None)?;
    m("proc", "/proc", "proc", nodev, None)?;
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("reading /proc/cmdline: {e}"))?;
    let boot = BootArgs::parse(&cmdline);
    if let Some(order) = boot.reporting_order {
        // Memory the host keeps longer is no reason to fail the sandbox.
        if let Err(e) = set_reporting_order(order) {
            eprintln!("berth-agent: {e}");
        }
    }
    if !boot.layers.is_empty() {
        m(
            "tmpfs",
            "/run/berth",
            "tmpfs",
            MsFlags::empty(),
            Some("mode=0755"),
        )?;
        let mut lowers = Vec::new();
        for (i, dev) in boot.layers.iter().enumerate() {
            let dir = format!("/run/berth/layer{i}");
            m(
                &format!("/dev/{dev}"),
                &dir,
                &boot.layer_fs,
                MsFlags::MS_RDONLY,
                None,
            )?;
            lowers.push(dir);
        }
        lowers.reverse();
        // The writable layer: on the sandbox's own disk when it has one (kept across its
        // runs, as a container's upper directory is), else in memory. `noinit_itable`: the
        // disk is a new sparse file whose unwritten blocks read as zeros, so the kernel need
        // not zero its inode tables in the background.
        let rw = match &boot.upper {
            Some(dev) => {
                m(
                    &format!("/dev/{dev}"),
                    "/run/berth/rw",
                    "ext4",
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("noinit_itable"),
                )?;
                "/run/berth/rw"
            }
            None => "/run/berth",
        };
        let (upper, work) = (format!("{rw}/upper"), format!("{rw}/work"));
        for d in [upper.as_str(), work.as_str(), "/run/berth/root"] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {d}: {e}"))?;
        }
        let data = overlay_options(&lowers, &upper, &work, boot.upper.is_none())?;
        m(
            "overlay",
            "/run/berth/root",
            "overlay",
            MsFlags::empty(),
            Some(&data),
        )?;
        // `berth commit` archives the upper directory, which the root is about to hide.
        let upper = nix::fcntl::open(
            upper.as_str(),
            nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("opening {upper}: {e}"))?;
        // SAFETY: open just returned this descriptor, owned by nobody else.
        berth_agent::session::set_upper(unsafe { OwnedFd::from_raw_fd(upper) });
        for d in ["dev", "proc"] {
            let target = format!("/run/berth/root/{d}");
            let _ = std::fs::create_dir_all(&target);
            mount(
                Some(&*format!("/{d}")),
                &*target,
                None::<&str>,
                MsFlags::MS_MOVE,
                None::<&str>,
            )
            .map_err(|e| format!("moving /{d}: {e}"))?;
        }
        nix::unistd::chdir("/run/berth/root").map_err(|e| format!("chdir: {e}"))?;
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(|e| format!("moving the root: {e}"))?;
        nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    }
    m("sysfs", "/sys", "sysfs", nodev | MsFlags::MS_RDONLY, None)?;
    m(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    m("tmpfs", "/dev/shm", "tmpfs", nodev, Some("mode=1777"))?;
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    let chan = format!("/dev/{}", boot.channel);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&chan)
        .map_err(|e| format!("opening the agent channel {chan}: {e}"))?;
    // The channel is a tty (hvc): without raw mode the line discipline would echo the host's
    // bytes back, hold input until a newline and turn every 0x0a the agent sends into \r\n.
    let mut tio = nix::sys::termios::tcgetattr(&f)
        .map_err(|e| format!("reading the terminal settings of {chan}: {e}"))?;
    nix::sys::termios::cfmakeraw(&mut tio);
    nix::sys::termios::tcsetattr(&f, nix::sys::termios::SetArg::TCSANOW, &tio)
        .map_err(|e| format!("putting {chan} in raw mode: {e}"))?;
    Ok(OwnedFd::from(f))
}

/// Microseconds since the kernel started (CLOCK_BOOTTIME).
pub fn uptime_us() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}

/// Syncs and powers the VM off (the VMM sees the i8042 reset or the ACPI-less halt).
pub fn power_off(_code: i32, _root: &Path) -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_args_are_parsed_and_sanitised() {
        let b = BootArgs::parse(
            "console=ttyS0 berth.layers=vdb,vdc,../x berth.layerfs=ext4 berth.channel=hvc1 berth.upper=vdd quiet",
        );
        assert_eq!(b.upper.as_deref(), Some("vdd"));
        assert_eq!(b.layers, vec!["vdb", "vdc"]);
        assert_eq!(b.layer_fs, "ext4");
        assert_eq!(b.channel, "hvc1");
        let d = BootArgs::parse("berth.layerfs=nfs berth.channel=../../etc");
        assert_eq!(d.layer_fs, "erofs");
        assert_eq!(d.channel, "hvc0");
        assert_eq!(BootArgs::parse("berth.upper=../vda").upper, None);
        assert_eq!(b.reporting_order, None);
        let r = |s| BootArgs::parse(s).reporting_order;
        assert_eq!(r("berth.reporting_order=3"), Some(3));
        assert_eq!(r("berth.reporting_order=10"), Some(10));
        assert_eq!(r("berth.reporting_order=11"), None);
        assert_eq!(r("berth.reporting_order=-1"), None);
        assert_eq!(r("berth.reporting_order=x"), None);
    }
}

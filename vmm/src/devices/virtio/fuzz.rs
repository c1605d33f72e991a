//! Fuzz harnesses for what a guest driver controls: the virtio-mmio registers, the
//! descriptor chains of the block, console, net, 9P share and balloon devices, the 9P messages
//! themselves. `fuzz/` runs them under libFuzzer
//! (`cargo fuzz run virtio_block`); the unit tests below run them over pseudo-random inputs
//! so every test run exercises them too.
//!
//! Input layout: the first bytes pick the queue geometry, the rest becomes guest memory as
//! the driver left it (descriptor table, rings, buffers), then a few register writes.

use std::io::Write;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::share::guard;
use super::{
    Balloon, Block, Console, Interrupt, MmioTransport, Net, QueueContext, Share, VirtioDevice,
};
use crate::devices::bus::BusDevice;
use crate::memory::GuestMemory;

const MEM_SIZE: usize = 0x4_0000;

fn memory(data: &[u8]) -> GuestMemory {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("fuzz memory");
    let n = data.len().min(MEM_SIZE);
    mem.write_slice(&data[..n], GuestAddress(0))
        .expect("fits in guest memory");
    mem
}

fn interrupt() -> Interrupt {
    Interrupt::new(
        vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).expect("eventfd for fuzzing"),
    )
}

/// A queue whose geometry the input chooses (addresses may point anywhere, even outside
/// guest memory).
fn queue(head: &[u8; 8], max: u16) -> Queue {
    let mut q = Queue::new(max).expect("valid maximum");
    q.set_size(1 << (head[0] % 9));
    let addr = |b: u8| u32::from(b) * 0x400;
    q.set_desc_table_address(Some(addr(head[1])), Some(u32::from(head[4] & 1)));
    q.set_avail_ring_address(Some(addr(head[2])), None);
    q.set_used_ring_address(Some(addr(head[3])), None);
    q.set_ready(true);
    q
}

/// The block device serving whatever requests the input describes, on a small disk.
pub fn block_requests(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Some(disk) = tempfile_disk(head[5]) else {
        return;
    };
    let Ok(mut dev) = Block::from_file(disk, head[6] & 1 == 1, "fuzz") else {
        return;
    };
    let mem = memory(rest);
    let mut queues = vec![queue(head, 256)];
    let irq = interrupt();
    let mut ctx = QueueContext {
        mem: &mem,
        queues: &mut queues,
        interrupt: &irq,
    };
    // Twice: the second pass sees the ring as the first left it.
    dev.process_queue(0, &mut ctx);
    dev.process_queue(0, &mut ctx);
}

/// The console: host input into the receive queue, guest output from the transmit queue.
pub fn console_queues(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mem = memory(rest);
    let mut dev = Console::new(Box::new(std::io::sink()));
    let mut second = *head;
    second.rotate_left(1);
    let mut queues = vec![queue(head, 256), queue(&second, 256)];
    let irq = interrupt();
    let mut ctx = QueueContext {
        mem: &mem,
        queues: &mut queues,
        interrupt: &irq,
    };
    dev.push_input(&rest[..rest.len().min(4096)], &mut ctx);
    dev.process_queue(1, &mut ctx);
    dev.process_queue(0, &mut ctx);
}

/// The balloon: whatever inflate, deflate and free page reports the input describes; it can
/// give back no more than the guest's memory.
pub fn balloon_queues(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mem = memory(rest);
    let mut dev = Balloon::new();
    let mut queues: Vec<Queue> = (0..3u8)
        .map(|i| {
            let mut h = *head;
            h.rotate_left(usize::from(i));
            queue(&h, 64)
        })
        .collect();
    let irq = interrupt();
    let mut ctx = QueueContext {
        mem: &mem,
        queues: &mut queues,
        interrupt: &irq,
    };
    for index in [2, 0, 1] {
        dev.process_queue(index, &mut ctx);
    }
    assert!(dev.released() <= MEM_SIZE as u64);
}

/// The NIC: host frames into the receive queue, guest frames from the transmit queue.
pub fn net_queues(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mem = memory(rest);
    let Ok(mut dev) = Net::new(
        [2, 0, 0, 0, 0, 1],
        Box::new(std::io::sink()),
        super::net::Framing::LengthPrefixed,
    ) else {
        return;
    };
    // Both receive modes: one buffer a frame, or frames merged over several.
    if head[7] & 1 != 0 {
        dev.ack_features(super::net::F_MRG_RXBUF);
    }
    let mut second = *head;
    second.rotate_left(3);
    let mut queues = vec![queue(head, 256), queue(&second, 256)];
    let irq = interrupt();
    let mut ctx = QueueContext {
        mem: &mem,
        queues: &mut queues,
        interrupt: &irq,
    };
    let mut frames = rest;
    while let Some(frame) = super::net::read_frame(&mut frames) {
        dev.push_frame(frame, &mut ctx);
    }
    dev.process_queue(1, &mut ctx);
    dev.process_queue(0, &mut ctx);
}

/// The mode of the file outside the share, which no request may change.
const OUTSIDE_MODE: u32 = 0o640;

/// A scratch directory to share: a file, a subdirectory, and symlinks pointing out of it.
/// Removed when dropped.
struct ScratchShare(std::path::PathBuf);

impl ScratchShare {
    fn new() -> Option<ScratchShare> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-fuzz-share-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let root = dir.join("share");
        std::fs::create_dir_all(root.join("sub")).ok()?;
        std::fs::write(dir.join("outside"), "outside").ok()?;
        let mode =
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(OUTSIDE_MODE);
        std::fs::set_permissions(dir.join("outside"), mode).ok()?;
        std::fs::write(root.join("file"), "inside").ok()?;
        std::os::unix::fs::symlink("../outside", root.join("up")).ok()?;
        std::os::unix::fs::symlink(&dir, root.join("out")).ok()?;
        Some(ScratchShare(dir))
    }

    fn root(&self) -> std::path::PathBuf {
        self.0.join("share")
    }

    /// Nothing the guest did may reach past the share: the file outside is as it was.
    fn check(&self) {
        assert_eq!(
            std::fs::read_to_string(self.0.join("outside"))
                .ok()
                .as_deref(),
            Some("outside"),
            "a request changed a file outside the share"
        );
        let mode = std::fs::metadata(self.0.join("outside"))
            .map(|m| std::os::unix::fs::MetadataExt::mode(&m) & 0o7777);
        assert_eq!(
            mode.ok(),
            Some(OUTSIDE_MODE),
            "a request changed the mode of a file outside the share"
        );
        let names: Vec<_> = std::fs::read_dir(&self.0)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(
            names.len(),
            2,
            "a request created {names:?} outside the share"
        );
    }
}

impl Drop for ScratchShare {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The 9P share serving whatever request chains the input describes.
pub fn share_requests(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Some(scratch) = ScratchShare::new() else {
        return;
    };
    let Ok(mut dev) = Share::new(&scratch.root(), "fuzz", head[6] & 1 == 1) else {
        return;
    };
    let mem = memory(rest);
    let mut queues = vec![queue(head, 128)];
    let irq = interrupt();
    let mut ctx = QueueContext {
        mem: &mem,
        queues: &mut queues,
        interrupt: &irq,
    };
    dev.process_queue(0, &mut ctx);
    dev.process_queue(0, &mut ctx);
    scratch.check();
}

/// 9P messages the input describes, after a version and an attach: each piece is a request
/// type (from the ones a 9P2000.L server knows, or any), a body length and the body, framed
/// with a correct size so the server parses past the header.
pub fn share_messages(data: &[u8]) {
    const TYPES: &[u8] = &[
        guard::TSTATFS,
        guard::TLOPEN,
        guard::TLCREATE,
        guard::TSYMLINK,
        guard::TMKNOD,
        guard::TRENAME,
        guard::TGETATTR,
        guard::TSETATTR,
        guard::TXATTRWALK,
        guard::TXATTRCREATE,
        guard::TLINK,
        guard::TMKDIR,
        guard::TRENAMEAT,
        guard::TUNLINKAT,
        guard::TWALK,
        guard::TREAD,
        guard::TWRITE,
        guard::TCLUNK,
        guard::TREMOVE,
        22,
        40,
        50,
        52,
        54,
    ];
    let Some(scratch) = ScratchShare::new() else {
        return;
    };
    let read_only = data.first().is_some_and(|b| b & 1 == 1);
    let Ok(mut dev) = Share::new(&scratch.root(), "fuzz", read_only) else {
        return;
    };
    let frame = |ty: u8, body: &[u8]| {
        let mut m = ((body.len() + 7) as u32).to_le_bytes().to_vec();
        m.push(ty);
        m.extend_from_slice(&[1, 0]);
        m.extend_from_slice(body);
        m
    };
    let mut version = 65536u32.to_le_bytes().to_vec();
    version.extend_from_slice(b"\x08\x009P2000.L");
    let _ = dev.handle(&mut frame(guard::TVERSION, &version));
    // Tattach: fid 0, no afid, empty uname and aname, n_uname 0.
    let attach = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
    let _ = dev.handle(&mut frame(guard::TATTACH, &attach));
    let mut rest = data.get(1..).unwrap_or_default();
    while let [sel, len, tail @ ..] = rest {
        let ty = TYPES.get(usize::from(*sel)).copied().unwrap_or(*sel);
        let n = usize::from(*len).min(tail.len());
        let _ = dev.handle(&mut frame(ty, &tail[..n]));
        rest = &tail[n..];
    }
    scratch.check();
}

/// Register writes and reads in the order the input gives, then notifications.
pub fn mmio_registers(data: &[u8]) {
    let mem = memory(data);
    let mut t = MmioTransport::new(Console::new(Box::new(std::io::sink())), mem, interrupt());
    for op in data.chunks_exact(6) {
        let offset = u64::from(u16::from_le_bytes([op[0], op[1]]) & 0x1ff);
        let value = [op[2], op[3], op[4], op[5]];
        if op[0] & 0x80 != 0 {
            let mut out = [0u8; 4];
            t.read(offset, &mut out[..usize::from(op[2] % 4) + 1]);
        } else {
            t.write(offset, &value[..usize::from(op[1] >> 6) + 1]);
        }
    }
}

/// A small scratch disk whose size the input picks (0..=255 sectors plus a partial one).
fn tempfile_disk(sectors: u8) -> Option<std::fs::File> {
    let mut f = tempfile_in_memory()?;
    let len = usize::from(sectors) * 512 + 100;
    f.write_all(&vec![0xa5; len]).ok()?;
    Some(f)
}

fn tempfile_in_memory() -> Option<std::fs::File> {
    let name = c"berth-fuzz-disk";
    // SAFETY: memfd_create with a valid C string; the descriptor is owned by the File below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Some(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic inputs, so a failure reproduces. `BERTH_FUZZ_ROUNDS`
    /// multiplies the count, for a long run (`BERTH_FUZZ_ROUNDS=500 cargo test --release
    /// --lib fuzz`).
    fn inputs(seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> {
        let rounds: usize = std::env::var("BERTH_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let count = count * rounds;
        let mut s = seed;
        let mut next = move || {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            s.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        (0..count).map(move |i| {
            let len = 8 + (next() as usize % (0x3000 + i));
            let mut v = Vec::with_capacity(len);
            while v.len() < len {
                v.extend_from_slice(&next().to_le_bytes());
            }
            // Small numbers make valid-looking rings and descriptors more likely.
            for b in v.iter_mut().skip(8).step_by(3) {
                *b %= 8;
            }
            v.truncate(len);
            v
        })
    }

    #[test]
    fn block_survives_random_rings() {
        for data in inputs(1, 300) {
            block_requests(&data);
        }
    }

    #[test]
    fn console_survives_random_rings() {
        for data in inputs(2, 300) {
            console_queues(&data);
        }
    }

    #[test]
    fn net_survives_random_rings_and_frames() {
        for data in inputs(4, 300) {
            net_queues(&data);
        }
    }

    #[test]
    fn share_survives_random_rings() {
        for data in inputs(5, 100) {
            share_requests(&data);
        }
    }

    #[test]
    fn share_survives_random_messages_and_stays_inside() {
        for data in inputs(6, 300) {
            share_messages(&data);
        }
    }

    #[test]
    fn balloon_survives_random_rings() {
        for data in inputs(7, 300) {
            balloon_queues(&data);
        }
    }

    #[test]
    fn mmio_survives_random_register_traffic() {
        for data in inputs(3, 300) {
            mmio_registers(&data);
        }
    }
}

//! Fuzz harnesses for what a guest driver controls: the virtio-mmio registers and the
//! descriptor chains of the block and console devices. `fuzz/` runs them under libFuzzer
//! (`cargo fuzz run virtio_block`); the unit tests below run them over pseudo-random inputs
//! so every test run exercises them too.
//!
//! Input layout: the first bytes pick the queue geometry, the rest becomes guest memory as
//! the driver left it (descriptor table, rings, buffers), then a few register writes.

use std::io::Write;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{Block, Console, Interrupt, MmioTransport, Net, QueueContext, VirtioDevice};
use crate::vm::devices::bus::BusDevice;
use crate::vm::memory::GuestMemory;

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

/// The NIC: host frames into the receive queue, guest frames from the transmit queue.
pub fn net_queues(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mem = memory(rest);
    let mut dev = Net::new(
        [2, 0, 0, 0, 0, 1],
        Box::new(std::io::sink()),
        super::net::Framing::LengthPrefixed,
    );
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

    /// xorshift64*: deterministic inputs, so a failure reproduces.
    fn inputs(seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> {
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
    fn mmio_survives_random_register_traffic() {
        for data in inputs(3, 300) {
            mmio_registers(&data);
        }
    }
}

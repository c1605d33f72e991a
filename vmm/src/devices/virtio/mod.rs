//! virtio devices on the virtio-mmio transport: [`block`] (the image's layer disks),
//! [`console`] (the guest agent's channel, `/dev/hvc0` in the guest), [`net`] (the NIC),
//! [`share`] (host directories over 9P) and [`balloon`] (free page reporting).
//!
//! Split queues come from rust-vmm's virtio-queue, whose descriptor chains and
//! `Reader`/`Writer` check every guest address against guest memory; the devices here add
//! their own checks on what the guest asks of them (request types, sector ranges, lengths).
//! Everything a driver writes is hostile: a malformed request fails that request (or is
//! dropped), never the VMM.

pub mod balloon;
pub mod block;
pub mod console;
#[doc(hidden)]
pub mod fuzz;
pub mod mmio;
pub mod net;
pub mod notify;
pub mod share;
#[doc(hidden)]
pub mod testdriver;

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::super::memory::GuestMemory;

pub use balloon::Balloon;
pub use block::Block;
pub use console::Console;
pub use mmio::MmioTransport;
pub use net::Net;
pub use share::Share;

/// virtio device ids (virtio 1.1, 5).
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_CONSOLE: u32 = 3;

/// Feature bit every device offers: the driver speaks virtio 1.x (the "modern" interface,
/// which virtio-mmio version 2 requires).
pub const F_VERSION_1: u64 = 1 << 32;

/// InterruptStatus bit: the device used buffers in a queue.
pub const INT_USED_RING: u32 = 1;
/// InterruptStatus bit: the configuration changed.
pub const INT_CONFIG: u32 = 2;

/// A device's interrupt line: the InterruptStatus register the driver reads and acknowledges,
/// and the eventfd KVM turns into an edge on the device's IRQ (an irqfd).
#[derive(Clone)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    event: Arc<EventFd>,
}

impl Interrupt {
    pub fn new(event: EventFd) -> Interrupt {
        Interrupt {
            status: Arc::new(AtomicU32::new(0)),
            event: Arc::new(event),
        }
    }

    /// Tells the driver that a queue has used buffers.
    pub fn signal_used_queue(&self) {
        self.status.fetch_or(INT_USED_RING, Ordering::SeqCst);
        // A full eventfd counter already means "interrupt pending": nothing is lost.
        let _ = self.event.write(1);
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver's InterruptACK write.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

/// What a device works on while it handles a queue: guest memory, its queues (as the driver
/// configured them) and its interrupt.
pub struct QueueContext<'a> {
    pub mem: &'a GuestMemory,
    pub queues: &'a mut [Queue],
    pub interrupt: &'a Interrupt,
}

impl QueueContext<'_> {
    /// Hands the driver a used chain of queue `index` and interrupts it if it wants to know.
    pub fn add_used(&mut self, index: usize, head: u16, len: u32) {
        let Some(queue) = self.queues.get_mut(index) else {
            return;
        };
        // A failure here means the driver's used ring is not in guest memory: the driver
        // broke its own queue, and it will simply not see this buffer come back.
        if queue.add_used(self.mem, head, len).is_ok() {
            match queue.needs_notification(self.mem) {
                Ok(false) => {}
                _ => self.interrupt.signal_used_queue(),
            }
        }
    }

    /// Hands the driver several used chains of queue `index` at once: the driver sees the
    /// used index move past all of them together, never past some. A merged receive buffer
    /// (virtio-net's `MRG_RXBUF`) needs it: the driver reads the first buffer's count of
    /// buffers and takes that many from the used ring at once. virtio-queue publishes the index
    /// on every `add_used`, so the elements before the last are written here and the last
    /// one's `add_used` publishes them all (with release ordering).
    pub fn add_used_together(&mut self, index: usize, used: &[(u16, u32)]) {
        let Some((&(last_head, last_len), rest)) = used.split_last() else {
            return;
        };
        let Some(queue) = self.queues.get_mut(index) else {
            return;
        };
        let start = queue.next_used();
        let size = queue.size();
        let ring = GuestAddress(queue.used_ring());
        for (i, &(head, len)) in rest.iter().enumerate() {
            let slot = start.wrapping_add(i as u16) % size;
            // The used ring lies in guest memory (checked when the driver set DRIVER_OK); a
            // failed write means the driver broke its own queue, as in add_used.
            let Some(at) = ring.checked_add(4 + u64::from(slot) * 8) else {
                return;
            };
            // struct virtq_used_elem: the chain's head index and the bytes written, both
            // 32-bit little-endian.
            let mut elem = [0u8; 8];
            elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
            elem[4..].copy_from_slice(&len.to_le_bytes());
            if self.mem.write_slice(&elem, at).is_err() {
                return;
            }
        }
        queue.set_next_used(start.wrapping_add(rest.len() as u16));
        self.add_used(index, last_head, last_len);
    }
}

/// `event` as a plain owned descriptor, for threads that `poll` it (vmm-sys-util's EventFd is
/// not `AsFd`).
pub fn owned_fd(event: EventFd) -> OwnedFd {
    // SAFETY: into_raw_fd hands over the descriptor the EventFd owned, and nothing else
    // closes it.
    unsafe { OwnedFd::from_raw_fd(event.into_raw_fd()) }
}

/// A virtio device model, independent of its transport.
pub trait VirtioDevice: Send {
    /// The virtio device id.
    fn device_type(&self) -> u32;
    /// The largest size of each queue (the driver may pick smaller ones).
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits the device offers.
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The features the driver accepted, told once they are final (FEATURES_OK), before
    /// [`VirtioDevice::activate`].
    fn ack_features(&mut self, _features: u64) {}
    /// The driver set DRIVER_OK: the queues are ready to use.
    fn activate(&mut self, _ctx: &mut QueueContext) {}
    /// The driver notified queue `index` (only called once activated).
    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext);
    /// The driver reset the device.
    fn reset(&mut self) {}
}

/// Copies `config[offset..offset + data.len()]` into `data`, zero past the end: the
/// configuration-space read every device shares.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}

/// The next available chain of `queue`, or None when it is empty or its ring is unreadable.
fn pop<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemory,
) -> Option<virtio_queue::DescriptorChain<&'m GuestMemory>> {
    queue.pop_descriptor_chain(mem)
}

//! virtio-balloon (virtio 1.2, 5.5) for free page reporting: the guest tells the device which
//! pages it has freed, and the device gives them back to the host. Without it, every page a
//! guest ever touched stays resident on the host, so an idle microVM would keep what its
//! kernel used while booting (the initramfs it unpacked and freed, init code, page cache
//! dropped since). Firecracker and cloud-hypervisor offer the same.
//!
//! The balloon itself is never inflated (the target, `num_pages`, stays 0: the VM keeps its
//! `--memory`); the inflate queue is still served as the spec asks, giving back the pages
//! the driver puts in it. Queues, as Linux's driver numbers them when only
//! `VIRTIO_BALLOON_F_REPORTING` is offered: 0 inflate, 1 deflate, 2 reporting.
//!
//! A reported range is a chain of device-writable buffers, each a run of free guest memory;
//! [`memory::discard`] checks each against guest RAM before it gives anything back, so a
//! driver can only give away its own memory.

use vm_memory::{Address, Bytes, GuestAddress};

use super::{pop, read_config_bytes, QueueContext, VirtioDevice, F_VERSION_1};
use crate::memory::{self, GuestMemory, PAGE_SIZE};

/// The virtio device id of a memory balloon.
pub const TYPE_BALLOON: u32 = 5;
/// Feature bit: the driver reports free pages on the reporting queue.
pub const F_REPORTING: u64 = 1 << 5;
/// Linux needs room for 32 reported ranges in one chain.
const QUEUE_SIZE: u16 = 64;
pub const INFLATEQ: usize = 0;
pub const DEFLATEQ: usize = 1;
pub const REPORTINGQ: usize = 2;
/// Inflate and deflate buffers are arrays of 32-bit page frame numbers of 4 KiB pages.
const PFN_SHIFT: u32 = 12;

/// The balloon device: what it gave back, for the VMM's report.
#[derive(Default)]
pub struct Balloon {
    /// Bytes given back to the host so far.
    released: u64,
    /// Config space: `num_pages` (the target, 0) and `actual` (what the driver holds).
    config: [u8; 8],
}

impl Balloon {
    pub fn new() -> Balloon {
        Balloon::default()
    }

    /// Bytes of guest memory given back to the host since the VM started.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Gives back every range of a reporting chain.
    fn report(&mut self, chain: virtio_queue::DescriptorChain<&GuestMemory>, mem: &GuestMemory) {
        for desc in chain {
            // A range that is not guest RAM is the driver's error: that range is skipped,
            // the rest of the report still counts.
            if let Ok(n) = memory::discard(mem, desc.addr(), u64::from(desc.len())) {
                self.released += n;
            }
        }
    }

    /// Gives back the pages an inflate chain lists.
    fn inflate(&mut self, chain: virtio_queue::DescriptorChain<&GuestMemory>, mem: &GuestMemory) {
        for desc in chain {
            if desc.is_write_only() {
                continue;
            }
            let count = desc.len() / 4;
            for i in 0..count {
                let Some(Ok(pfn)) = desc
                    .addr()
                    .checked_add(u64::from(i) * 4)
                    .map(|at| mem.read_obj::<u32>(at))
                else {
                    break;
                };
                let addr = GuestAddress(u64::from(pfn) << PFN_SHIFT);
                if let Ok(n) = memory::discard(mem, addr, PAGE_SIZE) {
                    self.released += n;
                }
            }
        }
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        TYPE_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_REPORTING
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data)
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext) {
        let mem = ctx.mem;
        loop {
            let Some(queue) = ctx.queues.get_mut(index) else {
                return;
            };
            let Some(chain) = pop(queue, mem) else {
                return;
            };
            let head = chain.head_index();
            match index {
                REPORTINGQ => self.report(chain, mem),
                INFLATEQ => self.inflate(chain, mem),
                // Deflated pages come back to the guest as it touches them: nothing to do.
                _ => {}
            }
            ctx.add_used(index, head, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::mmio::tests::{bring_up, interrupt, notify};
    use super::super::testdriver::Driver;
    use super::super::MmioTransport;
    use super::*;

    const QUEUE2: (u64, u64, u64, u16) = (0x7000, 0x8000, 0x9000, 16);

    fn balloon() -> (MmioTransport<Balloon>, GuestMemory) {
        let mem = memory::create(16).unwrap();
        let mut t = MmioTransport::new(Balloon::new(), mem.clone(), interrupt());
        bring_up(&mut t, &[Driver::QUEUE, Driver::QUEUE1, QUEUE2]);
        (t, mem)
    }

    fn fill(mem: &GuestMemory, addr: u64, len: usize) {
        mem.write_slice(&vec![0xa5; len], GuestAddress(addr))
            .unwrap();
    }

    fn byte(mem: &GuestMemory, addr: u64) -> u8 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    #[test]
    fn offers_free_page_reporting_and_no_target() {
        let (t, _) = balloon();
        let dev = t.device();
        assert_eq!(dev.device_type(), 5);
        assert_eq!(dev.features() & F_REPORTING, F_REPORTING);
        let mut num_pages = [0xffu8; 4];
        dev.read_config(0, &mut num_pages);
        assert_eq!(num_pages, [0; 4], "the balloon is never asked to inflate");
    }

    #[test]
    fn reported_ranges_read_as_zero_and_are_counted() {
        let (mut t, mem) = balloon();
        fill(&mem, 0x100000, 0x10000);
        fill(&mem, 0x200000, 0x4000);
        let mut driver = Driver::at(&mem, QUEUE2);
        driver.add(&[(0x100000, 0x8000, true), (0x200000, 0x4000, true)]);
        notify(&mut t, REPORTINGQ as u32);
        assert_eq!(driver.used(), vec![(0, 0)], "the report is handed back");
        assert_eq!(byte(&mem, 0x100000), 0);
        assert_eq!(byte(&mem, 0x107fff), 0);
        assert_eq!(byte(&mem, 0x108000), 0xa5, "past the range: kept");
        assert_eq!(byte(&mem, 0x203fff), 0);
        assert_eq!(t.device().released(), 0xc000);
    }

    #[test]
    fn a_range_outside_guest_ram_is_skipped_and_the_rest_given_back() {
        let (mut t, mem) = balloon();
        fill(&mem, 0x300000, 0x1000);
        let mut driver = Driver::at(&mem, QUEUE2);
        let end = 16 << 20;
        driver.add(&[
            (end - 0x1000, 0x2000, true),
            (0xffff_f000, 0x1000, true),
            (0x300000, 0x1000, true),
        ]);
        notify(&mut t, REPORTINGQ as u32);
        assert_eq!(driver.used().len(), 1);
        assert_eq!(byte(&mem, 0x300000), 0);
        assert_eq!(t.device().released(), 0x1000);
    }

    #[test]
    fn inflated_pages_are_given_back_and_deflate_is_acknowledged() {
        let (mut t, mem) = balloon();
        fill(&mem, 0x400000, 0x3000);
        // PFNs 0x400 and 0x402, and one far outside guest RAM.
        for (i, pfn) in [0x400u32, 0x402, 0xfff_ffff].iter().enumerate() {
            mem.write_obj(*pfn, GuestAddress(0x500000 + i as u64 * 4))
                .unwrap();
        }
        let mut inflate = Driver::new(&mem);
        inflate.add(&[(0x500000, 12, false)]);
        notify(&mut t, INFLATEQ as u32);
        assert_eq!(inflate.used(), vec![(0, 0)]);
        assert_eq!(byte(&mem, 0x400000), 0);
        assert_eq!(byte(&mem, 0x401000), 0xa5);
        assert_eq!(byte(&mem, 0x402000), 0);
        assert_eq!(t.device().released(), 0x2000);

        let mut deflate = Driver::at(&mem, Driver::QUEUE1);
        deflate.add(&[(0x500000, 4, false)]);
        notify(&mut t, DEFLATEQ as u32);
        assert_eq!(deflate.used(), vec![(0, 0)]);
    }
}

//! A minimal split-queue driver, as the guest's would be, for the device tests and the fuzz
//! target: writes descriptors and available-ring entries into guest memory and reads the
//! used ring back.

use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemory;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

pub struct Driver<'m> {
    mem: &'m GuestMemory,
    size: u16,
    next_desc: u16,
    avail_idx: u16,
    queue: (u64, u64, u64),
}

impl<'m> Driver<'m> {
    /// Queue 0's layout: descriptors, available ring, used ring, size.
    pub const QUEUE: (u64, u64, u64, u16) = (0x1000, 0x2000, 0x3000, 16);
    /// Queue 1's layout.
    pub const QUEUE1: (u64, u64, u64, u16) = (0x4000, 0x5000, 0x6000, 16);

    pub fn new(mem: &'m GuestMemory) -> Driver<'m> {
        Driver::at(mem, Driver::QUEUE)
    }

    pub fn at(mem: &'m GuestMemory, (desc, avail, used, size): (u64, u64, u64, u16)) -> Driver<'m> {
        Driver {
            mem,
            size,
            next_desc: 0,
            avail_idx: 0,
            queue: (desc, avail, used),
        }
    }

    /// Makes a chain of (address, length, device-writable) buffers available.
    pub fn add(&mut self, bufs: &[(u64, u32, bool)]) {
        let (desc, avail, _) = self.queue;
        let head = self.next_desc;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let idx = (self.next_desc + i as u16) % self.size;
            let next = (idx + 1) % self.size;
            let mut flags = if write { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            let at = desc + u64::from(idx) * 16;
            self.mem.write_obj(addr, GuestAddress(at)).unwrap();
            self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        }
        self.next_desc = (self.next_desc + bufs.len() as u16) % self.size;
        let slot = avail + 4 + u64::from(self.avail_idx % self.size) * 2;
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(avail + 2))
            .unwrap();
    }

    /// How many chains the device has put in the used ring so far.
    pub fn used_count(&self) -> usize {
        let (_, _, used) = self.queue;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        usize::from(idx)
    }

    /// Every (head, length) the device has put in the used ring so far.
    pub fn used(&self) -> Vec<(u16, u32)> {
        let (_, _, used) = self.queue;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        (0..idx)
            .map(|i| {
                let at = used + 4 + u64::from(i % self.size) * 8;
                let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
                let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
                (id as u16, len)
            })
            .collect()
    }
}

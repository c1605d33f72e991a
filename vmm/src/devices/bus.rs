//! Port-I/O and MMIO dispatch: finds the device that owns a guest access and hands it the
//! offset into its range.
//!
//! The guest chooses every address it touches, so a lookup never trusts it: an access that
//! no device owns, or that runs past the end of the owner's range, reaches no device (reads
//! see all ones, as on real hardware with nothing on the bus).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device on a bus. `offset` is relative to the start of the range the device was added at.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Why a device could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The range is empty or wraps around.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange { base: u64, len: u64 },
    /// Another device already owns part of the range.
    #[error("bus range {base:#x}+{len:#x} overlaps a device already there")]
    Overlap { base: u64, len: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    base: u64,
    len: u64,
}

impl Range {
    fn last(&self) -> u64 {
        self.base + (self.len - 1)
    }
}

/// An address space (port I/O or MMIO) and the devices in it.
#[derive(Default)]
pub struct Bus {
    devices: BTreeMap<Range, Arc<Mutex<dyn BusDevice>>>,
}

impl Bus {
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Gives `device` the addresses `base..base + len`.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), Error> {
        if len == 0 || base.checked_add(len - 1).is_none() {
            return Err(Error::InvalidRange { base, len });
        }
        let range = Range { base, len };
        let overlaps = self
            .devices
            .keys()
            .any(|r| r.base <= range.last() && range.base <= r.last());
        if overlaps {
            return Err(Error::Overlap { base, len });
        }
        self.devices.insert(range, device);
        Ok(())
    }

    /// The device owning every byte of `addr..addr + len`, with the offset of `addr` in it.
    fn find(&self, addr: u64, len: usize) -> Option<(&Arc<Mutex<dyn BusDevice>>, u64)> {
        let last = addr.checked_add((len as u64).checked_sub(1)?)?;
        let (range, device) = self
            .devices
            .range(
                ..=Range {
                    base: addr,
                    len: u64::MAX,
                },
            )
            .next_back()?;
        (last <= range.last()).then(|| (device, addr - range.base))
    }

    /// Dispatches a guest read; returns whether a device answered (if not, `data` is all ones).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((device, offset)) => {
                lock(device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a guest write; returns whether a device took it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((device, offset)) => {
                lock(device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device; a device whose lock was poisoned by a panicking vCPU thread is still usable
/// for the shutdown that follows.
fn lock<'a>(
    device: &'a Mutex<dyn BusDevice>,
) -> std::sync::MutexGuard<'a, dyn BusDevice + 'static> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records accesses; reads return the offset's low byte.
    #[derive(Default)]
    struct Probe {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    fn bus_with(ranges: &[(u64, u64)]) -> (Bus, Vec<Arc<Mutex<Probe>>>) {
        let mut bus = Bus::new();
        let mut probes = Vec::new();
        for &(base, len) in ranges {
            let probe = Arc::new(Mutex::new(Probe::default()));
            bus.insert(probe.clone(), base, len).unwrap();
            probes.push(probe);
        }
        (bus, probes)
    }

    #[test]
    fn dispatches_to_the_owner_with_the_offset() {
        let (bus, probes) = bus_with(&[(0x3f8, 8), (0x60, 5)]);
        let mut byte = [0u8];
        assert!(bus.read(0x3fd, &mut byte));
        assert_eq!(byte, [5]);
        assert!(bus.write(0x64, &[0xfe]));
        assert_eq!(probes[1].lock().unwrap().writes, vec![(4, vec![0xfe])]);
        assert!(probes[0].lock().unwrap().writes.is_empty());
    }

    #[test]
    fn unowned_addresses_read_all_ones() {
        let (bus, _) = bus_with(&[(0x3f8, 8)]);
        let mut data = [0u8; 2];
        assert!(!bus.read(0x3f0, &mut data));
        assert_eq!(data, [0xff, 0xff]);
        assert!(!bus.read(0x400, &mut data));
        assert!(!bus.write(0x3f7, &[1]));
    }

    #[test]
    fn accesses_straddling_the_end_of_a_range_reach_nobody() {
        let (bus, probes) = bus_with(&[(0xd000_0000, 0x1000)]);
        let mut data = [0u8; 4];
        assert!(!bus.read(0xd000_0ffe, &mut data));
        assert!(bus.read(0xd000_0ffc, &mut data));
        assert!(!bus.write(u64::MAX - 1, &[0; 4]));
        assert!(!bus.write(0xd000_0000, &[]));
        assert!(probes[0].lock().unwrap().writes.is_empty());
    }

    #[test]
    fn overlapping_and_empty_ranges_are_refused() {
        let (mut bus, _) = bus_with(&[(0x100, 0x10)]);
        let probe = Arc::new(Mutex::new(Probe::default()));
        assert_eq!(
            bus.insert(probe.clone(), 0x10f, 1),
            Err(Error::Overlap {
                base: 0x10f,
                len: 1
            })
        );
        assert!(bus.insert(probe.clone(), 0xf8, 0x9).is_err());
        assert!(bus.insert(probe.clone(), 0x200, 0).is_err());
        assert!(bus.insert(probe.clone(), u64::MAX, 2).is_err());
        assert!(bus.insert(probe, 0x110, 1).is_ok());
    }
}

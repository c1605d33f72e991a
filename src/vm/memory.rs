//! Guest memory: anonymous host mappings laid out around the 32-bit MMIO gap.
//!
//! RAM starts at guest-physical 0. When it would reach [`MMIO_GAP_START`] the rest
//! continues above 4 GiB, so the gap below 4 GiB stays free for device MMIO (the
//! boot timer, virtio-mmio devices, the I/O APIC and the local APICs). Pages are
//! mapped lazily: a 1 GiB guest that touches 2 MiB costs 2 MiB of host RSS.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Where the 32-bit MMIO gap starts (as Firecracker: the last 768 MiB below 4 GiB).
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// Where the gap ends: 4 GiB.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// The smallest guest berth boots: room for the boot data below 1 MiB and a small kernel above it.
pub const MIN_MEM_MIB: u64 = 8;
/// The largest guest: far beyond what a sandbox needs, small enough that sizes never overflow.
pub const MAX_MEM_MIB: u64 = 1 << 20;

/// Guest memory as the rest of the VMM sees it.
pub type GuestMemory = GuestMemoryMmap;

/// Why guest memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested size is out of range.
    #[error("guest memory of {mib} MiB is out of range: pick --memory between {MIN_MEM_MIB}M and {}G", MAX_MEM_MIB >> 10)]
    Size { mib: u64 },
    /// The host refused the mapping.
    #[error("cannot map {mib} MiB of guest memory (is the host out of memory or address space? try a smaller --memory)")]
    Map {
        mib: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
}

/// The guest-physical RAM ranges for `mem_mib` MiB of memory: one below the gap, one above 4 GiB
/// when the memory does not fit below it.
pub fn ram_ranges(mem_mib: u64) -> Result<Vec<(GuestAddress, u64)>, Error> {
    if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&mem_mib) {
        return Err(Error::Size { mib: mem_mib });
    }
    let size = mem_mib << 20;
    if size <= MMIO_GAP_START {
        return Ok(vec![(GuestAddress(0), size)]);
    }
    Ok(vec![
        (GuestAddress(0), MMIO_GAP_START),
        (GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START),
    ])
}

/// Maps `mem_mib` MiB of guest memory, laid out by [`ram_ranges`].
pub fn create(mem_mib: u64) -> Result<GuestMemory, Error> {
    let ranges = ram_ranges(mem_mib)?;
    let ranges: Vec<(GuestAddress, usize)> = ranges
        .into_iter()
        .map(|(addr, len)| {
            usize::try_from(len)
                .map(|len| (addr, len))
                .map_err(|_| Error::Size { mib: mem_mib })
        })
        .collect::<Result<_, _>>()?;
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| Error::Map {
        mib: mem_mib,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range_from_zero() {
        assert_eq!(ram_ranges(64).unwrap(), vec![(GuestAddress(0), 64 << 20)]);
    }

    #[test]
    fn memory_up_to_the_gap_stays_below_it() {
        let mib = MMIO_GAP_START >> 20;
        assert_eq!(
            ram_ranges(mib).unwrap(),
            vec![(GuestAddress(0), MMIO_GAP_START)]
        );
    }

    #[test]
    fn memory_beyond_the_gap_continues_at_4g() {
        let ranges = ram_ranges(4096).unwrap();
        assert_eq!(
            ranges,
            vec![
                (GuestAddress(0), MMIO_GAP_START),
                (GuestAddress(1 << 32), (4096 << 20) - MMIO_GAP_START),
            ]
        );
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        assert_eq!(total, 4096 << 20);
    }

    #[test]
    fn sizes_out_of_range_say_what_to_pick() {
        let err = ram_ranges(1).unwrap_err().to_string();
        assert!(err.contains("--memory between 8M"), "{err}");
        assert!(ram_ranges(MAX_MEM_MIB + 1).is_err());
    }

    #[test]
    fn creates_lazily_mapped_memory() {
        use vm_memory::GuestMemoryBackend;
        let mem = create(16).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((16 << 20) - 1));
    }
}

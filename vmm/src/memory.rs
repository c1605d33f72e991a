//! Guest memory: anonymous host mappings laid out around the 32-bit MMIO gap.
//!
//! RAM starts at guest-physical 0. When it would reach [`MMIO_GAP_START`] the rest
//! continues above 4 GiB, so the gap below 4 GiB stays free for device MMIO (the
//! boot timer, virtio-mmio devices, the I/O APIC and the local APICs). Pages are
//! mapped lazily: a 1 GiB guest that touches 2 MiB costs 2 MiB of host RSS.

use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

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

/// The unit in which guest memory goes back to the host.
pub const PAGE_SIZE: u64 = 4096;

/// Why guest pages could not be given back to the host.
#[derive(Debug, thiserror::Error)]
pub enum DiscardError {
    /// The range is not inside one region of guest RAM.
    #[error("guest range {addr:#x}+{len:#x} is not guest RAM")]
    OutOfRange { addr: u64, len: u64 },
    #[error("madvise(MADV_DONTNEED) on guest memory failed")]
    Madvise(#[source] std::io::Error),
}

/// Gives the host back the whole pages of guest RAM inside `[addr, addr + len)`: they cost
/// nothing until the guest touches them again, and then read as zero, as never-touched memory
/// does. Returns the bytes given back (partial pages at either end are kept).
///
/// Whatever range a guest asks for is checked here: it must lie in one RAM region.
pub fn discard(mem: &GuestMemory, addr: GuestAddress, len: u64) -> Result<u64, DiscardError> {
    let out_of_range = || DiscardError::OutOfRange { addr: addr.0, len };
    let end = addr.0.checked_add(len).ok_or_else(out_of_range)?;
    let first = addr
        .0
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or_else(out_of_range)?;
    let last = end - end % PAGE_SIZE;
    if last <= first {
        return Ok(0);
    }
    let region = mem
        .find_region(GuestAddress(first))
        .ok_or_else(out_of_range)?;
    if last - 1 > region.last_addr().0 {
        return Err(out_of_range());
    }
    let host = region
        .get_host_address(MemoryRegionAddress(first - region.start_addr().0))
        .map_err(|_| out_of_range())?;
    let bytes = usize::try_from(last - first).map_err(|_| out_of_range())?;
    // SAFETY: `[host, host + bytes)` lies inside the region's mapping (checked above), a
    // private anonymous mapping the VMM keeps for the VM's whole life. MADV_DONTNEED leaves
    // the mapping in place and only swaps those pages for zero-fill-on-demand ones; the VMM
    // reaches guest memory only through vm-memory's volatile accessors, so no Rust reference
    // sees its contents change.
    let rc = unsafe { libc::madvise(host.cast(), bytes, libc::MADV_DONTNEED) };
    if rc != 0 {
        return Err(DiscardError::Madvise(std::io::Error::last_os_error()));
    }
    Ok(last - first)
}

/// Gives back the pages of `[start, end)` that hold only zeros; returns the bytes given back.
///
/// For what the VMM itself wrote before the guest runs: an x86_64 vmlinux carries megabytes of
/// zero padding (its linker script aligns the entry text to 2 MiB), which the ELF loader
/// copies into guest memory like the rest. The guest never touches that padding.
pub fn release_zero_pages(
    mem: &GuestMemory,
    start: GuestAddress,
    end: GuestAddress,
) -> Result<u64, DiscardError> {
    let mut page = [0u8; PAGE_SIZE as usize];
    let mut released = 0;
    let mut run_start = None;
    let mut addr = start.0.next_multiple_of(PAGE_SIZE);
    while addr + PAGE_SIZE <= end.0 {
        // Most pages of a kernel differ from zero in their first bytes: look there first.
        let zero = mem.read_slice(&mut page[..64], GuestAddress(addr)).is_ok()
            && page[..64].iter().all(|&b| b == 0)
            && mem.read_slice(&mut page, GuestAddress(addr)).is_ok()
            && page.iter().all(|&b| b == 0);
        match (zero, run_start) {
            (true, None) => run_start = Some(addr),
            (false, Some(from)) => {
                released += discard(mem, GuestAddress(from), addr - from)?;
                run_start = None;
            }
            _ => {}
        }
        addr += PAGE_SIZE;
    }
    if let Some(from) = run_start {
        released += discard(mem, GuestAddress(from), addr - from)?;
    }
    Ok(released)
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
    let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|source| Error::Map {
        mib: mem_mib,
        source,
    })?;
    // In 4 KiB pages, whatever the host's transparent huge page mode: with huge pages a guest
    // that touches one byte of a 2 MiB stretch costs the host all of it, and the small
    // blocks the guest reports free (see the balloon) would only split a huge page, not give
    // memory back until the host is short of it.
    for region in mem.iter() {
        if let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) {
            // SAFETY: the region's whole mapping, which the VMM owns; NOHUGEPAGE changes only
            // how the kernel backs it. A kernel without THP refuses it, which changes nothing.
            unsafe {
                libc::madvise(host.cast(), region.len() as usize, libc::MADV_NOHUGEPAGE);
            }
        }
    }
    Ok(mem)
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

    /// The resident bytes of the mapping that holds `addr` (mincore).
    fn resident(mem: &GuestMemory, addr: u64, len: u64) -> u64 {
        let host = mem.get_host_address(GuestAddress(addr)).unwrap();
        let pages = (len / PAGE_SIZE) as usize;
        let mut vec = vec![0u8; pages];
        // SAFETY: `host` is page aligned (mmap) and `len` lies inside the mapping; mincore
        // only writes `pages` bytes into `vec`.
        let rc = unsafe { libc::mincore(host.cast(), len as usize, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * PAGE_SIZE
    }

    #[test]
    fn discarded_pages_leave_the_host_and_read_as_zero() {
        let mem = create(16).unwrap();
        mem.write_slice(&[7u8; 5 * PAGE_SIZE as usize], GuestAddress(0x10000))
            .unwrap();
        assert_eq!(resident(&mem, 0x10000, 5 * PAGE_SIZE), 5 * PAGE_SIZE);
        // Partial pages at both ends are kept.
        let given = discard(&mem, GuestAddress(0x10000 + 100), 4 * PAGE_SIZE).unwrap();
        assert_eq!(given, 3 * PAGE_SIZE);
        assert_eq!(resident(&mem, 0x10000, 5 * PAGE_SIZE), 2 * PAGE_SIZE);
        let mut b = [1u8; 2];
        mem.read_slice(&mut b, GuestAddress(0x11000)).unwrap();
        assert_eq!(b, [0, 0]);
        mem.read_slice(&mut b, GuestAddress(0x10000)).unwrap();
        assert_eq!(b, [7, 7]);
    }

    #[test]
    fn guest_memory_is_never_backed_by_huge_pages() {
        let mem = create(16).unwrap();
        let start = mem.get_host_address(GuestAddress(0)).unwrap() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let flags = smaps
            .lines()
            .skip_while(|l| !l.starts_with(&format!("{start:x}-")))
            .find(|l| l.starts_with("VmFlags:"))
            .expect("the guest memory mapping in smaps");
        assert!(flags.split_whitespace().any(|f| f == "nh"), "{flags}");
    }

    #[test]
    fn discard_refuses_what_is_not_guest_ram() {
        let mem = create(16).unwrap();
        for (addr, len) in [
            (16 << 20, PAGE_SIZE),
            ((16 << 20) - PAGE_SIZE, 2 * PAGE_SIZE),
        ] {
            let err = discard(&mem, GuestAddress(addr), len).unwrap_err();
            assert!(matches!(err, DiscardError::OutOfRange { .. }), "{err}");
        }
        assert!(discard(&mem, GuestAddress(u64::MAX - 10), 20).is_err());
        assert_eq!(discard(&mem, GuestAddress(100), 200).unwrap(), 0);
    }

    #[test]
    fn zero_pages_written_by_the_loader_are_released() {
        let mem = create(16).unwrap();
        let base = 0x100000;
        let mut image = vec![0u8; 8 * PAGE_SIZE as usize];
        image[0] = 1; // page 0: data
        image[3 * PAGE_SIZE as usize + 4000] = 2; // page 3: data late in the page
        mem.write_slice(&image, GuestAddress(base)).unwrap();
        assert_eq!(resident(&mem, base, 8 * PAGE_SIZE), 8 * PAGE_SIZE);
        let released =
            release_zero_pages(&mem, GuestAddress(base), GuestAddress(base + 8 * PAGE_SIZE))
                .unwrap();
        assert_eq!(released, 6 * PAGE_SIZE);
        assert_eq!(resident(&mem, base, 8 * PAGE_SIZE), 2 * PAGE_SIZE);
        let mut b = [0u8; 1];
        mem.read_slice(&mut b, GuestAddress(base + 3 * PAGE_SIZE + 4000))
            .unwrap();
        assert_eq!(b, [2]);
    }

    #[test]
    fn creates_lazily_mapped_memory() {
        let mem = create(16).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((16 << 20) - 1));
    }
}

//! Segment descriptors: the GDT entries the boot code needs and the `kvm_segment` values the
//! vCPU's segment registers get from them.

use kvm_bindings::kvm_segment;

/// A 32-bit flat code segment (PVH entry): granularity 4 KiB, 32-bit default size, present,
/// ring 0, execute/read, accessed.
pub const CODE32: u16 = 0xc09b;
/// A 64-bit code segment (long-mode entry): as [`CODE32`] but with L set and D clear.
pub const CODE64: u16 = 0xa09b;
/// A flat read/write data segment.
pub const DATA: u16 = 0xc093;
/// A busy 32-bit TSS (PVH requires TR to hold one).
pub const TSS32: u16 = 0x008b;
/// A busy 64-bit TSS.
pub const TSS64: u16 = 0x808b;

/// A GDT entry from `flags` (access byte in bits 0-7, flags nibble in bits 12-15), `base` and
/// `limit` (20 bits, in pages when the granularity flag is set).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

/// The limit in bytes: a page-granular limit counts whole pages.
fn limit(entry: u64) -> u32 {
    let raw = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0xffff)) as u32;
    if entry & (1 << 55) != 0 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// The segment register value for GDT entry number `index`.
pub fn segment(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: if bit(47) == 0 { 1 } else { 0 },
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_32bit_code_segment() {
        let entry = gdt_entry(CODE32, 0, 0xfffff);
        assert_eq!(entry, 0x00cf_9b00_0000_ffff);
        let seg = segment(entry, 1);
        assert_eq!(seg.selector, 8);
        assert_eq!((seg.base, seg.limit), (0, 0xffff_ffff));
        assert_eq!((seg.type_, seg.present, seg.dpl, seg.s), (0xb, 1, 0, 1));
        assert_eq!((seg.db, seg.l, seg.g, seg.unusable), (1, 0, 1, 0));
    }

    #[test]
    fn long_mode_code_segment_has_l_and_not_db() {
        let seg = segment(gdt_entry(CODE64, 0, 0xfffff), 1);
        assert_eq!((seg.l, seg.db), (1, 0));
    }

    #[test]
    fn byte_granular_tss_keeps_its_limit_and_base() {
        let seg = segment(gdt_entry(TSS32, 0x1234_5678, 0x67), 3);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0x67);
        assert_eq!((seg.type_, seg.s, seg.g, seg.selector), (0xb, 0, 0, 24));
    }

    #[test]
    fn null_descriptor_is_unusable() {
        assert_eq!(segment(0, 0).unusable, 1);
    }
}

//! virtio-blk (virtio 1.1, 5.2) over a host file: the image's layer disks (read-only) and
//! any writable disk. Requests are served synchronously on the notifying vCPU thread with
//! positioned reads and writes, through a bounded bounce buffer.
//!
//! Each request is checked before it touches the file: its type, its sector range against
//! the disk's size (no overflow), the direction of every buffer, and a status byte to
//! answer in. A bad request gets `VIRTIO_BLK_S_IOERR` or `UNSUPP`; a chain without room for
//! a status is returned unanswered.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use vm_memory::ByteValued;

use super::{pop, read_config_bytes, QueueContext, VirtioDevice, F_VERSION_1, TYPE_BLOCK};
use crate::memory::GuestMemory;

pub const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZE: u16 = 256;
/// Feature bits (virtio 1.1, 5.2.3).
pub const F_RO: u64 = 1 << 5;
pub const F_FLUSH: u64 = 1 << 9;
/// Request types.
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
/// Status values.
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
/// GET_ID answers at most this many bytes.
const ID_LEN: usize = 20;
/// The bounce buffer between the file and guest memory.
const CHUNK: usize = 128 << 10;

/// The request header the driver puts first in every chain.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
pub struct RequestHeader {
    pub request_type: u32,
    pub reserved: u32,
    pub sector: u64,
}

// SAFETY: plain old data, every bit pattern valid, no padding (4 + 4 + 8 bytes).
unsafe impl ByteValued for RequestHeader {}

/// A block device backed by a host file.
pub struct Block {
    file: File,
    read_only: bool,
    /// Size in sectors (a trailing partial sector is not exposed).
    sectors: u64,
    id: [u8; ID_LEN],
    config: [u8; 8],
}

impl Block {
    /// Opens `path` as a disk; `id` is what the guest reads as its serial.
    pub fn open(path: &Path, read_only: bool, id: &str) -> io::Result<Block> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)?;
        Block::from_file(file, read_only, id)
    }

    pub fn from_file(file: File, read_only: bool, id: &str) -> io::Result<Block> {
        let len = file.metadata()?.len();
        let sectors = len / SECTOR_SIZE;
        let mut serial = [0u8; ID_LEN];
        let n = id.len().min(ID_LEN);
        serial[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Block {
            file,
            read_only,
            sectors,
            id: serial,
            config: sectors.to_le_bytes(),
        })
    }

    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Serves one request chain; returns the bytes written into the driver's buffers, or
    /// `None` for a chain that cannot even carry a status.
    fn serve(
        &self,
        chain: virtio_queue::DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> Option<u32> {
        let mut reader = chain.clone().reader(mem).ok()?;
        let mut writer = chain.writer(mem).ok()?;
        let writable = writer.available_bytes();
        if writable == 0 {
            return None;
        }
        // The status is the last writable byte; the data buffers are what precedes it.
        let mut status_writer = writer.split_at(writable - 1).ok()?;
        let (status, written) = match reader.read_obj::<RequestHeader>() {
            Ok(header) => self.execute(header, &mut reader, &mut writer),
            Err(_) => (S_IOERR, 0),
        };
        status_writer.write_all(&[status]).ok()?;
        u32::try_from(written + 1).ok()
    }

    /// Carries out a parsed request; returns the status and the data bytes written to the
    /// driver.
    fn execute(
        &self,
        header: RequestHeader,
        reader: &mut virtio_queue::Reader<'_>,
        writer: &mut virtio_queue::Writer<'_>,
    ) -> (u8, usize) {
        match header.request_type {
            T_IN => {
                let len = writer.available_bytes() as u64;
                let Some(offset) = self.range(header.sector, len) else {
                    return (S_IOERR, 0);
                };
                match copy_to_guest(&self.file, offset, len, writer) {
                    Ok(n) => (S_OK, n),
                    Err(n) => (S_IOERR, n),
                }
            }
            T_OUT if self.read_only => (S_IOERR, 0),
            T_OUT => {
                // Data for a write must come from device-readable buffers only.
                if writer.available_bytes() != 0 {
                    return (S_IOERR, 0);
                }
                let len = reader.available_bytes() as u64;
                let Some(offset) = self.range(header.sector, len) else {
                    return (S_IOERR, 0);
                };
                match copy_from_guest(&self.file, offset, len, reader) {
                    Ok(()) => (S_OK, 0),
                    Err(()) => (S_IOERR, 0),
                }
            }
            T_FLUSH if self.read_only => (S_OK, 0),
            T_FLUSH => match self.file.sync_data() {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            T_GET_ID => {
                let n = writer.available_bytes().min(ID_LEN);
                match writer.write_all(&self.id[..n]) {
                    Ok(()) => (S_OK, n),
                    Err(_) => (S_IOERR, 0),
                }
            }
            _ => (S_UNSUPP, 0),
        }
    }

    /// The byte offset of `len` bytes at `sector`, if they lie within the disk.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        let end_sector = sector.checked_add(len.div_ceil(SECTOR_SIZE))?;
        (end_sector <= self.sectors).then(|| sector * SECTOR_SIZE)
    }
}

/// File -> guest: `len` bytes at `offset`. Err carries the bytes already written.
fn copy_to_guest(
    file: &File,
    offset: u64,
    len: u64,
    writer: &mut virtio_queue::Writer<'_>,
) -> Result<usize, usize> {
    let mut buf = vec![0u8; CHUNK.min(len as usize)];
    let mut done = 0usize;
    while (done as u64) < len {
        let n = CHUNK.min((len - done as u64) as usize);
        file.read_exact_at(&mut buf[..n], offset + done as u64)
            .map_err(|_| done)?;
        writer.write_all(&buf[..n]).map_err(|_| done)?;
        done += n;
    }
    Ok(done)
}

/// Guest -> file: `len` bytes to `offset`.
fn copy_from_guest(
    file: &File,
    offset: u64,
    len: u64,
    reader: &mut virtio_queue::Reader<'_>,
) -> Result<(), ()> {
    let mut buf = vec![0u8; CHUNK.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = CHUNK.min((len - done) as usize);
        reader.read_exact(&mut buf[..n]).map_err(|_| ())?;
        file.write_all_at(&buf[..n], offset + done)
            .map_err(|_| ())?;
        done += n as u64;
    }
    Ok(())
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | if self.read_only { F_RO } else { F_FLUSH }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data)
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext) {
        if index != 0 {
            return;
        }
        let mem = ctx.mem;
        loop {
            let Some(queue) = ctx.queues.get_mut(0) else {
                return;
            };
            let Some(chain) = pop(queue, mem) else {
                return;
            };
            let head = chain.head_index();
            let len = self.serve(chain, mem).unwrap_or(0);
            ctx.add_used(0, head, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::mmio::tests::{bring_up, interrupt, memory, notify};
    use super::super::testdriver::Driver;
    use super::super::MmioTransport;
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    fn disk(content: &[u8], read_only: bool) -> (MmioTransport<Block>, GuestMemory) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        let mem = memory();
        let dev = Block::from_file(f, read_only, "layer0").unwrap();
        let mut t = MmioTransport::new(dev, mem.clone(), interrupt());
        bring_up(&mut t, &[Driver::QUEUE]);
        (t, mem)
    }

    fn header(mem: &GuestMemory, at: u64, t: u32, sector: u64) {
        mem.write_obj(
            RequestHeader {
                request_type: t,
                reserved: 0,
                sector,
            },
            GuestAddress(at),
        )
        .unwrap();
    }

    fn status(mem: &GuestMemory, at: u64) -> u8 {
        mem.read_obj(GuestAddress(at)).unwrap()
    }

    #[test]
    fn reads_writes_and_reports_its_size() {
        let mut content = vec![0u8; 4096];
        content[512..517].copy_from_slice(b"hello");
        let (mut t, mem) = disk(&content, false);
        let mut cap = [0u8; 8];
        t.device().read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);

        let mut d = Driver::new(&mem);
        header(&mem, 0x10000, T_IN, 1);
        d.add(&[
            (0x10000, 16, false),
            (0x11000, 512, true),
            (0x12000, 1, true),
        ]);
        notify(&mut t, 0);
        assert_eq!(d.used(), vec![(0, 513)]);
        assert_eq!(status(&mem, 0x12000), S_OK);
        let mut got = [0u8; 5];
        mem.read_slice(&mut got, GuestAddress(0x11000)).unwrap();
        assert_eq!(&got, b"hello");

        header(&mem, 0x10000, T_OUT, 7);
        mem.write_slice(&[7u8; 512], GuestAddress(0x11000)).unwrap();
        d.add(&[
            (0x10000, 16, false),
            (0x11000, 512, false),
            (0x12000, 1, true),
        ]);
        notify(&mut t, 0);
        assert_eq!(d.used().last(), Some(&(3, 1)));
        assert_eq!(status(&mem, 0x12000), S_OK);
        let mut back = [0u8; 512];
        t.device().file.read_exact_at(&mut back, 7 * 512).unwrap();
        assert_eq!(back, [7u8; 512]);
    }

    #[test]
    fn refuses_out_of_range_writes_to_read_only_and_unknown_requests() {
        let (mut t, mem) = disk(&[1u8; 1024], true);
        let mut d = Driver::new(&mem);
        for (ty, sector, data_write, want) in [
            (T_IN, 2, true, S_IOERR),        // past the end
            (T_IN, u64::MAX, true, S_IOERR), // overflowing
            (T_OUT, 0, false, S_IOERR),      // read-only
            (99, 0, true, S_UNSUPP),         // unknown
            (T_GET_ID, 0, true, S_OK),
        ] {
            header(&mem, 0x10000, ty, sector);
            mem.write_obj(0xffu8, GuestAddress(0x12000)).unwrap();
            d.add(&[
                (0x10000, 16, false),
                (0x11000, 512, data_write),
                (0x12000, 1, true),
            ]);
            notify(&mut t, 0);
            assert_eq!(
                status(&mem, 0x12000),
                want,
                "request type {ty} sector {sector}"
            );
        }
        let mut id = [0u8; 6];
        mem.read_slice(&mut id, GuestAddress(0x11000)).unwrap();
        assert_eq!(&id, b"layer0");
        assert_eq!(t.device().features() & F_RO, F_RO);
    }

    #[test]
    fn hostile_chains_do_not_reach_the_file_or_crash() {
        let (mut t, mem) = disk(&[0u8; 4096], false);
        let mut d = Driver::new(&mem);
        // A header outside guest memory, a data buffer outside guest memory, a chain with no
        // writable status: each is answered or dropped, and the device keeps serving.
        d.add(&[(0xfff_ffff_0000, 16, false), (0x12000, 1, true)]);
        header(&mem, 0x10000, T_IN, 0);
        d.add(&[
            (0x10000, 16, false),
            (0xfff_ffff_0000, 512, true),
            (0x12000, 1, true),
        ]);
        d.add(&[(0x10000, 16, false)]);
        // A short header.
        d.add(&[(0x10000, 4, false), (0x12000, 1, true)]);
        notify(&mut t, 0);
        assert_eq!(d.used().len(), 4, "every chain goes back to the driver");
        header(&mem, 0x10000, T_IN, 0);
        d.add(&[
            (0x10000, 16, false),
            (0x11000, 512, true),
            (0x12000, 1, true),
        ]);
        notify(&mut t, 0);
        assert_eq!(status(&mem, 0x12000), S_OK);
    }
}

//! virtio-net (virtio 1.1, 5.1): one receive and one transmit queue, no offloads, a fixed
//! MAC. Frames go to and come from one of two back ends ([`Framing`]):
//! - a host stream in the framing QEMU's `-netdev stream` and passt use: each Ethernet frame
//!   preceded by its length as a 32-bit big-endian number;
//! - a tap device (`IFF_TAP | IFF_NO_PI`, plain frames: one per read or write), as the network
//!   daemon of user-defined networks hands over. No `IFF_VNET_HDR`: the device offers no
//!   offloads, so the virtio header would only ever carry zeros across.
//!
//! Transmit is served on the notifying vCPU thread. A host thread ([`spawn_input`],
//! [`spawn_tap_input`]) reads frames and hands them to the device, which keeps at most
//! [`MAX_PENDING`] frames waiting for receive buffers and drops the rest, as a NIC with a
//! full ring does.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::mmio::MmioTransport;
use super::{pop, read_config_bytes, QueueContext, VirtioDevice, F_VERSION_1};

pub const TYPE_NET: u32 = 1;
/// The device has a MAC address in its configuration space.
pub const F_MAC: u64 = 1 << 5;
const QUEUE_SIZE: u16 = 256;
const RECEIVEQ: usize = 0;
const TRANSMITQ: usize = 1;
/// The virtio_net_hdr_v1 before every frame (flags, gso type, lengths, num_buffers).
pub const HDR_LEN: usize = 12;
/// The largest frame either side may send: an Ethernet frame of a 65520-byte MTU.
pub const MAX_FRAME: usize = 65_536;
/// Frames from the host waiting for receive buffers.
pub const MAX_PENDING: usize = 512;

/// How frames are delimited on the back end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A byte stream: a 32-bit big-endian length, then the frame (passt, QEMU's stream).
    LengthPrefixed,
    /// A tap device: each write is one frame, each read returns one.
    Tap,
}

/// The network device.
pub struct Net {
    mac: [u8; 6],
    out: Box<dyn Write + Send>,
    framing: Framing,
    pending: VecDeque<Vec<u8>>,
    dropped: u64,
}

impl Net {
    /// A NIC with address `mac` whose frames go to `out`, delimited as `framing` says.
    pub fn new(mac: [u8; 6], out: Box<dyn Write + Send>, framing: Framing) -> Net {
        Net {
            mac,
            out,
            framing,
            pending: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Frames the device dropped because the guest had no room for them.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A frame from the host for the guest.
    pub fn push_frame(&mut self, frame: Vec<u8>, ctx: &mut QueueContext) {
        if self.pending.len() >= MAX_PENDING {
            self.dropped += 1;
        } else {
            self.pending.push_back(frame);
        }
        self.fill_receive_buffers(ctx);
    }

    fn fill_receive_buffers(&mut self, ctx: &mut QueueContext) {
        let mem = ctx.mem;
        while let Some(frame) = self.pending.front() {
            let Some(queue) = ctx.queues.get_mut(RECEIVEQ) else {
                return;
            };
            let Some(chain) = pop(queue, mem) else {
                return;
            };
            let head = chain.head_index();
            let mut written = 0;
            if let Ok(mut w) = chain.writer(mem) {
                if w.available_bytes() >= HDR_LEN + frame.len() {
                    let mut hdr = [0u8; HDR_LEN];
                    hdr[10] = 1; // num_buffers
                    if w.write_all(&hdr).is_ok() && w.write_all(frame).is_ok() {
                        written = HDR_LEN + frame.len();
                    }
                }
            }
            // A frame the buffer cannot hold is dropped, not retried forever.
            if written == 0 {
                self.dropped += 1;
            }
            self.pending.pop_front();
            ctx.add_used(RECEIVEQ, head, written as u32);
        }
    }

    fn transmit(&mut self, ctx: &mut QueueContext) {
        let mem = ctx.mem;
        let mut frame = Vec::with_capacity(2048);
        loop {
            let Some(queue) = ctx.queues.get_mut(TRANSMITQ) else {
                return;
            };
            let Some(chain) = pop(queue, mem) else {
                return;
            };
            let head = chain.head_index();
            frame.clear();
            if let Ok(r) = chain.reader(mem) {
                let total = r.available_bytes();
                if (HDR_LEN + 14..=HDR_LEN + MAX_FRAME).contains(&total) {
                    let mut r = r;
                    if r.read_to_end(&mut frame).is_ok() {
                        let body = &frame[HDR_LEN..];
                        // A back end that went away drops frames, as an unplugged cable would.
                        let _ = match self.framing {
                            Framing::LengthPrefixed => {
                                let len = (body.len() as u32).to_be_bytes();
                                self.out
                                    .write_all(&len)
                                    .and_then(|()| self.out.write_all(body))
                            }
                            // One write, one frame: a tap takes it whole or not at all.
                            Framing::Tap => self.out.write(body).map(|_| ()),
                        };
                    }
                }
            }
            ctx.add_used(TRANSMITQ, head, 0);
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_MAC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac[6], status (unused without F_STATUS), max_virtqueue_pairs.
        let mut config = [0u8; 10];
        config[..6].copy_from_slice(&self.mac);
        read_config_bytes(&config, offset, data)
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext) {
        match index {
            RECEIVEQ => self.fill_receive_buffers(ctx),
            TRANSMITQ => self.transmit(ctx),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.pending.clear();
    }
}

/// Reads one length-prefixed frame; `None` at the end of the stream or on a frame no Ethernet
/// device could carry (the back end is then treated as gone).
pub fn read_frame(input: &mut impl Read) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return None;
    }
    let mut frame = vec![0u8; len];
    input.read_exact(&mut frame).ok()?;
    Some(frame)
}

/// Starts the thread that carries frames from the back end to the device; it ends when the
/// back end's stream ends (shut it down to stop the thread).
pub fn spawn_input(
    transport: Arc<Mutex<MmioTransport<Net>>>,
    mut input: UnixStream,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("virtio-net-in".into())
        .spawn(move || {
            while let Some(frame) = read_frame(&mut input) {
                let mut t = transport.lock().unwrap_or_else(|e| e.into_inner());
                // Before the driver is up there is nowhere to put a frame: a NIC that is
                // down drops what arrives.
                t.with_queues(|dev, ctx| dev.push_frame(frame, ctx));
            }
        })
}

/// Starts the thread that carries frames from a tap device to the device. A tap has no end
/// of stream of its own: the thread also ends when `stop` (one end of a socket pair) becomes
/// readable or hangs up, i.e. when the other end is shut down.
pub fn spawn_tap_input(
    transport: Arc<Mutex<MmioTransport<Net>>>,
    tap: OwnedFd,
    stop: UnixStream,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("virtio-net-tap".into())
        .spawn(move || {
            let mut buf = vec![0u8; MAX_FRAME];
            loop {
                let mut fds = [
                    nix::poll::PollFd::new(tap.as_fd(), nix::poll::PollFlags::POLLIN),
                    nix::poll::PollFd::new(stop.as_fd(), nix::poll::PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
                if fds[1].any().unwrap_or(true) {
                    return;
                }
                let tap_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
                if !tap_ready {
                    continue;
                }
                let n = match nix::unistd::read(tap.as_raw_fd(), &mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                    Err(_) => return,
                };
                // A runt is no Ethernet frame; the tap never sends one, but check anyway.
                if n < 14 {
                    continue;
                }
                let frame = buf[..n].to_vec();
                let mut t = transport.lock().unwrap_or_else(|e| e.into_inner());
                t.with_queues(|dev, ctx| dev.push_frame(frame, ctx));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::super::mmio::tests::{bring_up, interrupt, memory, notify};
    use super::super::testdriver::Driver;
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const MAC: [u8; 6] = [0x02, 0xb3, 0x47, 0, 0, 1];

    fn nic() -> (MmioTransport<Net>, GuestMemory, Sink) {
        let mem = memory();
        let sink = Sink::default();
        let mut t = MmioTransport::new(
            Net::new(MAC, Box::new(sink.clone()), Framing::LengthPrefixed),
            mem.clone(),
            interrupt(),
        );
        bring_up(&mut t, &[Driver::QUEUE, Driver::QUEUE1]);
        (t, mem, sink)
    }

    use crate::vm::memory::GuestMemory;

    #[test]
    fn reports_its_mac() {
        let (t, _, _) = nic();
        let mut mac = [0u8; 6];
        t.device().read_config(0, &mut mac);
        assert_eq!(mac, MAC);
        assert_ne!(t.device().features() & F_MAC, 0);
    }

    #[test]
    fn transmitted_frames_reach_the_back_end_length_prefixed_without_the_header() {
        let (mut t, mem, sink) = nic();
        let mut tx = Driver::at(&mem, Driver::QUEUE1);
        let frame: Vec<u8> = (0..60u8).collect();
        mem.write_slice(&[0u8; HDR_LEN], GuestAddress(0x10000))
            .unwrap();
        mem.write_slice(&frame, GuestAddress(0x10100)).unwrap();
        tx.add(&[(0x10000, HDR_LEN as u32, false), (0x10100, 60, false)]);
        // A runt (shorter than an Ethernet header) is dropped.
        tx.add(&[(0x10000, HDR_LEN as u32 + 4, false)]);
        notify(&mut t, 1);
        let out = sink.0.lock().unwrap().clone();
        assert_eq!(&out[..4], &60u32.to_be_bytes());
        assert_eq!(&out[4..], &frame[..]);
        assert_eq!(tx.used().len(), 2);
    }

    #[test]
    fn tap_framing_writes_the_bare_frame_in_one_write() {
        let mem = memory();
        let sink = Sink::default();
        let mut t = MmioTransport::new(
            Net::new(MAC, Box::new(sink.clone()), Framing::Tap),
            mem.clone(),
            interrupt(),
        );
        bring_up(&mut t, &[Driver::QUEUE, Driver::QUEUE1]);
        let mut tx = Driver::at(&mem, Driver::QUEUE1);
        let frame: Vec<u8> = (0..60u8).collect();
        mem.write_slice(&[0u8; HDR_LEN], GuestAddress(0x10000))
            .unwrap();
        mem.write_slice(&frame, GuestAddress(0x10100)).unwrap();
        tx.add(&[(0x10000, HDR_LEN as u32, false), (0x10100, 60, false)]);
        notify(&mut t, 1);
        assert_eq!(*sink.0.lock().unwrap(), frame);
    }

    #[test]
    fn tap_frames_reach_the_guest_and_the_thread_stops_on_request() {
        let mem = memory();
        let mut t = MmioTransport::new(
            Net::new(MAC, Box::new(std::io::sink()), Framing::Tap),
            mem.clone(),
            interrupt(),
        );
        bring_up(&mut t, &[Driver::QUEUE, Driver::QUEUE1]);
        let mut rx = Driver::at(&mem, Driver::QUEUE);
        rx.add(&[(0x20000, 2048, true)]);
        let t = Arc::new(Mutex::new(t));
        // A datagram socket pair stands in for the tap: one read, one frame.
        let (tap_host, tap_dev) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let (stop, stop_dev) = UnixStream::pair().unwrap();
        let input = spawn_tap_input(t.clone(), OwnedFd::from(tap_dev), stop_dev).unwrap();
        tap_host.send(&[5u8; 3]).unwrap(); // a runt: ignored
        tap_host.send(&[9u8; 80]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while rx.used().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(rx.used(), vec![(0, (HDR_LEN + 80) as u32)]);
        stop.shutdown(std::net::Shutdown::Both).unwrap();
        input.join().unwrap();
    }

    #[test]
    fn received_frames_get_a_header_and_wait_for_buffers() {
        let (mut t, mem, _) = nic();
        let mut rx = Driver::at(&mem, Driver::QUEUE);
        t.with_queues(|d, ctx| d.push_frame(vec![7u8; 100], ctx));
        assert_eq!(t.device().pending.len(), 1);
        rx.add(&[(0x20000, 2048, true)]);
        notify(&mut t, 0);
        assert_eq!(rx.used(), vec![(0, (HDR_LEN + 100) as u32)]);
        let mut hdr = [0u8; HDR_LEN];
        mem.read_slice(&mut hdr, GuestAddress(0x20000)).unwrap();
        assert_eq!(hdr[10], 1, "num_buffers");
        // A frame larger than the buffer is dropped, and the next one still arrives.
        t.with_queues(|d, ctx| d.push_frame(vec![1u8; 4000], ctx));
        t.with_queues(|d, ctx| d.push_frame(vec![2u8; 64], ctx));
        rx.add(&[(0x21000, 2048, true)]);
        rx.add(&[(0x22000, 2048, true)]);
        notify(&mut t, 0);
        assert_eq!(rx.used()[1].1, 0);
        assert_eq!(rx.used()[2].1, (HDR_LEN + 64) as u32);
        assert_eq!(t.device().dropped(), 1);
    }

    #[test]
    fn the_back_end_framing_is_checked() {
        let mut ok = &[0u8, 0, 0, 3, 1, 2, 3][..];
        assert_eq!(read_frame(&mut ok), Some(vec![1, 2, 3]));
        let mut huge = &[0xffu8, 0xff, 0xff, 0xff, 0][..];
        assert_eq!(read_frame(&mut huge), None);
        let mut short = &[0u8, 0, 0, 9, 1][..];
        assert_eq!(read_frame(&mut short), None);
    }
}

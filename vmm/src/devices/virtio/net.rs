//! virtio-net (virtio 1.1, 5.1): one receive and one transmit queue, a fixed MAC, the link's
//! MTU ([`MTU`], 65520 as passt's and berth's bridges) and merged receive buffers
//! ([`F_MRG_RXBUF`]: the guest posts small buffers and a 64 KiB frame spreads over as
//! many as it needs), no checksum or segmentation offloads. Large frames are what makes a
//! microVM's network fast: it pays for each frame in exits and interrupts, and a TCP segment
//! of the 65520-byte MTU crosses the device as one frame, not some 45 of 1514 bytes.
//! Frames go to and come from one of two back ends ([`Framing`]):
//! - a host stream in the framing QEMU's `-netdev stream` and passt use: each Ethernet frame
//!   preceded by its length as a 32-bit big-endian number;
//! - a tap device (`IFF_TAP | IFF_NO_PI`, plain frames: one per read or write), as the network
//!   daemon of user-defined networks hands over. No `IFF_VNET_HDR`: the device offers no
//!   offloads, so the virtio header would only ever carry zeros across.
//!
//! Transmit is served on the notifying vCPU thread without blocking it: when the stream back
//! end takes nothing more, the guest's frames stay in its ring (the NIC is busy, nothing is
//! lost) and the input thread finishes the job once the stream is writable again. A vCPU
//! blocked in a write, holding the device, would deadlock with backpressure: passt completes
//! a partly written frame with a blocking write, so it may wait for the input thread to read,
//! the input thread for the guest to take frames, and the guest for that vCPU.
//!
//! A host thread ([`spawn_input`],
//! [`spawn_tap_input`]) reads frames and hands them to the device, which keeps them until the
//! guest posts receive buffers. When [`MAX_PENDING_BYTES`] (or [`MAX_PENDING`] frames) wait,
//! the thread stops reading the back end until the guest has taken half (backpressure, as
//! QEMU's NICs apply it): what the guest cannot take yet waits in the back end (a tap queues
//! it, up to its queue length) instead of being dropped here. passt does not wait: it loses
//! the frames its socket does not take, so the device must read passt promptly, and the
//! guest on passt advertises a TCP window (`passt::GUEST_TCP_WINDOW`) that the socket alone
//! holds. The bound is larger than the window a Linux guest advertises for a connection
//! (half its receive buffer, at most 6 MiB), so a bulk transfer into the guest waits here
//! rather than in a back end. A guest that never posts buffers costs at most that bound in
//! memory, and the thread still ends when the VM does.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use virtio_queue::{QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::MmioTransport;
use super::{pop, read_config_bytes, QueueContext, VirtioDevice, F_VERSION_1};

pub const TYPE_NET: u32 = 1;
/// The device tells the driver its link's MTU (configuration space).
pub const F_MTU: u64 = 1 << 3;
/// The device has a MAC address in its configuration space.
pub const F_MAC: u64 = 1 << 5;
/// The driver posts small receive buffers and the device spreads a frame over as many as it
/// needs, counted in the first one's header.
pub const F_MRG_RXBUF: u64 = 1 << 15;
/// The MTU the device offers: that of passt and of berth's bridges (and slirp4netns).
pub const MTU: u16 = 65_520;
const QUEUE_SIZE: u16 = 256;
const RECEIVEQ: usize = 0;
const TRANSMITQ: usize = 1;
/// The virtio_net_hdr_v1 before every frame (flags, gso type, lengths, num_buffers).
pub const HDR_LEN: usize = 12;
/// The largest frame either side may send: an Ethernet frame of a 65520-byte MTU.
pub const MAX_FRAME: usize = 65_536;
/// Bytes of frames from the host waiting for receive buffers at which the input thread stops
/// reading the back end.
pub const MAX_PENDING_BYTES: usize = 8 << 20;
/// Frames waiting at which the input thread stops, whatever their size: each costs an
/// allocation.
pub const MAX_PENDING: usize = 8192;

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
    /// The bytes of the frames in `pending`.
    pending_bytes: usize,
    dropped: u64,
    /// Written when the input thread has something new to do: read again after a stop for
    /// want of room, or write out `unsent`.
    wake: EventFd,
    /// Whether the input thread stopped reading for want of room.
    input_stopped: bool,
    /// Framed output the stream back end has not taken yet: at most the rest of one frame,
    /// kept across a reset, as the stream is mid-frame.
    unsent: Vec<u8>,
    /// Whether transmit waits for the stream to become writable.
    output_blocked: bool,
    /// Whether the driver accepted [`F_MRG_RXBUF`].
    mergeable: bool,
}

impl Net {
    /// A NIC with address `mac` whose frames go to `out`, delimited as `framing` says.
    pub fn new(mac: [u8; 6], out: Box<dyn Write + Send>, framing: Framing) -> io::Result<Net> {
        Ok(Net {
            mac,
            out,
            framing,
            pending: VecDeque::new(),
            pending_bytes: 0,
            dropped: 0,
            wake: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
            input_stopped: false,
            unsent: Vec::new(),
            output_blocked: false,
            mergeable: false,
        })
    }

    /// Frames the device dropped: too large for the guest's buffer, or pushed while full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A frame from the host for the guest. Returns false when the device is full: the caller
    /// should then read no more from the back end until [`Net::wake`] is signalled and
    /// [`Net::input_stopped`] says so (a caller that pushes anyway has its frames dropped).
    pub fn push_frame(&mut self, frame: Vec<u8>, ctx: &mut QueueContext) -> bool {
        if self.full() {
            self.dropped += 1;
        } else {
            self.pending_bytes += frame.len();
            self.pending.push_back(frame);
        }
        self.fill_receive_buffers(ctx);
        let full = self.full();
        self.input_stopped |= full;
        !full
    }

    fn full(&self) -> bool {
        self.pending.len() >= MAX_PENDING || self.pending_bytes >= MAX_PENDING_BYTES
    }

    /// Whether the input thread should read no more from the back end for now.
    pub fn input_stopped(&self) -> bool {
        self.input_stopped
    }

    /// Whether transmit waits for the stream back end to become writable.
    pub fn output_blocked(&self) -> bool {
        self.output_blocked
    }

    /// What the input thread waits on besides the back end: readable when the guest has made
    /// room after [`Net::push_frame`] said the device was full, or when transmit found the
    /// stream full (read it to rearm it, then ask [`Net::input_stopped`] and
    /// [`Net::output_blocked`]).
    pub fn wake(&self) -> io::Result<OwnedFd> {
        Ok(super::owned_fd(self.wake.try_clone()?))
    }

    /// Lets a stopped input thread read again once the guest has taken half of what waited.
    fn resume_input(&mut self) {
        if self.input_stopped
            && self.pending.len() <= MAX_PENDING / 2
            && self.pending_bytes <= MAX_PENDING_BYTES / 2
        {
            self.input_stopped = false;
            // The counter cannot overflow: it is written once per stop and read after each.
            let _ = self.wake.write(1);
        }
    }

    fn fill_receive_buffers(&mut self, ctx: &mut QueueContext) {
        while let Some(frame) = self.pending.front() {
            let placed = if self.mergeable {
                merge_into_buffers(frame, ctx)
            } else {
                one_buffer(frame, ctx)
            };
            // Not enough buffers yet: the frame waits for more.
            let Some(delivered) = placed else {
                return;
            };
            // A frame the buffers cannot hold is dropped, not retried forever.
            if !delivered {
                self.dropped += 1;
            }
            self.pending_bytes -= frame.len();
            self.pending.pop_front();
            self.resume_input();
        }
    }

    /// Writes what waits for the stream back end; false when the stream is full (the rest
    /// stays for later).
    fn flush_output(&mut self) -> bool {
        while !self.unsent.is_empty() {
            match self.out.write(&self.unsent) {
                Ok(n) if n > 0 => {
                    self.unsent.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A back end that went away drops frames, as an unplugged cable would.
                _ => self.unsent.clear(),
            }
        }
        true
    }

    fn transmit(&mut self, ctx: &mut QueueContext) {
        let mem = ctx.mem;
        let mut frame = Vec::with_capacity(2048);
        loop {
            // Each frame goes out before the next leaves the ring.
            if !self.flush_output() {
                if !self.output_blocked {
                    self.output_blocked = true;
                    let _ = self.wake.write(1);
                }
                return;
            }
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
                        match self.framing {
                            Framing::LengthPrefixed => {
                                self.unsent
                                    .extend_from_slice(&(body.len() as u32).to_be_bytes());
                                self.unsent.extend_from_slice(body);
                            }
                            // One write, one frame: a tap takes it whole or drops it.
                            Framing::Tap => {
                                let _ = self.out.write(body);
                            }
                        }
                    }
                }
            }
            ctx.add_used(TRANSMITQ, head, 0);
        }
    }
}

/// Puts `frame` with its header into the receive queue's next chain (the driver did not accept
/// [`F_MRG_RXBUF`], so each buffer is large enough for a whole frame). Returns `None` when the
/// queue has no chain, else whether the frame fitted (a chain too small is used empty).
fn one_buffer(frame: &[u8], ctx: &mut QueueContext) -> Option<bool> {
    let mem = ctx.mem;
    let chain = pop(ctx.queues.get_mut(RECEIVEQ)?, mem)?;
    let head = chain.head_index();
    let mut written = 0;
    if let Ok(mut w) = chain.writer(mem) {
        if w.available_bytes() >= HDR_LEN + frame.len()
            && w.write_all(&header(1)).is_ok()
            && w.write_all(frame).is_ok()
        {
            written = HDR_LEN + frame.len();
        }
    }
    ctx.add_used(RECEIVEQ, head, written as u32);
    Some(written > 0)
}

/// The header of a received frame: no checksum or segmentation offload, the frame in
/// `buffers` buffers.
fn header(buffers: u16) -> [u8; HDR_LEN] {
    let mut hdr = [0u8; HDR_LEN];
    hdr[10..12].copy_from_slice(&buffers.to_le_bytes());
    hdr
}

/// Spreads `frame` with its header over as many of the receive queue's chains as it needs,
/// and hands them to the driver together. Returns `None` when the chains available cannot hold
/// it yet (they go back to the queue untouched: the driver will post more), else whether it
/// was delivered: a frame that even the whole ring cannot hold, or a chain the device cannot
/// write, drops the frame and returns the chains taken for it empty (the driver drops each as
/// a runt).
fn merge_into_buffers(frame: &[u8], ctx: &mut QueueContext) -> Option<bool> {
    let mem = ctx.mem;
    let queue = ctx.queues.get_mut(RECEIVEQ)?;
    let size = usize::from(queue.size());
    let need = HDR_LEN + frame.len();
    // Each chain taken: its head and its writer (none for a chain the device cannot write).
    let mut chains = Vec::new();
    let mut room = 0;
    let mut usable = true;
    while room < need {
        let Some(chain) = pop(queue, mem) else {
            for _ in 0..chains.len() {
                queue.go_to_previous_position();
            }
            return None;
        };
        let head = chain.head_index();
        let writer = chain.writer(mem).ok();
        let capacity = writer.as_ref().map_or(0, |w| w.available_bytes());
        // The first buffer must hold the whole header, and no buffer may be empty.
        if capacity == 0 || (chains.is_empty() && capacity < HDR_LEN) {
            usable = false;
        }
        room += capacity;
        chains.push((head, writer));
        if !usable || chains.len() >= size {
            break;
        }
    }
    usable &= room >= need;
    let mut used = Vec::with_capacity(chains.len());
    let hdr = header(chains.len() as u16);
    // What is left to write: the header, then the frame.
    let mut parts = [&hdr[..], frame];
    for (head, writer) in chains {
        let mut written = 0;
        if usable {
            if let Some(mut w) = writer {
                for part in parts.iter_mut() {
                    let n = w.available_bytes().min(part.len());
                    if w.write_all(&part[..n]).is_err() {
                        usable = false;
                        break;
                    }
                    *part = &part[n..];
                    written += n;
                }
            }
        }
        used.push((head, written as u32));
    }
    if !usable {
        for u in &mut used {
            u.1 = 0;
        }
    }
    ctx.add_used_together(RECEIVEQ, &used);
    Some(usable)
}

/// Once the stream back end is writable again: writes what waits and serves the transmit
/// queue; returns whether the output is still blocked.
fn resume_output(t: &mut MmioTransport<Net>) -> bool {
    let dev = t.device_mut();
    dev.output_blocked = false;
    if !dev.flush_output() {
        dev.output_blocked = true;
        return true;
    }
    // Before the driver is up (or after a reset) there is no ring to serve.
    t.with_queues(|dev, ctx| dev.transmit(ctx));
    t.device().output_blocked
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_MAC | F_MTU | F_MRG_RXBUF
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac[6], status (unused without F_STATUS), max_virtqueue_pairs (unused without F_MQ),
        // mtu; little-endian.
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&self.mac);
        config[10..12].copy_from_slice(&MTU.to_le_bytes());
        read_config_bytes(&config, offset, data)
    }

    fn ack_features(&mut self, features: u64) {
        self.mergeable = features & F_MRG_RXBUF != 0;
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
        self.pending_bytes = 0;
        self.resume_input();
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

/// Hands `frame` to the device; false when the device is full and the back end must wait.
fn deliver(transport: &Mutex<MmioTransport<Net>>, frame: Vec<u8>) -> bool {
    let mut t = transport.lock().unwrap_or_else(|e| e.into_inner());
    let mut room = true;
    // Before the driver is up there is nowhere to put a frame: a NIC that is down drops what
    // arrives, and reading on costs nothing.
    t.with_queues(|dev, ctx| room = dev.push_frame(frame, ctx));
    room
}

/// Reads `wake` (from [`Net::wake`]) to rearm it.
fn rearm(wake: &OwnedFd) {
    let _ = nix::unistd::read(wake.as_raw_fd(), &mut [0u8; 8]);
}

/// Waits until the device has room again (the tap's input, whose output never blocks: a tap
/// drops what it cannot queue); false when `stop` shows `stop_events` first: the VM is ending,
/// and the thread with it.
fn wait_for_room(
    transport: &Mutex<MmioTransport<Net>>,
    wake: &OwnedFd,
    stop: BorrowedFd,
    stop_events: PollFlags,
) -> bool {
    loop {
        let mut fds = [
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop, stop_events),
        ];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
        if fds[1].any().unwrap_or(true) {
            return false;
        }
        if fds[0].any().unwrap_or(true) {
            rearm(wake);
            let t = transport.lock().unwrap_or_else(|e| e.into_inner());
            if !t.device().input_stopped() {
                return true;
            }
        }
    }
}

/// The stream back end as the device writes it: never blocking the vCPU, whatever the
/// socket's mode (the input thread reads the same socket blocking).
pub struct DontWait(pub UnixStream);

impl Write for DontWait {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use nix::sys::socket::{send, MsgFlags};
        send(
            self.0.as_raw_fd(),
            buf,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        )
        .map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts the thread that carries frames from the stream back end to the device, and writes
/// the device's output when the stream had no room for it. It ends when the stream ends or
/// is shut down (shut it down to stop the thread, whatever it waits for).
pub fn spawn_input(
    transport: Arc<Mutex<MmioTransport<Net>>>,
    input: UnixStream,
) -> io::Result<JoinHandle<()>> {
    let wake = transport
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .device()
        .wake()?;
    std::thread::Builder::new()
        .name("virtio-net-in".into())
        .spawn(move || {
            crate::seccomp::enter(crate::launch::ThreadKind::Io);
            let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
            let gone = rdhup | PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
            // passt writes many frames at once: read them in as few calls.
            let mut reader = io::BufReader::with_capacity(256 << 10, &input);
            let (mut reading, mut writing) = (true, false);
            loop {
                // Frames already buffered go first: poll does not see them.
                while reading && !reader.buffer().is_empty() {
                    let Some(frame) = read_frame(&mut reader) else {
                        return;
                    };
                    reading = deliver(&transport, frame);
                }
                let mut events = rdhup;
                if reading {
                    events |= PollFlags::POLLIN;
                }
                if writing {
                    events |= PollFlags::POLLOUT;
                }
                let mut fds = [
                    PollFd::new(input.as_fd(), events),
                    PollFd::new(wake.as_fd(), PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
                let back_end = fds[0].revents().unwrap_or(PollFlags::POLLNVAL);
                // The VM's end shuts the stream down; passt's end closes it.
                if back_end.intersects(gone) {
                    return;
                }
                if fds[1].any().unwrap_or(false) {
                    rearm(&wake);
                    let t = transport.lock().unwrap_or_else(|e| e.into_inner());
                    reading = !t.device().input_stopped();
                    writing = t.device().output_blocked();
                }
                if back_end.contains(PollFlags::POLLOUT) {
                    let mut t = transport.lock().unwrap_or_else(|e| e.into_inner());
                    writing = resume_output(&mut t);
                }
                if reading && back_end.contains(PollFlags::POLLIN) {
                    // A frame, once begun, is finished: passt writes the rest of a partly
                    // sent frame at once.
                    let Some(frame) = read_frame(&mut reader) else {
                        return;
                    };
                    reading = deliver(&transport, frame);
                }
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
    let wake = transport
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .device()
        .wake()?;
    std::thread::Builder::new()
        .name("virtio-net-tap".into())
        .spawn(move || {
            crate::seccomp::enter(crate::launch::ThreadKind::Io);
            let mut buf = vec![0u8; MAX_FRAME];
            loop {
                let mut fds = [
                    PollFd::new(tap.as_fd(), PollFlags::POLLIN),
                    PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, PollTimeout::NONE) {
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
                // While the device is full the tap's own queue holds what arrives.
                if !deliver(&transport, buf[..n].to_vec())
                    && !wait_for_room(&transport, &wake, stop.as_fd(), PollFlags::POLLIN)
                {
                    return;
                }
            }
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::mmio::tests::{bring_up, bring_up_accepting, interrupt, memory, notify};
    use super::super::testdriver::Driver;
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    /// A stream back end that keeps what the device writes.
    #[derive(Clone, Default)]
    pub struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Sink {
        pub fn bytes(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
    }
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

    pub fn nic() -> (MmioTransport<Net>, GuestMemory, Sink) {
        let mem = memory();
        let sink = Sink::default();
        let mut t = MmioTransport::new(
            Net::new(MAC, Box::new(sink.clone()), Framing::LengthPrefixed).unwrap(),
            mem.clone(),
            interrupt(),
        );
        bring_up(&mut t, &[Driver::QUEUE, Driver::QUEUE1]);
        (t, mem, sink)
    }

    use crate::memory::GuestMemory;

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
            Net::new(MAC, Box::new(sink.clone()), Framing::Tap).unwrap(),
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
            Net::new(MAC, Box::new(std::io::sink()), Framing::Tap).unwrap(),
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

    fn mergeable_nic() -> (MmioTransport<Net>, GuestMemory) {
        let mem = memory();
        let mut t = MmioTransport::new(
            Net::new(MAC, Box::new(std::io::sink()), Framing::LengthPrefixed).unwrap(),
            mem.clone(),
            interrupt(),
        );
        bring_up_accepting(&mut t, &[Driver::QUEUE, Driver::QUEUE1], F_MRG_RXBUF as u32);
        (t, mem)
    }

    #[test]
    fn offers_a_64k_mtu_and_merged_receive_buffers() {
        let (t, _, _) = nic();
        assert_ne!(t.device().features() & F_MTU, 0);
        assert_ne!(t.device().features() & F_MRG_RXBUF, 0);
        let mut mtu = [0u8; 2];
        t.device().read_config(10, &mut mtu);
        assert_eq!(u16::from_le_bytes(mtu), 65520);
        // A frame of that MTU is one the back ends may send.
        assert!(usize::from(MTU) + 14 <= MAX_FRAME);
    }

    #[test]
    fn a_large_frame_spreads_over_merged_buffers_counted_in_the_first() {
        let (mut t, mem) = mergeable_nic();
        let mut rx = Driver::at(&mem, Driver::QUEUE);
        let frame: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        t.with_queues(|d, ctx| assert!(d.push_frame(frame.clone(), ctx)));
        // Two 2 KiB buffers are not enough: the frame waits, and the driver sees nothing.
        rx.add(&[(0x20000, 2048, true)]);
        rx.add(&[(0x21000, 2048, true)]);
        notify(&mut t, 0);
        assert!(rx.used().is_empty());
        assert_eq!(t.device().pending.len(), 1);
        // A third one is: all three come back at once, the header counting them.
        rx.add(&[(0x22000, 2048, true)]);
        notify(&mut t, 0);
        let last = (HDR_LEN + frame.len() - 4096) as u32;
        assert_eq!(rx.used(), vec![(0, 2048), (1, 2048), (2, last)]);
        let mut got = vec![0u8; HDR_LEN + frame.len()];
        mem.read_slice(&mut got[..2048], GuestAddress(0x20000))
            .unwrap();
        mem.read_slice(&mut got[2048..4096], GuestAddress(0x21000))
            .unwrap();
        mem.read_slice(&mut got[4096..], GuestAddress(0x22000))
            .unwrap();
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
        assert_eq!(&got[HDR_LEN..], &frame[..]);
        // A small frame takes one buffer.
        t.with_queues(|d, ctx| assert!(d.push_frame(vec![4u8; 60], ctx)));
        rx.add(&[(0x23000, 2048, true)]);
        notify(&mut t, 0);
        assert_eq!(rx.used()[3], (3, (HDR_LEN + 60) as u32));
        assert_eq!(t.device().dropped(), 0);
    }

    #[test]
    fn a_frame_larger_than_the_whole_ring_is_dropped_and_the_next_arrives() {
        let (mut t, mem) = mergeable_nic();
        let mut rx = Driver::at(&mem, Driver::QUEUE);
        let size = usize::from(Driver::QUEUE.3);
        for i in 0..size {
            rx.add(&[(0x20000 + i as u64 * 0x100, 64, true)]);
        }
        t.with_queues(|d, ctx| assert!(d.push_frame(vec![1u8; 64 * size], ctx)));
        // Every buffer comes back empty (the driver drops each as a runt), none is kept.
        let used = rx.used();
        assert_eq!(used.len(), size);
        assert!(used.iter().all(|&(_, len)| len == 0));
        assert_eq!(t.device().dropped(), 1);
        assert!(t.device().pending.is_empty());
        rx.add(&[(0x30000, 2048, true)]);
        t.with_queues(|d, ctx| assert!(d.push_frame(vec![2u8; 100], ctx)));
        assert_eq!(rx.used()[size].1, (HDR_LEN + 100) as u32);
        // A first buffer too small for the header drops the frame too.
        rx.add(&[(0x31000, 4, true)]);
        t.with_queues(|d, ctx| assert!(d.push_frame(vec![3u8; 100], ctx)));
        assert_eq!(rx.used()[size + 1].1, 0);
        assert_eq!(t.device().dropped(), 2);
    }

    #[test]
    fn received_frames_get_a_header_and_wait_for_buffers() {
        let (mut t, mem, _) = nic();
        let mut rx = Driver::at(&mem, Driver::QUEUE);
        t.with_queues(|d, ctx| assert!(d.push_frame(vec![7u8; 100], ctx)));
        assert_eq!(t.device().pending.len(), 1);
        rx.add(&[(0x20000, 2048, true)]);
        notify(&mut t, 0);
        assert_eq!(rx.used(), vec![(0, (HDR_LEN + 100) as u32)]);
        let mut hdr = [0u8; HDR_LEN];
        mem.read_slice(&mut hdr, GuestAddress(0x20000)).unwrap();
        assert_eq!(hdr[10], 1, "num_buffers");
        // A frame larger than the buffer is dropped, and the next one still arrives.
        t.with_queues(|d, ctx| assert!(d.push_frame(vec![1u8; 4000], ctx)));
        t.with_queues(|d, ctx| assert!(d.push_frame(vec![2u8; 64], ctx)));
        rx.add(&[(0x21000, 2048, true)]);
        rx.add(&[(0x22000, 2048, true)]);
        notify(&mut t, 0);
        assert_eq!(rx.used()[1].1, 0);
        assert_eq!(rx.used()[2].1, (HDR_LEN + 64) as u32);
        assert_eq!(t.device().dropped(), 1);
    }

    /// Whether `fd` is readable now.
    fn readable(fd: &OwnedFd) -> bool {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    }

    /// Posts receive buffers as the guest's ring has free slots, until `count` frames in all
    /// have arrived or twenty seconds have passed; returns how many arrived. `posted` counts the
    /// buffers posted so far: no more than `count`, so none is left over.
    fn receive(
        t: &Mutex<MmioTransport<Net>>,
        rx: &mut Driver,
        posted: &mut usize,
        count: usize,
    ) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while rx.used_count() < count && std::time::Instant::now() < deadline {
            let before = rx.used_count();
            // The test driver reuses descriptors in order: only those the device gave back.
            while *posted - before < usize::from(Driver::QUEUE.3) && *posted < count {
                rx.add(&[(0x20000 + (*posted as u64 % 16) * 0x1000, 2048, true)]);
                *posted += 1;
            }
            notify(&mut *t.lock().unwrap(), 0);
            if rx.used_count() == before {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        rx.used_count()
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    #[test]
    fn a_full_device_stops_the_input_until_the_guest_has_taken_half() {
        let (mut t, mem, _) = nic();
        let room = t.device().wake().unwrap();
        for i in 0..MAX_PENDING {
            let mut more = false;
            t.with_queues(|d, ctx| more = d.push_frame(vec![i as u8; 60], ctx));
            assert_eq!(more, i + 1 < MAX_PENDING, "frame {i}");
        }
        assert!(!readable(&room));
        // Taking fewer than half does not resume the input; taking half does.
        let t = Mutex::new(t);
        let mut rx = Driver::at(&mem, Driver::QUEUE);
        let deficit = MAX_PENDING / 2;
        let mut posted = 0;
        assert_eq!(receive(&t, &mut rx, &mut posted, deficit - 1), deficit - 1);
        assert!(!readable(&room));
        assert_eq!(receive(&t, &mut rx, &mut posted, deficit), deficit);
        assert!(readable(&room));
        assert_eq!(t.lock().unwrap().device().dropped(), 0);
    }

    #[test]
    fn large_frames_stop_the_input_at_the_byte_bound_and_a_reset_resumes_it() {
        let (mut t, _, _) = nic();
        let room = t.device().wake().unwrap();
        let mut accepted = 0;
        let mut more = true;
        while more {
            t.with_queues(|d, ctx| more = d.push_frame(vec![0u8; MAX_FRAME], ctx));
            accepted += 1;
        }
        assert_eq!(accepted, MAX_PENDING_BYTES / MAX_FRAME);
        assert!(!readable(&room));
        t.device_mut().reset();
        assert!(readable(&room));
    }

    #[test]
    fn the_input_thread_waits_for_room_drops_nothing_and_still_stops() {
        let (t, mem, _) = nic();
        let t = Arc::new(Mutex::new(t));
        let (mut host, device_end) = UnixStream::pair().unwrap();
        let stop = device_end.try_clone().unwrap();
        let input = spawn_input(t.clone(), device_end).unwrap();
        // One write a frame: the socket's buffer counts each write's overhead, and what the
        // thread leaves unread must fit in it.
        let mut send = move |count: usize| {
            for i in 0..count {
                let mut frame = 60u32.to_be_bytes().to_vec();
                frame.extend_from_slice(&[i as u8; 60]);
                host.write_all(&frame).unwrap();
            }
        };
        let pending = || t.lock().unwrap().device().pending.len();
        // More than the device holds, with no receive buffers: the thread stops reading
        // and the rest waits in the socket.
        let total = MAX_PENDING + 50;
        send(total);
        wait_for("the device to fill", || pending() == MAX_PENDING);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(pending(), MAX_PENDING);
        // Buffers, a ring's worth at a time: every frame arrives.
        let mut rx = Driver::at(&mem, Driver::QUEUE);
        assert_eq!(receive(&t, &mut rx, &mut 0, total), total);
        assert_eq!(t.lock().unwrap().device().dropped(), 0);
        // A guest that posts no more buffers leaves the thread waiting for room; the VM's
        // end still stops it.
        send(MAX_PENDING + 10);
        wait_for("the device to fill again", || pending() == MAX_PENDING);
        stop.shutdown(std::net::Shutdown::Both).unwrap();
        input.join().unwrap();
    }

    #[test]
    fn a_full_stream_leaves_frames_in_the_ring_for_the_input_thread_to_send() {
        let mem = memory();
        let (mut peer, device_end) = UnixStream::pair().unwrap();
        let out = DontWait(device_end.try_clone().unwrap());
        let mut t = MmioTransport::new(
            Net::new(MAC, Box::new(out), Framing::LengthPrefixed).unwrap(),
            mem.clone(),
            interrupt(),
        );
        bring_up(&mut t, &[Driver::QUEUE, Driver::QUEUE1]);
        // The back end reads nothing for now: fill the socket.
        let mut filler = DontWait(device_end.try_clone().unwrap());
        let mut filled = 0;
        while let Ok(n) = filler.write(&[0u8; 4096]) {
            filled += n;
        }
        let mut tx = Driver::at(&mem, Driver::QUEUE1);
        mem.write_slice(&[0u8; HDR_LEN], GuestAddress(0x10000))
            .unwrap();
        mem.write_slice(&[1u8; 60], GuestAddress(0x10100)).unwrap();
        mem.write_slice(&[2u8; 70], GuestAddress(0x10200)).unwrap();
        tx.add(&[(0x10000, HDR_LEN as u32, false), (0x10100, 60, false)]);
        tx.add(&[(0x10000, HDR_LEN as u32, false), (0x10200, 70, false)]);
        // The vCPU does not block: the first frame waits in the device, the second in the
        // ring.
        notify(&mut t, 1);
        assert_eq!(tx.used_count(), 1);
        assert!(t.device().output_blocked());
        // Once the back end reads, the input thread sends both, in order.
        let t = Arc::new(Mutex::new(t));
        let stop = device_end.try_clone().unwrap();
        let input = spawn_input(t.clone(), device_end).unwrap();
        let mut skip = vec![0u8; filled];
        peer.read_exact(&mut skip).unwrap();
        assert_eq!(read_frame(&mut peer), Some(vec![1u8; 60]));
        assert_eq!(read_frame(&mut peer), Some(vec![2u8; 70]));
        wait_for("the second chain to be used", || tx.used_count() == 2);
        assert!(!t.lock().unwrap().device().output_blocked());
        stop.shutdown(std::net::Shutdown::Both).unwrap();
        input.join().unwrap();
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

//! virtio-console (virtio 1.1, 5.3) with one port, no multiport: the guest sees `/dev/hvc0`,
//! and the bytes on it reach a host stream (the guest agent's channel).
//!
//! Guest -> host (transmitq): served on the notifying vCPU thread, written to the host
//! stream. Host -> guest (receiveq): a host thread reads the stream and calls [`push_input`];
//! bytes wait in a bounded buffer until the driver posts receive buffers, and the host thread
//! stops reading while the buffer is full, so a guest that never reads cannot make the VMM
//! grow.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::mmio::MmioTransport;
use super::{pop, read_config_bytes, QueueContext, VirtioDevice, F_VERSION_1, TYPE_CONSOLE};

/// Linux's driver fills the whole receive ring with page-sized buffers when the port opens
/// and keeps it full: 64 entries hold 256 KiB of guest memory, the host's own MAX_PENDING;
/// 256 held 1 MiB in every guest, idle or not.
const QUEUE_SIZE: u16 = 64;
const RECEIVEQ: usize = 0;
const TRANSMITQ: usize = 1;
/// Host input held for the guest at most.
pub const MAX_PENDING: usize = 256 << 10;
/// Largest piece read from the host stream at once.
const READ_CHUNK: usize = 64 << 10;

/// The console device: host output stream and pending host input.
pub struct Console {
    out: Box<dyn Write + Send>,
    pending: VecDeque<u8>,
    /// Woken when pending input drains (the host reader waits on it while the buffer is full).
    drained: Arc<Condvar>,
}

impl Console {
    /// A console whose guest output goes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Console {
        Console {
            out,
            pending: VecDeque::new(),
            drained: Arc::new(Condvar::new()),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Queues host input for the guest and delivers what the receive buffers can take.
    pub fn push_input(&mut self, data: &[u8], ctx: &mut QueueContext) {
        self.pending.extend(data);
        self.fill_receive_buffers(ctx);
    }

    fn fill_receive_buffers(&mut self, ctx: &mut QueueContext) {
        let mem = ctx.mem;
        while !self.pending.is_empty() {
            let Some(queue) = ctx.queues.get_mut(RECEIVEQ) else {
                return;
            };
            let Some(chain) = pop(queue, mem) else {
                break;
            };
            let head = chain.head_index();
            let written = match chain.writer(mem) {
                Ok(mut w) => {
                    let n = w.available_bytes().min(self.pending.len());
                    let (a, b) = self.pending.as_slices();
                    let first = n.min(a.len());
                    let ok =
                        w.write_all(&a[..first]).is_ok() && w.write_all(&b[..n - first]).is_ok();
                    if ok {
                        self.pending.drain(..n);
                        n
                    } else {
                        0
                    }
                }
                // Buffers outside guest memory: hand the chain back empty.
                Err(_) => 0,
            };
            ctx.add_used(RECEIVEQ, head, written as u32);
        }
        if self.pending.len() < MAX_PENDING {
            self.drained.notify_all();
        }
    }

    fn transmit(&mut self, ctx: &mut QueueContext) {
        let mem = ctx.mem;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let Some(queue) = ctx.queues.get_mut(TRANSMITQ) else {
                return;
            };
            let Some(chain) = pop(queue, mem) else {
                return;
            };
            let head = chain.head_index();
            if let Ok(mut r) = chain.reader(mem) {
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    // A host side that went away drops the output, as a serial line with
                    // nothing attached would; the guest is not held up.
                    let _ = self.out.write_all(&buf[..n]);
                }
            }
            ctx.add_used(TRANSMITQ, head, 0);
        }
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports, emerg_wr: unused without F_SIZE and F_MULTIPORT.
        read_config_bytes(&[0; 12], offset, data)
    }

    fn activate(&mut self, ctx: &mut QueueContext) {
        self.fill_receive_buffers(ctx);
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
        self.drained.notify_all();
    }
}

/// Starts the thread that carries host input from `input` to the console; it ends at EOF or
/// an error on `input` (shut the stream down to stop it).
pub fn spawn_input(
    transport: Arc<Mutex<MmioTransport<Console>>>,
    mut input: UnixStream,
) -> io::Result<JoinHandle<()>> {
    let drained = transport
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .device()
        .drained
        .clone();
    std::thread::Builder::new()
        .name("virtio-console-in".into())
        .spawn(move || {
            crate::seccomp::enter(crate::launch::ThreadKind::Io);
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                {
                    let mut t = transport.lock().unwrap_or_else(|e| e.into_inner());
                    while t.device().pending() >= MAX_PENDING {
                        t = drained.wait(t).unwrap_or_else(|e| e.into_inner());
                    }
                }
                let n = match input.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut t = transport.lock().unwrap_or_else(|e| e.into_inner());
                if t.activated() {
                    t.with_queues(|dev, ctx| dev.push_input(&buf[..n], ctx));
                } else {
                    // Input before the driver is up waits for it.
                    t.device_mut().pending.extend(&buf[..n]);
                }
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

    #[test]
    fn guest_output_reaches_the_host_and_host_input_the_guest() {
        let mem = memory();
        let sink = Sink::default();
        let mut t = MmioTransport::new(
            Console::new(Box::new(sink.clone())),
            mem.clone(),
            interrupt(),
        );
        bring_up(&mut t, &[Driver::QUEUE, Driver::QUEUE1]);
        let mut rx = Driver::at(&mem, Driver::QUEUE);
        let mut tx = Driver::at(&mem, Driver::QUEUE1);

        mem.write_slice(b"hello ", GuestAddress(0x10000)).unwrap();
        mem.write_slice(b"host", GuestAddress(0x10100)).unwrap();
        tx.add(&[(0x10000, 6, false), (0x10100, 4, false)]);
        notify(&mut t, 1);
        assert_eq!(&*sink.0.lock().unwrap(), b"hello host");
        assert_eq!(tx.used().len(), 1);

        // Input before any receive buffer waits; a buffer then takes what fits.
        t.with_queues(|d, ctx| d.push_input(b"0123456789", ctx));
        assert_eq!(t.device().pending(), 10);
        rx.add(&[(0x20000, 4, true)]);
        notify(&mut t, 0);
        assert_eq!(rx.used(), vec![(0, 4)]);
        assert_eq!(t.device().pending(), 6);
        rx.add(&[(0x20100, 64, true)]);
        notify(&mut t, 0);
        assert_eq!(rx.used()[1], (1, 6));
        let mut got = [0u8; 6];
        mem.read_slice(&mut got, GuestAddress(0x20100)).unwrap();
        assert_eq!(&got, b"456789");
    }

    #[test]
    fn receive_buffers_outside_memory_come_back_empty() {
        let mem = memory();
        let mut t =
            MmioTransport::new(Console::new(Box::new(io::sink())), mem.clone(), interrupt());
        bring_up(&mut t, &[Driver::QUEUE, Driver::QUEUE1]);
        let mut rx = Driver::at(&mem, Driver::QUEUE);
        rx.add(&[(0xfff_ffff_0000, 64, true)]);
        t.with_queues(|d, ctx| d.push_input(b"abc", ctx));
        assert_eq!(rx.used(), vec![(0, 0)]);
        assert_eq!(t.device().pending(), 3, "nothing lost");
    }

    #[test]
    fn the_input_thread_carries_host_bytes_and_stops_at_eof() {
        let mem = memory();
        let t = Arc::new(Mutex::new(MmioTransport::new(
            Console::new(Box::new(io::sink())),
            mem.clone(),
            interrupt(),
        )));
        let (mut host, dev) = UnixStream::pair().unwrap();
        let handle = spawn_input(t.clone(), dev).unwrap();
        host.write_all(b"early").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        bring_up(&mut *t.lock().unwrap(), &[Driver::QUEUE, Driver::QUEUE1]);
        let mut rx = Driver::at(&mem, Driver::QUEUE);
        rx.add(&[(0x20000, 64, true)]);
        notify(&mut *t.lock().unwrap(), 0);
        assert_eq!(rx.used(), vec![(0, 5)]);
        drop(host);
        handle.join().unwrap();
    }
}

//! Queue notifications without a VM exit to the VMM: KVM signals an eventfd when the driver
//! writes a queue's index to QueueNotify (an ioeventfd, registered with that index as its
//! datamatch), and a thread here serves the queue. The vCPU goes straight back into the guest
//! instead of leaving KVM for every packet the driver sends or every buffer it posts; QEMU,
//! Firecracker and cloud-hypervisor serve their virtio queues the same way.
//!
//! Serving a queue takes the transport's lock, as a notification on the vCPU thread did, so a
//! device sees no difference; notifications that arrive while it works are folded into one
//! (an eventfd counts them), and each pass serves whatever the driver added.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use vmm_sys_util::eventfd::EventFd;

use super::{MmioTransport, VirtioDevice};

/// Starts thread `name`, which serves queue `index` of `transport` each time its eventfd is
/// signalled. It ends when `stop` (one end of a socket pair) becomes readable or hangs up,
/// i.e. when the other end is shut down.
pub fn spawn<D: VirtioDevice + Send + 'static>(
    name: &str,
    transport: Arc<Mutex<MmioTransport<D>>>,
    queues: Vec<(u32, EventFd)>,
    stop: UnixStream,
) -> io::Result<JoinHandle<()>> {
    let queues: Vec<(u32, OwnedFd)> = queues
        .into_iter()
        .map(|(index, event)| (index, super::owned_fd(event)))
        .collect();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            crate::seccomp::enter(crate::launch::ThreadKind::Io);
            loop {
                let mut fds: Vec<PollFd> = queues
                    .iter()
                    .map(|(_, event)| PollFd::new(event.as_fd(), PollFlags::POLLIN))
                    .collect();
                fds.push(PollFd::new(stop.as_fd(), PollFlags::POLLIN));
                match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
                if fds.last().and_then(|f| f.any()).unwrap_or(true) {
                    return;
                }
                for ((index, event), fd) in queues.iter().zip(&fds) {
                    // Reading resets the count (the eventfd is non-blocking: a spurious wake-up
                    // reads EAGAIN and serves nothing).
                    if fd.any().unwrap_or(false)
                        && nix::unistd::read(event.as_raw_fd(), &mut [0u8; 8]).is_ok()
                    {
                        let mut t = transport.lock().unwrap_or_else(|e| e.into_inner());
                        t.queue_notify(*index);
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::super::net::tests::nic;
    use super::super::testdriver::Driver;
    use super::*;
    use std::time::{Duration, Instant};
    use vm_memory::Bytes;

    #[test]
    fn a_signalled_eventfd_serves_its_queue_and_shutting_stop_down_ends_the_thread() {
        let (t, mem, sink) = nic();
        let t = Arc::new(Mutex::new(t));
        let tx = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let (shutdown, stop) = UnixStream::pair().unwrap();
        let thread = spawn(
            "test-notify",
            t.clone(),
            vec![(1, tx.try_clone().unwrap())],
            stop,
        )
        .unwrap();
        // The driver queues a frame to send: nothing leaves until the notification.
        let mut txq = Driver::at(&mem, Driver::QUEUE1);
        let frame = [7u8; 60];
        let mut buf = vec![0u8; 12];
        buf.extend_from_slice(&frame);
        mem.write_slice(&buf, vm_memory::GuestAddress(0x20000))
            .unwrap();
        txq.add(&[(0x20000, buf.len() as u32, false)]);
        std::thread::sleep(Duration::from_millis(20));
        assert!(sink.bytes().is_empty());
        tx.write(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.bytes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut expected = (frame.len() as u32).to_be_bytes().to_vec();
        expected.extend_from_slice(&frame);
        assert_eq!(
            sink.bytes(),
            expected,
            "the frame went out, length-prefixed"
        );
        assert_eq!(txq.used(), vec![(0, 0)]);
        shutdown.shutdown(std::net::Shutdown::Both).unwrap();
        thread.join().unwrap();
    }
}

//! The serial console: a 16550A UART (vm-superio) on COM1 whose output goes to the host
//! (berth's stdout), interrupting the guest on IRQ 4 through an irqfd.

use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

/// COM1's port range.
pub const COM1_BASE: u64 = 0x3f8;
pub const COM1_LEN: u64 = 8;
/// COM1's ISA interrupt.
pub const COM1_IRQ: u32 = 4;

/// Raises the serial interrupt by signalling the eventfd KVM routes to the IRQ line.
pub struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// COM1 as a bus device.
pub struct SerialConsole {
    uart: Serial<IrqTrigger, NoEvents, Box<dyn Write + Send>>,
}

impl SerialConsole {
    /// A UART writing to `out` and interrupting through `irq` (registered as an irqfd).
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>) -> SerialConsole {
        SerialConsole {
            uart: Serial::new(IrqTrigger(irq), out),
        }
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data) {
            (Ok(offset), [byte]) => *byte = self.uart.read(offset),
            (_, data) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(offset), [value]) = (u8::try_from(offset), data) {
            // A console whose reader went away (a closed pipe) must not stop the guest: the
            // byte is dropped, as a UART with nothing on the line would.
            let _ = self.uart.write(offset, *value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

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
    fn bytes_written_to_thr_reach_the_output_and_lsr_reports_empty() {
        let sink = Sink::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut com1 = SerialConsole::new(irq, Box::new(sink.clone()));
        let mut lsr = [0u8];
        com1.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "THR empty");
        for b in b"hi\n" {
            com1.write(0, &[*b]);
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"hi\n");
        // Wide accesses are not UART accesses.
        let mut wide = [0u8; 2];
        com1.read(0, &mut wide);
        assert_eq!(wide, [0xff, 0xff]);
    }
}

//! The virtio-mmio transport (virtio 1.1, 4.2.2, version 2 registers): what the guest's
//! `virtio_mmio` driver programs, and the notifications that reach the device.
//!
//! Queue notifications are handled on the vCPU thread that wrote QueueNotify, inside the
//! transport's lock, so a device never races its own queues.

use virtio_queue::{Queue, QueueT};

use super::super::bus::BusDevice;
use super::{Interrupt, QueueContext, VirtioDevice, INT_CONFIG, INT_USED_RING};
use crate::memory::GuestMemory;

/// The size of a device's MMIO window.
pub const MMIO_LEN: u64 = 0x1000;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR: u32 = 0x4854_5242; // "BRTH"

const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
/// QueueNotify: the driver writes a queue's index there when the queue has new buffers.
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_AVAIL_LOW: u64 = 0x090;
const REG_QUEUE_AVAIL_HIGH: u64 = 0x094;
const REG_QUEUE_USED_LOW: u64 = 0x0a0;
const REG_QUEUE_USED_HIGH: u64 = 0x0a4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG_SPACE: u64 = 0x100;

/// Device status bits (virtio 1.1, 2.1).
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_FAILED: u32 = 128;

/// A virtio device behind its MMIO registers.
pub struct MmioTransport<D: VirtioDevice> {
    device: D,
    mem: GuestMemory,
    interrupt: Interrupt,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    activated: bool,
}

impl<D: VirtioDevice> MmioTransport<D> {
    pub fn new(device: D, mem: GuestMemory, interrupt: Interrupt) -> MmioTransport<D> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).expect("device queue sizes are powers of two"))
            .collect();
        MmioTransport {
            device,
            mem,
            interrupt,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            activated: false,
        }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Runs `f` on the device with its queues, as a notification would; does nothing before the
    /// driver has activated the device. For device back ends that produce data on their own
    /// (the console's host input).
    pub fn with_queues(&mut self, f: impl FnOnce(&mut D, &mut QueueContext)) {
        if !self.activated {
            return;
        }
        let mut ctx = QueueContext {
            mem: &self.mem,
            queues: &mut self.queues,
            interrupt: &self.interrupt,
        };
        f(&mut self.device, &mut ctx);
    }

    /// Whether the driver has set DRIVER_OK (and the queues are live).
    pub fn activated(&self) -> bool {
        self.activated
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        // Queue set-up is only valid before DRIVER_OK (virtio 1.1, 4.2.3.2).
        if self.activated {
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.status = 0;
        self.activated = false;
        self.interrupt.clear();
        self.device.reset();
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // FEATURES_OK stays clear when the driver accepted features the device never offered.
        let mut value = value;
        if value & STATUS_FEATURES_OK != 0 && self.driver_features & !self.device.features() != 0 {
            value &= !STATUS_FEATURES_OK;
        }
        let was_ok = self.status & STATUS_DRIVER_OK != 0;
        self.status = value;
        if !was_ok && value & STATUS_DRIVER_OK != 0 && value & STATUS_FEATURES_OK != 0 {
            // Queues the driver did not set up stay disabled; those it did must lie in memory.
            let usable = self
                .queues
                .iter()
                .all(|q| !q.ready() || q.is_valid(&self.mem));
            if !usable {
                self.status |= STATUS_FAILED;
                return;
            }
            self.activated = true;
            self.device.ack_features(self.driver_features);
            self.with_queues(|dev, ctx| dev.activate(ctx));
        }
    }

    /// Serves queue `index`, as the driver's write of it to QueueNotify asks; does nothing
    /// for a queue that is not live. [`super::notify`] calls it for notifications KVM turns
    /// into eventfd signals.
    pub fn queue_notify(&mut self, index: u32) {
        let index = index as usize;
        if index >= self.queues.len() || !self.queues[index].ready() {
            return;
        }
        self.with_queues(|dev, ctx| dev.process_queue(index, ctx));
    }

    fn read_reg(&self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, value: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            // Features are negotiated before FEATURES_OK only.
            REG_DRIVER_FEATURES if self.status & STATUS_FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM => {
                if let Some(q) = self.selected_queue() {
                    // virtio-queue refuses sizes over the maximum or not a power of two; the
                    // queue then stays invalid and activation fails cleanly.
                    q.set_size(value.min(u32::from(u16::MAX)) as u16);
                }
            }
            REG_QUEUE_READY => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            REG_QUEUE_DESC_LOW => {
                self.queue_addr(|q, v| q.set_desc_table_address(Some(v), None), value)
            }
            REG_QUEUE_DESC_HIGH => {
                self.queue_addr(|q, v| q.set_desc_table_address(None, Some(v)), value)
            }
            REG_QUEUE_AVAIL_LOW => {
                self.queue_addr(|q, v| q.set_avail_ring_address(Some(v), None), value)
            }
            REG_QUEUE_AVAIL_HIGH => {
                self.queue_addr(|q, v| q.set_avail_ring_address(None, Some(v)), value)
            }
            REG_QUEUE_USED_LOW => {
                self.queue_addr(|q, v| q.set_used_ring_address(Some(v), None), value)
            }
            REG_QUEUE_USED_HIGH => {
                self.queue_addr(|q, v| q.set_used_ring_address(None, Some(v)), value)
            }
            REG_QUEUE_NOTIFY => self.queue_notify(value),
            REG_INTERRUPT_ACK => self.interrupt.ack(value & (INT_USED_RING | INT_CONFIG)),
            REG_STATUS => self.set_status(value),
            _ => {}
        }
    }

    fn queue_addr(&mut self, set: impl FnOnce(&mut Queue, u32), value: u32) {
        if let Some(q) = self.selected_queue() {
            set(q, value);
        }
    }
}

impl<D: VirtioDevice> BusDevice for MmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            self.device.read_config(offset - CONFIG_SPACE, data);
            return;
        }
        // Registers are 32 bits wide and read whole (virtio 1.1, 4.2.2.2).
        match <&mut [u8; 4]>::try_from(data) {
            Ok(word) if offset % 4 == 0 => *word = self.read_reg(offset).to_le_bytes(),
            Ok(word) => word.fill(0),
            Err(_) => {}
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            // No device here has writable configuration.
            return;
        }
        if let (Ok(word), 0) = (<[u8; 4]>::try_from(data), offset % 4) {
            self.write_reg(offset, u32::from_le_bytes(word));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::devices::virtio::F_VERSION_1;
    use vm_memory::GuestAddress;

    /// A device that counts notifications.
    pub struct Counter {
        pub notified: Vec<usize>,
        pub activated: bool,
    }

    impl VirtioDevice for Counter {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn features(&self) -> u64 {
            F_VERSION_1 | 1
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4], offset, data)
        }
        fn activate(&mut self, _ctx: &mut QueueContext) {
            self.activated = true;
        }
        fn process_queue(&mut self, index: usize, _ctx: &mut QueueContext) {
            self.notified.push(index);
        }
    }

    pub fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    pub fn interrupt() -> Interrupt {
        Interrupt::new(vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap())
    }

    pub fn rd<D: VirtioDevice>(t: &mut MmioTransport<D>, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn wr<D: VirtioDevice>(t: &mut MmioTransport<D>, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    /// Drives the transport as Linux's virtio_mmio does: features, queues at the given
    /// addresses (desc, avail, used per queue), DRIVER_OK.
    pub fn bring_up<D: VirtioDevice>(t: &mut MmioTransport<D>, queues: &[(u64, u64, u64, u16)]) {
        bring_up_accepting(t, queues, 0);
    }

    /// As [`bring_up`], accepting the device's features in `low` (bits 0-31) as well as all it
    /// offers in bits 32-63.
    pub fn bring_up_accepting<D: VirtioDevice>(
        t: &mut MmioTransport<D>,
        queues: &[(u64, u64, u64, u16)],
        low: u32,
    ) {
        wr(t, REG_STATUS, STATUS_ACKNOWLEDGE);
        wr(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        wr(t, REG_DEVICE_FEATURES_SEL, 1);
        let high = rd(t, REG_DEVICE_FEATURES);
        wr(t, REG_DRIVER_FEATURES_SEL, 1);
        wr(t, REG_DRIVER_FEATURES, high);
        wr(t, REG_DEVICE_FEATURES_SEL, 0);
        let offered = rd(t, REG_DEVICE_FEATURES);
        wr(t, REG_DRIVER_FEATURES_SEL, 0);
        wr(t, REG_DRIVER_FEATURES, offered & low);
        wr(
            t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        for (i, &(desc, avail, used, size)) in queues.iter().enumerate() {
            wr(t, REG_QUEUE_SEL, i as u32);
            wr(t, REG_QUEUE_NUM, u32::from(size));
            wr(t, REG_QUEUE_DESC_LOW, desc as u32);
            wr(t, REG_QUEUE_DESC_HIGH, (desc >> 32) as u32);
            wr(t, REG_QUEUE_AVAIL_LOW, avail as u32);
            wr(t, REG_QUEUE_AVAIL_HIGH, (avail >> 32) as u32);
            wr(t, REG_QUEUE_USED_LOW, used as u32);
            wr(t, REG_QUEUE_USED_HIGH, (used >> 32) as u32);
            wr(t, REG_QUEUE_READY, 1);
        }
        wr(
            t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
    }

    pub fn notify<D: VirtioDevice>(t: &mut MmioTransport<D>, queue: u32) {
        wr(t, REG_QUEUE_NOTIFY, queue);
    }

    fn counter() -> MmioTransport<Counter> {
        MmioTransport::new(
            Counter {
                notified: vec![],
                activated: false,
            },
            memory(),
            interrupt(),
        )
    }

    #[test]
    fn identifies_as_a_version_2_virtio_mmio_device() {
        let mut t = counter();
        assert_eq!(rd(&mut t, REG_MAGIC), MAGIC);
        assert_eq!(rd(&mut t, REG_VERSION), 2);
        assert_eq!(rd(&mut t, REG_DEVICE_ID), 42);
        wr(&mut t, REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
        wr(&mut t, REG_DEVICE_FEATURES_SEL, 0);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), 1);
        assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 16);
        wr(&mut t, REG_QUEUE_SEL, 7);
        assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 0, "no such queue");
        let mut b = [0u8; 2];
        t.read(CONFIG_SPACE + 2, &mut b);
        assert_eq!(b, [3, 4]);
        t.read(CONFIG_SPACE + 3, &mut b);
        assert_eq!(b, [4, 0], "past the config reads zero");
    }

    #[test]
    fn activates_on_driver_ok_and_routes_notifications() {
        let mut t = counter();
        notify(&mut t, 0);
        assert!(t.device().notified.is_empty(), "not active yet");
        bring_up(
            &mut t,
            &[(0x1000, 0x2000, 0x3000, 16), (0x4000, 0x5000, 0x6000, 8)],
        );
        assert!(t.activated() && t.device().activated);
        notify(&mut t, 1);
        notify(&mut t, 9);
        assert_eq!(t.device().notified, vec![1]);
        // Queue set-up after DRIVER_OK is ignored.
        wr(&mut t, REG_QUEUE_SEL, 0);
        wr(&mut t, REG_QUEUE_READY, 0);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 1);
        // A reset returns to the start.
        wr(&mut t, REG_STATUS, 0);
        assert!(!t.activated());
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
    }

    #[test]
    fn refuses_features_it_never_offered_and_queues_outside_memory() {
        let mut t = counter();
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 0);
        wr(&mut t, REG_DRIVER_FEATURES, 1 << 7);
        wr(&mut t, REG_STATUS, STATUS_FEATURES_OK);
        assert_eq!(rd(&mut t, REG_STATUS) & STATUS_FEATURES_OK, 0);

        let mut t = counter();
        bring_up(&mut t, &[(0xfff_0000_0000, 0x2000, 0x3000, 16)]);
        assert!(!t.activated());
        assert_ne!(rd(&mut t, REG_STATUS) & STATUS_FAILED, 0);
    }

    #[test]
    fn unaligned_or_narrow_register_accesses_do_nothing() {
        let mut t = counter();
        t.write(REG_STATUS, &[1]);
        t.write(REG_STATUS + 1, &1u32.to_le_bytes());
        assert_eq!(rd(&mut t, REG_STATUS), 0);
        let mut b = [0xaau8; 2];
        t.read(REG_MAGIC, &mut b);
        assert_eq!(b, [0xaa, 0xaa]);
    }

    #[test]
    fn interrupt_status_is_acknowledged_by_the_driver() {
        let mut t = counter();
        t.interrupt.signal_used_queue();
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), INT_USED_RING);
        wr(&mut t, REG_INTERRUPT_ACK, INT_USED_RING);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), 0);
    }
}

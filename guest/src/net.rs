//! The guest's network interfaces: loopback always up; with a network, `eth0` (virtio-net)
//! gets the address, netmask and default route berth chose for the user-mode back end. Plain
//! ioctls on an inet socket, as ifconfig and route do: no netlink library in a static agent.

use std::net::Ipv4Addr;

/// How berth configures the guest's NIC.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestNetwork {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

struct Socket(libc::c_int);

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}

fn socket() -> Result<Socket, String> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned by Socket.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    Ok(Socket(fd))
}

fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    if name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || !name.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(format!("invalid interface name {name:?}"));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it as sockaddr_in
    // because of sin_family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(
    sock: &Socket,
    request: libc::c_ulong,
    arg: *mut libc::c_void,
    what: &str,
) -> Result<(), String> {
    // SAFETY: `arg` points to the structure `request` expects, alive for the call.
    if unsafe { libc::ioctl(sock.0, request as _, arg) } < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Brings `name` up.
fn up(sock: &Socket, name: &str) -> Result<(), String> {
    let mut req = ifreq(name)?;
    ioctl(
        sock,
        libc::SIOCGIFFLAGS,
        &mut req as *mut _ as *mut _,
        &format!("reading the flags of {name}"),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(
        sock,
        libc::SIOCSIFFLAGS,
        &mut req as *mut _ as *mut _,
        &format!("bringing {name} up"),
    )
}

/// Loopback up; and the NIC configured when there is a network.
pub fn configure(network: Option<&GuestNetwork>) -> Result<(), String> {
    let sock = socket()?;
    up(&sock, "lo")?;
    let Some(net) = network else {
        return Ok(());
    };
    if net.prefix_len > 32 {
        return Err(format!("invalid prefix length {}", net.prefix_len));
    }
    let name = net.interface.as_str();
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr(net.address);
    ioctl(
        &sock,
        libc::SIOCSIFADDR,
        &mut req as *mut _ as *mut _,
        &format!("setting the address of {name}"),
    )?;
    let mask = if net.prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(net.prefix_len))
    };
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
    ioctl(
        &sock,
        libc::SIOCSIFNETMASK,
        &mut req as *mut _ as *mut _,
        &format!("setting the netmask of {name}"),
    )?;
    up(&sock, name)?;

    // SAFETY: rtentry is plain old data; all zeroes is a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr(net.gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    ioctl(
        &sock,
        libc::SIOCADDRT,
        &mut route as *mut _ as *mut _,
        &format!("adding the default route via {}", net.gateway),
    )
}

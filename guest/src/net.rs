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
    /// The largest TCP window the guest advertises to peers through this NIC (a metric of
    /// its routes; `None`: the kernel's own), for a back end that loses what it cannot
    /// buffer (passt) and must never be sent more than it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_window: Option<u32>,
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

    let mut device = std::ffi::CString::new(name)
        .map_err(|_| format!("invalid interface name {name:?}"))?
        .into_bytes_with_nul();
    if net.tcp_window.is_some() {
        // The gateway stands for the host (and for the peers of ports published from the
        // host's loopback): its own route, more specific than the subnet's, carries the
        // window too.
        let mut route = Route::new(net.gateway, Ipv4Addr::BROADCAST, net.tcp_window);
        route.0.rt_flags |= libc::RTF_HOST;
        route.0.rt_dev = device.as_mut_ptr().cast();
        route.add(&sock, &format!("adding the route to {}", net.gateway))?;
    }
    let mut route = Route::new(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, net.tcp_window);
    route.0.rt_gateway = sockaddr(net.gateway);
    route.0.rt_flags |= libc::RTF_GATEWAY;
    route.add(
        &sock,
        &format!("adding the default route via {}", net.gateway),
    )
}

/// A route for SIOCADDRT.
struct Route(libc::rtentry);

impl Route {
    /// To `dst`/`mask`, up, with the TCP window clamp `window` if any.
    fn new(dst: Ipv4Addr, mask: Ipv4Addr, window: Option<u32>) -> Route {
        // SAFETY: rtentry is plain old data; all zeroes is a valid value.
        let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
        route.rt_dst = sockaddr(dst);
        route.rt_genmask = sockaddr(mask);
        route.rt_flags = libc::RTF_UP;
        if let Some(window) = window {
            route.rt_flags |= libc::RTF_WINDOW;
            route.rt_window = libc::c_ulong::from(window);
        }
        Route(route)
    }

    fn add(mut self, sock: &Socket, what: &str) -> Result<(), String> {
        ioctl(sock, libc::SIOCADDRT, &mut self.0 as *mut _ as *mut _, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_carry_the_window_clamp_only_when_asked() {
        let any = Ipv4Addr::UNSPECIFIED;
        let clamped = Route::new(any, any, Some(98_304));
        assert_ne!(clamped.0.rt_flags & libc::RTF_WINDOW, 0);
        assert_ne!(clamped.0.rt_flags & libc::RTF_UP, 0);
        assert_eq!(clamped.0.rt_window, 98_304);
        let plain = Route::new(any, any, None);
        assert_eq!(plain.0.rt_flags & libc::RTF_WINDOW, 0);
        assert_eq!(plain.0.rt_window, 0);
    }

    #[test]
    fn a_network_from_a_host_that_sets_no_window_has_none() {
        let older =
            r#"{"interface":"eth0","address":"10.0.2.100","prefix_len":24,"gateway":"10.0.2.2"}"#;
        let net: GuestNetwork = serde_json::from_str(older).unwrap();
        assert_eq!(net.tcp_window, None);
        assert!(!serde_json::to_string(&net).unwrap().contains("tcp_window"));
    }
}

//! Container networking: which network a container joins and the processes that connect it.
//!
//! - `none`: a network namespace with only `lo` (set up by the container backend);
//! - `host`: the host's network namespace;
//! - `slirp4netns` / `pasta`: a network namespace of its own, joined to the host through a
//!   user-mode TCP/IP stack started for the container ([`slirp4netns`], [`pasta`]);
//! - a user-defined network (`berth network create NAME`): a veth on a bridge in the user's
//!   rootless network namespace ([`netns`]), where one user-mode process serves every network.
//!
//! Published ports ([`ports`]) go through pasta's own forwarding, through slirp4netns's API
//! socket (`slirp4netns:port_handler=slirp4netns`), or through berth's splice forwarder.

pub mod hosts;
pub mod netns;
pub mod pasta;
pub mod ports;
pub mod slirp4netns;
pub mod store;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use ports::{PortSpec, Proto, PublishedPort};
pub use store::{NetworkConfig, NetworkStore};

/// Errors of the network code; each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "{tool} not found: install it with `apt-get install {package}` (or pick another --network)"
    )]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("neither slirp4netns nor pasta is installed, so containers cannot reach the network: install one (`apt-get install slirp4netns` or `apt-get install passt`), or run with --network none")]
    NoUserMode,
    #[error("invalid port {spec:?}: {why}")]
    BadPort { spec: String, why: String },
    #[error("host port {addr} ({proto}) is already in use: pick another host port (e.g. -p {other}:{ctr}) or stop what listens there")]
    PortInUse {
        addr: std::net::SocketAddr,
        proto: Proto,
        other: u16,
        ctr: u16,
    },
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        proto: Proto,
        source: std::io::Error,
    },
    #[error("unknown --network {0:?}: use none, host, slirp4netns, pasta, or the name of a network made with `berth network create`")]
    UnknownNetwork(String),
    #[error(
        "invalid --network option {0:?}: slirp4netns takes port_handler=rootlesskit|slirp4netns"
    )]
    BadOption(String),
    #[error("{what} is only available with a network of the container's own (not with --network {mode})")]
    NeedsOwnNetwork { what: &'static str, mode: String },
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(String),
    #[error("no such network: {0}: create it with `berth network create {0}` (or use --network none|host|slirp4netns|pasta)")]
    NoSuchNetwork(String),
    #[error(
        "network {0} already exists: remove it with `berth network rm {0}` or pick another name"
    )]
    Exists(String),
    #[error("network {network} has active endpoints: it is in use by running containers ({users}): stop them first with `berth stop {users}` (or disconnect them, or remove them with `berth rm -f {users}`), then remove the network")]
    InUse { network: String, users: String },
    #[error("container {container} is not connected to network {network}: `docker inspect {container}` shows its networks")]
    NotConnected { container: String, network: String },
    #[error("container {container} is on network {network} already")]
    AlreadyConnected { container: String, network: String },
    #[error("container {container} cannot join network {network}: {why}")]
    CannotConnect {
        container: String,
        network: String,
        why: String,
    },
    #[error("the network daemon failed: {0}")]
    Daemon(String),
}

pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetError {
    let path = path.to_path_buf();
    move |source| NetError::Io { what, path, source }
}

/// A user-mode TCP/IP stack that joins a network namespace to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Slirp4netns,
    Pasta,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Slirp4netns => "slirp4netns",
            Backend::Pasta => "pasta",
        })
    }
}

impl Backend {
    fn tool(self) -> (&'static str, &'static str) {
        match self {
            Backend::Slirp4netns => ("slirp4netns", "slirp4netns"),
            Backend::Pasta => ("pasta", "passt"),
        }
    }

    /// The program, or an error that says which package installs it.
    pub fn program(self) -> Result<PathBuf, NetError> {
        let (tool, package) = self.tool();
        which(tool).ok_or(NetError::ToolMissing { tool, package })
    }

    /// The backend `berth run` uses without `--network`: slirp4netns when installed (it is
    /// ready in a few milliseconds where pasta takes over 100, and its tap path moves
    /// container-to-host traffic several times faster than Debian 12's pasta; published ports
    /// are equally fast through berth's forwarder), else pasta. `BERTH_NETWORK_BACKEND`
    /// overrides the choice.
    pub fn default_for_host() -> Result<Backend, NetError> {
        if let Ok(v) = std::env::var("BERTH_NETWORK_BACKEND") {
            match v.as_str() {
                "slirp4netns" => return Ok(Backend::Slirp4netns),
                "pasta" => return Ok(Backend::Pasta),
                _ => {}
            }
        }
        if which("slirp4netns").is_some() {
            Ok(Backend::Slirp4netns)
        } else if which("pasta").is_some() && pasta::host_gateway().is_some() {
            Ok(Backend::Pasta)
        } else {
            Err(NetError::NoUserMode)
        }
    }
}

/// How published ports reach a slirp4netns container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortHandler {
    /// berth's forwarder: a splice loop from a host socket into the container's namespace.
    #[default]
    Berth,
    /// slirp4netns's own host forwarding, asked for through its API socket.
    Slirp4netns,
}

/// What `--network` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkRequest {
    /// No flag: the host's default user-mode backend.
    #[default]
    Default,
    None,
    Host,
    UserMode(Backend, PortHandler),
    /// A network made with `berth network create`.
    Named(String),
}

impl std::str::FromStr for NetworkRequest {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let (mode, opts) = s.split_once(':').unwrap_or((s, ""));
        let handler = |opts: &str| -> Result<PortHandler, NetError> {
            let mut h = PortHandler::Berth;
            for o in opts.split(',').filter(|o| !o.is_empty()) {
                h = match o {
                    "port_handler=rootlesskit" | "port_handler=berth" => PortHandler::Berth,
                    "port_handler=slirp4netns" => PortHandler::Slirp4netns,
                    other => return Err(NetError::BadOption(other.to_string())),
                };
            }
            Ok(h)
        };
        Ok(match mode {
            "none" => NetworkRequest::None,
            "host" => NetworkRequest::Host,
            "slirp4netns" => NetworkRequest::UserMode(Backend::Slirp4netns, handler(opts)?),
            "pasta" => NetworkRequest::UserMode(Backend::Pasta, PortHandler::Berth),
            "private" | "default" | "bridge" if opts.is_empty() => NetworkRequest::Default,
            name if store::valid_name(name) && opts.is_empty() => {
                NetworkRequest::Named(name.to_string())
            }
            _ => return Err(NetError::UnknownNetwork(s.to_string())),
        })
    }
}

impl NetworkRequest {
    /// Whether the namespace is connected beyond `lo`.
    pub fn connected(&self) -> bool {
        !matches!(self, NetworkRequest::None | NetworkRequest::Host)
    }

    /// What the runtime spec needs to know of this network.
    pub fn spec_mode(&self) -> crate::spec::NetworkMode {
        match self {
            NetworkRequest::None => crate::spec::NetworkMode::None,
            NetworkRequest::Host => crate::spec::NetworkMode::Host,
            _ => crate::spec::NetworkMode::Connected,
        }
    }

    /// The name `berth ps` and `inspect` show before the network is set up (the default
    /// backend when it can be told, else `default`).
    pub fn display_name(&self) -> String {
        match self {
            NetworkRequest::Default => Backend::default_for_host()
                .map(|b| b.to_string())
                .unwrap_or_else(|_| "default".into()),
            NetworkRequest::None => "none".into(),
            NetworkRequest::Host => "host".into(),
            NetworkRequest::UserMode(b, _) => b.to_string(),
            NetworkRequest::Named(n) => n.clone(),
        }
    }
}

/// `PATH` lookup.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Facts `berth info` shows about networking.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NetInfo {
    /// The default backend, or why there is none.
    pub default_backend: String,
    pub slirp4netns: Option<PathBuf>,
    pub pasta: Option<PathBuf>,
}

pub fn info() -> NetInfo {
    NetInfo {
        default_backend: match Backend::default_for_host() {
            Ok(b) => b.to_string(),
            Err(e) => format!("none: {e}"),
        },
        slirp4netns: which("slirp4netns"),
        pasta: which("pasta"),
    }
}

/// A container's network, decided before anything starts: host sockets bound, tools found,
/// the /etc view known. [`Attachment::attach`] connects the namespace once it exists.
#[derive(Debug)]
pub struct Prepared {
    /// What the spec needs to know.
    pub mode: crate::spec::NetworkMode,
    /// The ports as published (host side resolved).
    pub published: Vec<PublishedPort>,
    /// What /etc/hosts and /etc/resolv.conf say (for a connected container).
    pub view: Option<hosts::EtcView>,
    /// The name `berth ps` and `inspect` show for the network.
    pub name: String,
    pub attachment: Attachment,
}

/// Where a connected container sits on its network once connected, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// The user-defined network's id; empty for slirp4netns and pasta, which have none.
    #[serde(default)]
    pub network_id: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The interface's hardware address, as berth set it ([`mac_for`]).
    pub mac: String,
    /// `--network-alias`.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A further user-defined network a container is connected to (`network connect`): joined
/// at each start, after the network it starts on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Connected {
    pub network: String,
    /// `--alias`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The run that joined it, and where it sits there (None: not joined by the current run).
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
}

impl Connected {
    /// The networks `rec`'s current run joined, with their endpoints.
    pub fn of_run(
        rec: &crate::state::ContainerRecord,
    ) -> impl Iterator<Item = (&Connected, &Endpoint)> {
        let running = crate::state::ContainerStore::is_running(rec);
        rec.connected.iter().filter_map(move |c| {
            let e = c.endpoint.as_ref()?;
            (running && rec.pid.is_some() && c.pid == rec.pid).then_some((c, e))
        })
    }
}

/// The hardware address berth gives a container's interface: Docker's rule, `02:42` (locally
/// administered, unicast) and the four bytes of its IPv4 address, unique on a network as the
/// address is.
pub fn mac_for(ip: Ipv4Addr) -> String {
    mac_octets(ip)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// [`mac_for`] as bytes (for a microVM's NIC).
pub fn mac_octets(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// The endpoint of a container once [`Attachment`] has connected it; shared, because the
/// attachment is lent to the container backend while the caller records the endpoint.
pub type EndpointSlot = Arc<Mutex<Option<Endpoint>>>;

/// How to connect the namespace, and what runs for it until dropped.
#[derive(Debug)]
pub struct Attachment {
    plan: Plan,
    /// Where logs of the helpers go (the container's directory).
    run_dir: PathBuf,
    /// slirp4netns's API socket (in the runtime directory: a socket path has 107 bytes at most).
    api_socket: PathBuf,
    /// Whether the container has a user namespace of its own to enter first.
    userns: bool,
    /// Host sockets for berth's forwarder.
    sockets: Vec<(PublishedPort, ports::HostSocket)>,
    /// Ports that pasta or slirp4netns bind themselves.
    tool_ports: Vec<PublishedPort>,
    running: Vec<Running>,
    /// `--network-alias`, for the endpoint.
    aliases: Vec<String>,
    endpoint: EndpointSlot,
}

#[derive(Debug)]
enum Plan {
    Unconnected,
    UserMode(Backend, PortHandler),
    Bridge(netns::Join),
}

/// A helper that runs as long as the container (stopped when dropped).
#[derive(Debug)]
#[allow(dead_code)] // Held for their Drop.
enum Running {
    Slirp(slirp4netns::Slirp4netns),
    Pasta(pasta::Pasta),
    Forwarder(ports::Forwarder),
    Member(netns::Membership),
}

/// Everything the container's network needs from the run request (kept in the container's
/// record: a created container gets its network each time it starts).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NetworkOptions {
    pub request: NetworkRequest,
    pub publish: Vec<PortSpec>,
    /// `-P`: the image's exposed ports.
    pub publish_all: bool,
    /// `--network-alias`.
    pub aliases: Vec<String>,
}

/// Who the container is, for name resolution on a user-defined network.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub hostname: &'a str,
    /// The container's /etc/hosts on the host (rewritten as peers come and go).
    pub hosts_file: PathBuf,
}

/// Publishing ports and aliases need a network of the container's own.
fn check_own_network(
    request: &NetworkRequest,
    specs: &[PortSpec],
    aliases: &[String],
) -> Result<(), NetError> {
    if request.connected() {
        return Ok(());
    }
    let mode = if *request == NetworkRequest::Host {
        "host"
    } else {
        "none"
    };
    let needs_own = |what: &'static str| NetError::NeedsOwnNetwork {
        what,
        mode: mode.to_string(),
    };
    if !specs.is_empty() {
        return Err(needs_own("publishing ports (-p/-P)"));
    }
    if !aliases.is_empty() {
        return Err(needs_own("--network-alias"));
    }
    Ok(())
}

/// What can be checked of a network before the container starts (`berth create`): that the
/// flags fit together and that a user-defined network exists. `opts.publish` holds every
/// port to publish (`-P` already expanded).
pub fn validate(opts: &NetworkOptions, dirs: &crate::paths::Dirs) -> Result<(), NetError> {
    check_own_network(&opts.request, &opts.publish, &opts.aliases)?;
    if let NetworkRequest::Named(name) = &opts.request {
        NetworkStore::new(dirs).get(name)?;
    }
    Ok(())
}

/// Decides the container's network: finds the tools, binds the published host ports (a port
/// in use fails here, before the container starts), and works out the /etc view.
pub fn prepare(
    opts: &NetworkOptions,
    exposed: &[String],
    who: &Identity,
    dirs: &crate::paths::Dirs,
    ids: &crate::container::IdMapping,
) -> Result<Prepared, NetError> {
    let mut specs = opts.publish.clone();
    if opts.publish_all {
        specs.extend(ports::exposed(exposed)?);
    }
    let request = match &opts.request {
        NetworkRequest::Default => {
            NetworkRequest::UserMode(Backend::default_for_host()?, PortHandler::Berth)
        }
        other => other.clone(),
    };
    check_own_network(&request, &specs, &opts.aliases)?;
    let run_dir = dirs.data.join("containers").join(who.id);
    let mut attachment = Attachment {
        plan: Plan::Unconnected,
        run_dir,
        api_socket: dirs.runtime.join(format!(
            "slirp4netns-{}.sock",
            &who.id[..12.min(who.id.len())]
        )),
        userns: ids.uses_userns(),
        sockets: vec![],
        tool_ports: vec![],
        running: vec![],
        aliases: opts.aliases.clone(),
        endpoint: EndpointSlot::default(),
    };
    let (mode, name, view) = match request {
        NetworkRequest::None => (crate::spec::NetworkMode::None, "none".to_string(), None),
        NetworkRequest::Host => (crate::spec::NetworkMode::Host, "host".to_string(), None),
        NetworkRequest::UserMode(backend, handler) => {
            backend.program()?;
            let own_ip = match backend {
                Backend::Slirp4netns => IpAddr::V4(slirp4netns::CONTAINER_IP),
                Backend::Pasta => pasta::container_ip(),
            };
            let (gateway, dns) = match backend {
                Backend::Slirp4netns => (slirp4netns::GATEWAY, slirp4netns::DNS),
                Backend::Pasta => (
                    pasta::host_gateway().ok_or_else(|| NetError::Tool {
                        tool: "pasta",
                        message: "the host has no IPv4 default route for pasta to copy; use --network slirp4netns".into(),
                    })?,
                    pasta::DNS,
                ),
            };
            let mut names = vec![who.hostname.to_string()];
            if who.name != who.hostname {
                names.push(who.name.to_string());
            }
            names.extend(opts.aliases.iter().cloned());
            attachment.plan = Plan::UserMode(backend, handler);
            let view = hosts::EtcView {
                own: Some((own_ip, names)),
                gateway: Some(IpAddr::V4(gateway)),
                peers: vec![],
                nameserver: Some(IpAddr::V4(dns)),
            };
            (
                crate::spec::NetworkMode::Connected,
                backend.to_string(),
                Some(view),
            )
        }
        NetworkRequest::Named(net) => {
            let store = NetworkStore::new(dirs);
            let config = store.get(&net)?;
            let join = netns::Join::new(dirs, config, who, &opts.aliases)?;
            let view = join.initial_view();
            attachment.plan = Plan::Bridge(join);
            (crate::spec::NetworkMode::Connected, net, Some(view))
        }
        NetworkRequest::Default => unreachable!("resolved above"),
    };
    let bound = ports::bind_all(&specs)?;
    let published: Vec<PublishedPort> = bound.iter().map(|(p, _)| *p).collect();
    match attachment.plan {
        // Debian 12's pasta (2023-03) drops UDP it should forward to another port number:
        // berth's forwarder takes those; pasta binds the rest itself.
        Plan::UserMode(Backend::Pasta, _) => {
            let (mine, pastas): (Vec<_>, Vec<_>) = bound
                .into_iter()
                .partition(|(p, _)| p.proto == Proto::Udp && p.host_port != p.container_port);
            attachment.sockets = mine;
            attachment.tool_ports = ports::release(pastas);
        }
        // slirp4netns's own forwarding binds the ports itself.
        Plan::UserMode(_, PortHandler::Slirp4netns) => {
            attachment.tool_ports = ports::release(bound);
        }
        _ => attachment.sockets = bound,
    }
    Ok(Prepared {
        mode,
        published,
        view,
        name,
        attachment,
    })
}

impl Prepared {
    /// Where the container's endpoint appears once it is connected (None before, and for
    /// `none` and `host`).
    pub fn endpoint_slot(&self) -> EndpointSlot {
        Arc::clone(&self.attachment.endpoint)
    }

    /// The user namespace the container joins instead of making one (a user-defined network's).
    pub fn join_userns(&self) -> Option<PathBuf> {
        match &self.attachment.plan {
            Plan::Bridge(j) => Some(j.userns_path()),
            _ => None,
        }
    }

    /// Leaves the connected network running for a process that outlives this value without
    /// running its destructors (a detached container's monitor, which execs `berth-monitor`
    /// and later `berth __exited`): the helpers stay this process's children (they die with
    /// it, by their parent-death signal), the membership of a user-defined network stays an
    /// open descriptor that survives exec. [`Helpers::stop`] ends them.
    pub fn keep_running(mut self) -> Result<Helpers, NetError> {
        let mut helpers = Helpers::default();
        for r in std::mem::take(&mut self.attachment.running) {
            match r {
                Running::Slirp(s) => {
                    let (pid, api) = s.keep_running();
                    helpers.pids.push(pid);
                    helpers.files.extend(api);
                }
                Running::Pasta(p) => helpers.pids.push(p.keep_running()),
                Running::Forwarder(f) => helpers.pids.push(f.keep_running()),
                Running::Member(m) => {
                    let fd = m.into_fd();
                    nix::fcntl::fcntl(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                    )
                    .map_err(|e| NetError::Daemon(format!("keeping the membership open: {e}")))?;
                    helpers.fds.push(std::os::fd::IntoRawFd::into_raw_fd(fd));
                }
            }
        }
        Ok(helpers)
    }
}

/// A container's network helpers handed over by [`Prepared::keep_running`], as recorded for
/// the process that ends them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Helpers {
    /// slirp4netns, pasta, the port forwarder: children of the process that keeps them.
    pub pids: Vec<i32>,
    /// Descriptors it holds open, without close-on-exec (a user-defined network's membership).
    pub fds: Vec<i32>,
    /// Files to remove once the helpers are gone (slirp4netns's API socket).
    pub files: Vec<PathBuf>,
}

impl Helpers {
    /// Nothing to end (`--network none` or `host`).
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.fds.is_empty() && self.files.is_empty()
    }

    /// Ends the helpers, in the process they were handed to: kills each that is still its
    /// child and waits for it (so that its host ports are free on return), closes the
    /// membership (the network daemon forgets the container), removes the files.
    pub fn stop(&self) {
        let me = std::process::id() as i32;
        for &pid in &self.pids {
            if parent_of(pid) != Some(me) {
                // Gone (reaped already); the pid may belong to another process now.
                continue;
            }
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        for &fd in &self.fds {
            // SAFETY: the descriptor was handed to this process for this purpose only.
            unsafe { libc::close(fd) };
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

impl Attachment {
    fn connect(&mut self, pid: i32) -> Result<(), NetError> {
        let userns_path = PathBuf::from(format!("/proc/{pid}/ns/user"));
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let userns = self.userns.then_some(userns_path.as_path());
        let aliases = self.aliases.clone();
        let endpoint =
            |network_id: String, ip: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr| Endpoint {
                network_id,
                ip,
                prefix_len,
                gateway,
                mac: mac_for(ip),
                aliases: aliases.clone(),
            };
        let joined = match &mut self.plan {
            Plan::Unconnected => None,
            Plan::UserMode(Backend::Slirp4netns, handler) => {
                let api = (*handler == PortHandler::Slirp4netns).then(|| self.api_socket.clone());
                let mut slirp = slirp4netns::Slirp4netns::start(
                    userns,
                    &netns,
                    api.as_deref(),
                    &self.run_dir.join("slirp4netns.log"),
                )?;
                for p in &self.tool_ports {
                    slirp.add_hostfwd(p)?;
                }
                self.running.push(Running::Slirp(slirp));
                self.forward(userns, &netns, IpAddr::V4(slirp4netns::CONTAINER_IP))?;
                Some(endpoint(
                    String::new(),
                    slirp4netns::CONTAINER_IP,
                    slirp4netns::PREFIX_LEN,
                    slirp4netns::GATEWAY,
                ))
            }
            Plan::UserMode(Backend::Pasta, _) => {
                // pasta copies the host's address, prefix and gateway into the namespace.
                let (ip, prefix) = pasta::host_network().ok_or_else(|| NetError::Tool {
                    tool: "pasta",
                    message: "the host has no IPv4 address on its default route for pasta to copy; use --network slirp4netns".into(),
                })?;
                let gateway = pasta::host_gateway().unwrap_or(Ipv4Addr::UNSPECIFIED);
                let ep = endpoint(String::new(), ip, prefix, gateway);
                let pasta = pasta::Pasta::start(pid, &self.tool_ports, &self.run_dir, &ep.mac)?;
                self.running.push(Running::Pasta(pasta));
                self.forward(userns, &netns, IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))?;
                Some(ep)
            }
            Plan::Bridge(join) => {
                let member = join.attach(pid)?;
                let ip = member.address();
                let config = join.network();
                let ep = endpoint(
                    config.id.clone(),
                    member.ip(),
                    config.prefix,
                    config.gateway,
                );
                self.running.push(Running::Member(member));
                // The container's user namespace is the network daemon's, always entered.
                self.forward(Some(&userns_path), &netns, ip)?;
                Some(ep)
            }
        };
        if let Ok(mut slot) = self.endpoint.lock() {
            *slot = joined;
        }
        Ok(())
    }

    /// Starts berth's forwarder for the ports it holds sockets for.
    fn forward(
        &mut self,
        userns: Option<&Path>,
        netns: &Path,
        target: IpAddr,
    ) -> Result<(), NetError> {
        if self.sockets.is_empty() {
            return Ok(());
        }
        let sockets = std::mem::take(&mut self.sockets);
        let fwd = ports::Forwarder::start(userns, netns, target, sockets)?;
        self.running.push(Running::Forwarder(fwd));
        Ok(())
    }
}

impl crate::container::NetworkAttach for Attachment {
    fn attach(&mut self, pid: i32) -> Result<(), String> {
        self.connect(pid).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_addresses_follow_the_address() {
        let mac = mac_for(Ipv4Addr::new(10, 89, 1, 2));
        assert_eq!(mac, "02:42:0a:59:01:02");
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(first & 3, 2, "unicast and locally administered");
    }

    #[test]
    fn network_flags_parse() {
        assert_eq!(
            "none".parse::<NetworkRequest>().unwrap(),
            NetworkRequest::None
        );
        assert_eq!(
            "slirp4netns:port_handler=slirp4netns"
                .parse::<NetworkRequest>()
                .unwrap(),
            NetworkRequest::UserMode(Backend::Slirp4netns, PortHandler::Slirp4netns)
        );
        assert_eq!(
            "pasta".parse::<NetworkRequest>().unwrap(),
            NetworkRequest::UserMode(Backend::Pasta, PortHandler::Berth)
        );
        assert_eq!(
            "backend".parse::<NetworkRequest>().unwrap(),
            NetworkRequest::Named("backend".into())
        );
        assert!("slirp4netns:mtu=1".parse::<NetworkRequest>().is_err());
        assert!("-bad".parse::<NetworkRequest>().is_err());
    }

    #[test]
    fn network_options_survive_the_record() {
        let opts = NetworkOptions {
            request: "slirp4netns:port_handler=slirp4netns".parse().unwrap(),
            publish: vec!["127.0.0.1::80/udp".parse().unwrap()],
            publish_all: false,
            aliases: vec!["db".into()],
        };
        let json = serde_json::to_string(&opts).unwrap();
        assert_eq!(serde_json::from_str::<NetworkOptions>(&json).unwrap(), opts);
        for r in ["none", "host", "pasta", "backend"] {
            let opts = NetworkOptions {
                request: r.parse().unwrap(),
                ..NetworkOptions::default()
            };
            let json = serde_json::to_string(&opts).unwrap();
            assert_eq!(serde_json::from_str::<NetworkOptions>(&json).unwrap(), opts);
        }
    }

    #[test]
    fn helpers_stop_only_their_own_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert_eq!(parent_of(pid), Some(std::process::id() as i32));
        let helpers = Helpers {
            // Our parent is not our child: left alone.
            pids: vec![pid, nix::unistd::getppid().as_raw()],
            ..Helpers::default()
        };
        helpers.stop();
        // Killed and reaped: nothing left to wait for.
        assert!(child.try_wait().is_err() || parent_of(pid).is_none());
        assert!(parent_of(nix::unistd::getppid().as_raw()).is_some());
    }
}

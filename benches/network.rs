//! Network benchmark: TCP through a published port, berth with each user-mode backend against
//! rootless podman, on the same busybox image, in the same run, as the same unprivileged user.
//!
//! For each system a static server (benches/netbench.c) runs in the container behind
//! `-p 127.0.0.1:PORT:5201`, and the bench, on the host, measures:
//! - host→ctr: Gbit/s of BENCH_BYTES (default 1 GiB) sent into the container, BENCH_RUNS
//!   times (default 5), until the server has counted every byte;
//! - ctr→host: Gbit/s of the same amount sent by the server back through the published port;
//! - connect: microseconds from connect() to the server's first byte of answer on a new
//!   connection (BENCH_CONNECTS times, default 200);
//! - ctr→gw: Gbit/s the container sends to a sink on the host's 127.0.0.1 through the gateway
//!   (host.containers.internal), the user-mode stack's own path.
//!
//! Each figure is a median; ratios are against podman's.
//!
//! The microVM (`berth run --vm`, passt behind virtio-net; and a VM on a user-defined network,
//! a tap on the bridge) needs a real KVM: where this host's is PVM, a second table measures
//! it inside `scripts/kvm-nested` against a container in the same nested machine. Everything
//! there runs under QEMU TCG: the absolute figures are emulated and far below the host's; only
//! the ratios between the systems measured side by side there carry over. The nested
//! machine's client is this bench's own binary (`--nested-client`). BENCH_NESTED=0 skips it,
//! BENCH_NESTED=only measures nothing else; BENCH_NESTED_BYTES (default 32 MiB), BENCH_NESTED_RUNS (3) and BENCH_NESTED_CONNECTS (20)
//! size it.
//!
//! Systems: berth --network slirp4netns (berth's splice forwarder, the default), berth
//! --network slirp4netns:port_handler=slirp4netns (slirp4netns's own forwarding through its
//! API socket), berth --network pasta, berth on a user-defined network (bridge in the rootless
//! namespace), and podman run --runtime runc (slirp4netns with rootlessport, podman 4.3's
//! default; its gateway run adds allow_host_loopback=true).
//!
//! Run with `cargo bench --bench network` (as root: berth and podman run as `berthtest`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{have, test_images, Berth, Identity, IMAGE};

const PORT_IN: u16 = 5201;

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// Builds the static server into a directory the benchmark user can read.
fn build_tool() -> Result<PathBuf, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("berth-netbench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/netbench.c");
    let out = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("netbench"))
        .arg(&src)
        .output()
        .map_err(|e| format!("cc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cc -static failed (install gcc and libc6-dev): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    for p in [&dir, &dir.join("netbench")] {
        let _ = std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    Ok(dir)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One ping: connect, ask, first byte back; the time in microseconds.
fn ping(addr: SocketAddr) -> std::io::Result<f64> {
    let start = Instant::now();
    let mut s = connect(addr)?;
    s.write_all(b"P")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(start.elapsed().as_secs_f64() * 1e6)
}

fn wait_ready(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        match ping(addr) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("the server never answered on {addr}: {last}"))
}

fn gbits(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}

fn upload(addr: SocketAddr, bytes: u64) -> std::io::Result<f64> {
    let mut s = connect(addr)?;
    let chunk = vec![0u8; 1 << 20];
    let start = Instant::now();
    s.write_all(b"S")?;
    let mut left = bytes;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..k])?;
        left -= k as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let elapsed = start.elapsed();
    let got = u64::from_le_bytes(count);
    if got != bytes {
        return Err(std::io::Error::other(format!(
            "the server counted {got} of {bytes} bytes"
        )));
    }
    Ok(gbits(bytes, elapsed))
}

fn download(addr: SocketAddr, bytes: u64) -> std::io::Result<f64> {
    let mut s = connect(addr)?;
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut req = vec![b'G'];
    req.extend_from_slice(&bytes.to_le_bytes());
    s.write_all(&req)?;
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    if got != bytes {
        return Err(std::io::Error::other(format!(
            "received {got} of {bytes} bytes"
        )));
    }
    Ok(gbits(bytes, start.elapsed()))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[derive(Default)]
struct Figures {
    up: Option<f64>,
    down: Option<f64>,
    connect_us: Option<f64>,
    gateway: Option<f64>,
    error: Option<String>,
}

struct Settings {
    runs: u64,
    bytes: u64,
    connects: u64,
}

/// The published-port figures for a server already listening on `addr`. Each direction and
/// the connect latency are measured on their own, so that one path that fails (e.g. a
/// back end that does not carry a half-closed connection) leaves the others' figures.
fn measure_port(addr: SocketAddr, s: &Settings, f: &mut Figures) {
    let mut errors = vec![];
    let mut series = |what: &str, one: &dyn Fn() -> std::io::Result<f64>, n: u64| {
        let mut v = vec![];
        for _ in 0..n {
            match one() {
                Ok(x) => v.push(x),
                Err(e) => {
                    errors.push(format!("{what}: {e}"));
                    return None;
                }
            }
        }
        Some(median(&mut v))
    };
    // One warm-up of each direction.
    let warm_up = || -> std::io::Result<f64> {
        upload(addr, s.bytes / 4)?;
        download(addr, s.bytes / 4)
    };
    let _ = warm_up();
    f.up = series("host→ctr", &|| upload(addr, s.bytes), s.runs);
    f.down = series("ctr→host", &|| download(addr, s.bytes), s.runs);
    f.connect_us = series("connect", &|| ping(addr), s.connects);
    if !errors.is_empty() {
        f.error = Some(format!("published port: {}", errors.join("; ")));
    }
}

/// A sink on the host's loopback: for each of `runs` connections, Gbit/s from the first byte
/// to EOF.
fn gateway_sink(runs: u64) -> (u16, std::thread::JoinHandle<Vec<f64>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("sink");
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let mut out = vec![];
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..runs + 1 {
            let Ok((mut c, _)) = listener.accept() else {
                break;
            };
            let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
            let mut got = 0u64;
            let mut start = None;
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                start.get_or_insert_with(Instant::now);
                got += n as u64;
            }
            if let Some(start) = start {
                out.push(gbits(got, start.elapsed()));
            }
        }
        // The first was the warm-up.
        if !out.is_empty() {
            out.remove(0);
        }
        out
    });
    (port, t)
}

/// The script a container runs to send to the host's sink through the gateway name. A
/// transfer that stalls (Debian 12's pasta does on its tap path) is cut after 30 s; the sink
/// then counts what arrived in that time.
fn gateway_script(port: u16, bytes: u64) -> String {
    format!(
        "exec timeout 30 /tools/netbench send $(grep -m1 host.containers.internal /etc/hosts | cut -f1) {port} {bytes}"
    )
}

fn berth_system(berth: &Berth, tools: &Path, network: &str, s: &Settings) -> Figures {
    let mut f = Figures::default();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:{PORT_IN}");
    let volume = format!("{}:/tools:ro", tools.display());
    let server = berth.spawn(&[
        "run",
        "--rm",
        "--init",
        "--network",
        network,
        "-p",
        &publish,
        "-v",
        &volume,
        IMAGE,
        "/tools/netbench",
        "serve",
        "5201",
    ]);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match wait_ready(addr, Duration::from_secs(30)) {
        Ok(()) => measure_port(addr, s, &mut f),
        Err(e) => f.error = Some(e),
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait(Duration::from_secs(30));

    let (sink, t) = gateway_sink(s.runs);
    let script = gateway_script(sink, s.bytes);
    for _ in 0..s.runs + 1 {
        // --init: busybox's timeout signals its command, which as PID 1 would ignore it.
        let out = berth.cmd(&[
            "run",
            "--rm",
            "--init",
            "--network",
            network,
            "-v",
            &volume,
            IMAGE,
            "sh",
            "-c",
            &script,
        ]);
        if !out.status.success() {
            f.error.get_or_insert(format!(
                "gateway: a transfer failed or was cut after 30 s ({}) {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            // Unblock the sink.
            let _ = TcpStream::connect(("127.0.0.1", sink));
        }
    }
    let mut g = t.join().unwrap_or_default();
    if !g.is_empty() {
        f.gateway = Some(median(&mut g));
    }
    f
}

struct Podman {
    id: Identity,
    env: Vec<(&'static str, PathBuf)>,
    dir: PathBuf,
    storage: PathBuf,
}

impl Podman {
    fn setup(berth: &Berth) -> Result<Podman, String> {
        if !have("podman") || !have("runc") {
            return Err("podman or runc not installed".into());
        }
        let dir = berth.host_mkdir("podman");
        let storage = berth.host_file(
            "podman/storage.conf",
            &format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        );
        let containers = berth.host_file(
            "podman/containers.conf",
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        );
        let p = Podman {
            id: berth.identity.clone(),
            env: vec![
                ("CONTAINERS_STORAGE_CONF", storage.clone()),
                ("CONTAINERS_CONF", containers),
                ("XDG_RUNTIME_DIR", berth.runtime_dir.clone()),
            ],
            dir,
            storage,
        };
        let archive = test_images().oci.to_string_lossy().into_owned();
        let out = p
            .command(&["load", "-q", "-i", &archive])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "podman load: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(p)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.id.command("podman", args);
        cmd.current_dir(&self.dir);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn measure(&self, tools: &Path, s: &Settings) -> Figures {
        let mut f = Figures::default();
        let port = free_port();
        let publish = format!("127.0.0.1:{port}:{PORT_IN}");
        let volume = format!("{}:/tools:ro", tools.display());
        let server: Result<Child, _> = self
            .command(&[
                "run",
                "--rm",
                "--name",
                "netbench",
                "--runtime",
                "runc",
                "-p",
                &publish,
                "-v",
                &volume,
                IMAGE,
                "/tools/netbench",
                "serve",
                "5201",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        match server {
            Ok(mut child) => {
                match wait_ready(addr, Duration::from_secs(30)) {
                    Ok(()) => measure_port(addr, s, &mut f),
                    Err(e) => {
                        let mut err = String::new();
                        if let Ok(Some(_)) = child.try_wait() {
                            if let Some(mut e2) = child.stderr.take() {
                                let _ = e2.read_to_string(&mut err);
                            }
                        }
                        f.error = Some(format!("{e} {}", err.trim()));
                    }
                }
                let _ = self.command(&["rm", "-f", "-t", "0", "netbench"]).output();
                let _ = child.kill();
                let _ = child.wait();
            }
            Err(e) => f.error = Some(e.to_string()),
        }
        let (sink, t) = gateway_sink(s.runs);
        let script = gateway_script(sink, s.bytes);
        for _ in 0..s.runs + 1 {
            let out = self
                .command(&[
                    "run",
                    "--rm",
                    "--runtime",
                    "runc",
                    "--network",
                    "slirp4netns:allow_host_loopback=true",
                    "--add-host",
                    "host.containers.internal:10.0.2.2",
                    "-v",
                    &volume,
                    IMAGE,
                    "sh",
                    "-c",
                    &script,
                ])
                .output();
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                let _ = TcpStream::connect(("127.0.0.1", sink));
            }
        }
        let mut g = t.join().unwrap_or_default();
        if !g.is_empty() {
            f.gateway = Some(median(&mut g));
        }
        f
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Rootless podman keeps a pause process; our storage.conf in its environment names it.
        let ours = common::procs::with_env(&format!(
            "CONTAINERS_STORAGE_CONF={}",
            self.storage.display()
        ));
        common::procs::kill_all(&ours);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--nested-client") {
        nested_client(&args[i + 1..]);
        return;
    }
    let s = Settings {
        runs: env_num("BENCH_RUNS", 5),
        bytes: env_num("BENCH_BYTES", 1 << 30),
        connects: env_num("BENCH_CONNECTS", 200),
    };
    let tools = match build_tool() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("network bench: {e}");
            return;
        }
    };
    let Some(berth) = Berth::new() else {
        eprintln!("network bench: berth cannot run here (see the reason above)");
        return;
    };
    if std::env::var("BENCH_NESTED").as_deref() == Ok("only") {
        nested(&berth, &tools);
        return;
    }
    println!(
        "network: TCP through a published port on 127.0.0.1; {} MiB x {} runs per direction, {} connections; as {}",
        s.bytes >> 20,
        s.runs,
        s.connects,
        berth.identity.name
    );
    let mut rows: Vec<(String, Figures)> = vec![];
    for (label, network) in [
        ("berth slirp4netns (berth forwarder)", "slirp4netns"),
        (
            "berth slirp4netns (port_handler=slirp4netns)",
            "slirp4netns:port_handler=slirp4netns",
        ),
        ("berth pasta", "pasta"),
    ] {
        let tool = network.split(':').next().unwrap_or(network);
        if !have(tool) {
            rows.push((
                label.into(),
                Figures {
                    error: Some(format!("{tool} not installed")),
                    ..Figures::default()
                },
            ));
            continue;
        }
        rows.push((label.into(), berth_system(&berth, &tools, network, &s)));
    }
    berth.run_ok(&["network", "create", "bench"]);
    rows.push((
        "berth user-defined network (bridge)".into(),
        berth_system(&berth, &tools, "bench", &s),
    ));
    let podman = match Podman::setup(&berth) {
        Ok(p) => p.measure(&tools, &s),
        Err(e) => Figures {
            error: Some(e),
            ..Figures::default()
        },
    };
    rows.push(("podman --runtime runc (rootlessport)".into(), podman));
    print_table(&rows, "podman");
    if std::env::var("BENCH_NESTED").as_deref() != Ok("0") {
        nested(&berth, &tools);
    }
}

/// `--nested-client ADDR BYTES RUNS CONNECTS`: the published-port figures of a server that
/// is starting (a microVM boots for a while under TCG) on ADDR, on one line for [`nested`].
fn nested_client(args: &[String]) {
    let num = |i: usize, d: u64| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let Some(addr) = args.first().and_then(|a| a.parse::<SocketAddr>().ok()) else {
        println!("error: --nested-client wants ADDR BYTES RUNS CONNECTS");
        return;
    };
    let s = Settings {
        bytes: num(1, 32 << 20),
        runs: num(2, 3),
        connects: num(3, 20),
    };
    let mut f = Figures::default();
    match wait_ready(addr, Duration::from_secs(300)) {
        Ok(()) => measure_port(addr, &s, &mut f),
        Err(e) => f.error = Some(e),
    }
    // "-" for a figure that could not be measured; the reason on the next line.
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| v.to_string());
    println!(
        "figures {} {} {}",
        show(f.up),
        show(f.down),
        show(f.connect_us)
    );
    if let Some(e) = f.error {
        println!("{e}");
    }
}

/// The microVM against a container, both with the server behind a published port, inside one
/// `scripts/kvm-nested` machine (a real KVM under QEMU TCG).
fn nested(berth: &Berth, tools: &Path) {
    if !have("qemu-system-x86_64") {
        eprintln!("network bench: qemu-system-x86 is not installed; no microVM figures");
        return;
    }
    let info = common::stdout(&berth.cmd(&["info", "--format", "json"]));
    if info.contains("\"vm_kernel\": null") || info.contains("\"vm_agent\": null") {
        eprintln!("network bench: no guest kernel/agent (scripts/build-guest); no microVM figures");
        return;
    }
    let s = Settings {
        runs: env_num("BENCH_NESTED_RUNS", 3),
        bytes: env_num("BENCH_NESTED_BYTES", 32 << 20),
        connects: env_num("BENCH_NESTED_CONNECTS", 20),
    };
    // A microVM mounts no host directory: the server goes into an image of its own. Its
    // layers are unpacked here, as the nested machine's 9p share cannot hold overlay whiteouts
    // (the microVM's layer disks and the containers' copies are made from them there).
    const NB_IMAGE: &str = "localhost/berth-netbench:latest";
    let volume = format!("{}:/tools:ro", tools.display());
    let _ = berth.cmd(&["rm", "-f", "netbench-src"]);
    berth.run_ok(&[
        "run",
        "--name",
        "netbench-src",
        "-v",
        &volume,
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /usr/local/bin && cp /tools/netbench /usr/local/bin/",
    ]);
    berth.run_ok(&["commit", "netbench-src", NB_IMAGE]);
    berth.run_ok(&["rm", "netbench-src"]);
    berth.run_ok(&["run", "--rm", NB_IMAGE, "true"]);
    if !common::stdout(&berth.cmd(&["network", "ls"])).contains("benchvm") {
        berth.run_ok(&["network", "create", "benchvm"]);
    }
    let client = std::env::current_exe().expect("the bench binary");
    let results = berth.host_mkdir("nested-results");
    let systems: [(&str, &str, &str); 4] = [
        (
            "ctr-slirp",
            "container, slirp4netns (berth forwarder)",
            "--init --network slirp4netns",
        ),
        (
            "ctr-bridge",
            "container, user-defined network",
            "--init --network benchvm",
        ),
        ("vm-passt", "microVM, passt (virtio-net)", "--vm"),
        (
            "vm-tap",
            "microVM, user-defined network (tap)",
            "--vm --network benchvm",
        ),
    ];
    let mut script = format!(
        "set -u; R={}; B={}; C={}\n{}\n",
        results.display(),
        common::berth_bin(),
        client.display(),
        common::NESTED_ENV,
    );
    for (i, (key, _, flags)) in systems.iter().enumerate() {
        let port = 18300 + i;
        script.push_str(&format!(
            "$B run --rm {flags} -p 127.0.0.1:{port}:{PORT_IN} {NB_IMAGE} /usr/local/bin/netbench serve {PORT_IN} >$R/{key}.server 2>&1 & s=$!\n\
             $C --nested-client 127.0.0.1:{port} {} {} {} >$R/{key} 2>&1\n\
             kill $s; wait $s\n",
            s.bytes, s.runs, s.connects
        ));
    }
    // The servers end by SIGTERM: that status is not the script's.
    script.push_str("exit 0\n");
    let script_path = berth.host_file("nested-bench.sh", &script);
    if let Err(e) = common::kvm_nested(berth, &script_path, 3000, 120) {
        eprintln!("network bench: the nested machine: {e}");
    }
    let mut rows: Vec<(String, Figures)> = vec![];
    for (key, label, _) in systems {
        let text = std::fs::read_to_string(results.join(key)).unwrap_or_default();
        let mut f = Figures::default();
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.first() {
            Some(&"figures") if words.len() >= 4 => {
                f.up = words[1].parse().ok();
                f.down = words[2].parse().ok();
                f.connect_us = words[3].parse().ok();
                let rest: Vec<&str> = text.lines().skip(1).collect();
                if !rest.is_empty() {
                    f.error = Some(rest.join(" "));
                }
            }
            _ => {
                let server = std::fs::read_to_string(results.join(format!("{key}.server")))
                    .unwrap_or_default();
                f.error = Some(format!("{} {}", text.trim(), server.trim()));
            }
        }
        rows.push((label.to_string(), f));
    }
    println!();
    println!(
        "inside scripts/kvm-nested (QEMU TCG emulating the CPU, a real KVM inside): EMULATED figures, \
         not comparable with the table above; ratios against the container in the same machine; \
         {} MiB x {} runs per direction, {} connections",
        s.bytes >> 20,
        s.runs,
        s.connects
    );
    print_table(&rows, "ctr-slirp");
}

/// The table of `rows`, with ratios against the row named by `baseline` (the first row whose
/// name starts with "podman", or the first row for "ctr-slirp").
fn print_table(rows: &[(String, Figures)], baseline: &str) {
    let (base, base_label) = match baseline {
        "podman" => (rows.last().map(|(_, f)| f), "vs podman ↑/↓"),
        _ => (rows.first().map(|(_, f)| f), "vs container ↑/↓"),
    };
    let fmt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    let ratio = |v: Option<f64>, p: Option<f64>| match (v, p) {
        (Some(v), Some(p)) if p > 0.0 => format!("{:.2}x", v / p),
        _ => "-".into(),
    };
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(10);
    println!();
    println!(
        "{:<width$}  {:>12}  {:>12}  {:>11}  {:>10}  {:>15}",
        "system (medians)",
        "host→ctr Gb/s",
        "ctr→host Gb/s",
        "connect µs",
        "ctr→gw Gb/s",
        base_label
    );
    for (name, f) in rows {
        println!(
            "{:<width$}  {:>12}  {:>12}  {:>11}  {:>10}  {:>15}",
            name,
            fmt(f.up, 2),
            fmt(f.down, 2),
            fmt(f.connect_us, 0),
            fmt(f.gateway, 2),
            format!(
                "{} / {}",
                ratio(f.up, base.and_then(|p| p.up)),
                ratio(f.down, base.and_then(|p| p.down))
            ),
        );
        if let Some(e) = &f.error {
            println!("    note: {e}");
        }
    }
}

//! `berth inspect`: a container as Docker shapes it (`State`, `Config`, `HostConfig`,
//! `Mounts`, `NetworkSettings`), from its record and its runtime spec, plus berth's
//! `Isolation` (container or vm). Only what berth knows is shown; nothing is made up.

use serde_json::{json, Map, Value};

use super::EngineError;
use crate::clock;
use crate::state::{ContainerRecord, ContainerStore, Isolation, MountKind, Status};

fn secs_rfc3339(secs: u64) -> String {
    clock::rfc3339(secs as i128 * 1_000_000_000)
}

/// Docker's zero time for "never".
const NEVER: &str = "0001-01-01T00:00:00Z";

impl super::Engine {
    /// The Docker-shaped description of container `key`.
    pub fn inspect_container(&self, key: &str) -> Result<Value, EngineError> {
        let rec = self.container(key)?;
        let dir = self.containers.dir(&rec.id);
        let spec = crate::container::process::load_spec(&dir).ok();
        // A user-defined network's id, known while the network exists (also when the
        // container does not run).
        let network_id = crate::net::NetworkStore::new(&self.dirs)
            .list()
            .into_iter()
            .find(|n| n.name == rec.network)
            .map(|n| n.id);
        Ok(describe(&rec, spec.as_ref(), &dir, network_id))
    }
}

/// The record's state as Docker names it, with the supervisor's liveness taken into account.
pub fn state_of(rec: &ContainerRecord) -> Status {
    match rec.status {
        Status::Running | Status::Restarting if !ContainerStore::monitor_alive(rec) => Status::Dead,
        s => s,
    }
}

fn describe(
    rec: &ContainerRecord,
    spec: Option<&oci_spec::runtime::Spec>,
    dir: &std::path::Path,
    network_id: Option<String>,
) -> Value {
    let status = state_of(rec);
    let process = spec.and_then(|s| s.process().as_ref());
    let args: Vec<String> = process
        .and_then(|p| p.args().clone())
        .unwrap_or_else(|| rec.command.clone());
    let env: Vec<String> = process.and_then(|p| p.env().clone()).unwrap_or_default();
    let user = process
        .map(|p| format!("{}:{}", p.user().uid(), p.user().gid()))
        .unwrap_or_default();
    let cwd = process
        .map(|p| p.cwd().display().to_string())
        .unwrap_or_else(|| "/".into());
    let hostname = spec.and_then(|s| s.hostname().clone()).unwrap_or_default();
    let namespaces: Vec<String> = spec
        .and_then(|s| s.linux().as_ref())
        .and_then(|l| l.namespaces().as_ref())
        .map(|ns| {
            ns.iter()
                .map(|n| format!("{:?}", n.typ()).to_lowercase())
                .collect()
        })
        .unwrap_or_default();
    // The network as set up (or asked for, before the first start); records without one
    // are told by the spec.
    let network_mode = if !rec.network.is_empty() {
        rec.network.as_str()
    } else if rec.isolation == Isolation::Vm || namespaces.iter().any(|n| n == "network") {
        "none"
    } else {
        "host"
    };
    let read_only = spec
        .and_then(|s| s.root().as_ref())
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let init = spec
        .and_then(|s| s.annotations().as_ref())
        .and_then(|a| a.get(crate::container::INIT_ANNOTATION))
        .is_some_and(|v| v == "true");

    let mounts: Vec<Value> = rec
        .mounts
        .iter()
        .map(|m| {
            let mut o = Map::new();
            o.insert(
                "Type".into(),
                json!(match m.kind {
                    MountKind::Bind => "bind",
                    MountKind::Volume => "volume",
                    MountKind::Tmpfs => "tmpfs",
                }),
            );
            if let Some(n) = &m.name {
                o.insert("Name".into(), json!(n));
                o.insert("Driver".into(), json!("local"));
            }
            o.insert("Source".into(), json!(m.source));
            o.insert("Destination".into(), json!(m.destination));
            o.insert("Mode".into(), json!(if m.read_only { "ro" } else { "" }));
            o.insert("RW".into(), json!(!m.read_only));
            o.insert("Propagation".into(), json!("rprivate"));
            Value::Object(o)
        })
        .collect();
    let binds: Vec<String> = rec
        .mounts
        .iter()
        .filter(|m| m.kind != MountKind::Tmpfs)
        .map(|m| {
            let src = m
                .name
                .clone()
                .unwrap_or_else(|| m.source.display().to_string());
            let mode = if m.read_only { ":ro" } else { "" };
            format!("{src}:{}{mode}", m.destination.display())
        })
        .collect();
    let tmpfs: Map<String, Value> = rec
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Tmpfs)
        .map(|m| {
            (
                m.destination.display().to_string(),
                json!(m.options.join(",")),
            )
        })
        .collect();
    let log = rec.log.map(|l| {
        json!({
            "Type": "k8s-file",
            "Config": {"max-size": l.max_size.to_string(), "max-file": l.max_files.to_string()}
        })
    });
    let isolation = match rec.isolation {
        Isolation::Container => "container",
        Isolation::Vm => "vm",
    };
    let running = status == Status::Running;
    let pid = if running { rec.pid.unwrap_or(0) } else { 0 };
    // Where it is connected, while it runs (Docker empties these once a container stops).
    let endpoint = rec.endpoint.as_ref().filter(|_| running);
    let ip = endpoint.map_or(String::new(), |e| e.ip.to_string());
    let gateway = endpoint.map_or(String::new(), |e| e.gateway.to_string());
    let mac = endpoint.map_or(String::new(), |e| e.mac.clone());
    let prefix_len = endpoint.map_or(0, |e| e.prefix_len);
    let aliases = rec
        .network_options
        .as_ref()
        .map(|o| o.aliases.clone())
        .filter(|a| !a.is_empty());
    let mut networks = Map::new();
    networks.insert(
        network_mode.into(),
        json!({
            "NetworkID": endpoint
                .map(|e| e.network_id.clone())
                .filter(|id| !id.is_empty())
                .or(network_id)
                .unwrap_or_default(),
            "IPAddress": ip,
            "IPPrefixLen": prefix_len,
            "Gateway": gateway,
            "MacAddress": mac,
            "Aliases": aliases,
        }),
    );
    for (c, e) in crate::net::Connected::of_run(rec) {
        networks.insert(
            c.network.clone(),
            json!({
                "NetworkID": e.network_id,
                "IPAddress": e.ip.to_string(),
                "IPPrefixLen": e.prefix_len,
                "Gateway": e.gateway.to_string(),
                "MacAddress": e.mac,
                "Aliases": Some(&e.aliases).filter(|a| !a.is_empty()),
            }),
        );
    }
    // Docker's shape: "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}].
    let mut ports = Map::new();
    for p in &rec.ports {
        let key = format!("{}/{}", p.container_port, p.proto);
        let binding = json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()});
        match ports.get_mut(&key) {
            Some(Value::Array(list)) => list.push(binding),
            _ => {
                ports.insert(key, json!([binding]));
            }
        }
    }

    json!({
        "Id": rec.id,
        "Created": secs_rfc3339(rec.created),
        "Path": args.first().cloned().unwrap_or_default(),
        "Args": args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": status.name(),
            "Running": running,
            "Paused": false,
            "Restarting": status == Status::Restarting,
            "OOMKilled": false,
            "Dead": status == Status::Dead,
            "Pid": pid,
            "ExitCode": rec.exit_code.unwrap_or(0),
            "Error": rec.error,
            "StartedAt": rec.started_at.clone().unwrap_or_else(|| NEVER.into()),
            "FinishedAt": rec.finished_at.clone().unwrap_or_else(|| NEVER.into()),
            "MonitorPid": if running { rec.monitor_pid.unwrap_or(0) } else { 0 },
        },
        "Image": rec.image_id,
        "ResolvConfPath": dir.join("etc/resolv.conf"),
        "HostnamePath": dir.join("etc/hostname"),
        "HostsPath": dir.join("etc/hosts"),
        "LogPath": if rec.log.is_some() { json!(dir.join("container.log")) } else { json!("") },
        "Name": format!("/{}", rec.name),
        "RestartCount": rec.restart_count,
        "Driver": rec.driver,
        "Platform": "linux",
        "HostConfig": {
            "Binds": binds,
            "LogConfig": log,
            "NetworkMode": network_mode,
            "RestartPolicy": {
                "Name": rec.restart_policy.name(),
                "MaximumRetryCount": rec.restart_policy.max_retries(),
            },
            "AutoRemove": rec.auto_remove,
            "ReadonlyRootfs": read_only,
            "Tmpfs": tmpfs,
            "Init": init,
            "Isolation": isolation,
            "UsernsMode": rec.userns.to_string(),
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": hostname,
            "User": user,
            "AttachStdin": rec.open_stdin,
            "AttachStdout": true,
            "AttachStderr": true,
            "Tty": rec.tty,
            "OpenStdin": rec.open_stdin,
            "StdinOnce": rec.open_stdin,
            "Env": env,
            "Cmd": args,
            "Image": rec.image,
            "WorkingDir": cwd,
            "Labels": rec.labels,
            "StopSignal": rec.stop_signal.and_then(|n| nix::sys::signal::Signal::try_from(n).ok()).map_or("SIGTERM", |s| s.as_str()),
            "StopTimeout": rec.stop_timeout.unwrap_or(super::DEFAULT_STOP_TIMEOUT),
        },
        "NetworkSettings": {
            "IPAddress": ip,
            "IPPrefixLen": prefix_len,
            "Gateway": gateway,
            "MacAddress": mac,
            "Networks": networks,
            "Ports": ports,
            "SandboxKey": if running && network_mode != "host" {
                json!(format!("/proc/{pid}/ns/net"))
            } else {
                json!("")
            },
        },
        "Isolation": isolation,
    })
}

/// Docker's STATUS column.
pub fn status_text(r: &ContainerRecord) -> String {
    let since = |t: &Option<String>| {
        t.as_deref()
            .and_then(crate::clock::parse_rfc3339)
            .map(crate::clock::ago)
            .unwrap_or_else(|| "a while".into())
    };
    match state_of(r) {
        Status::Running => format!("Up {}", since(&r.started_at)),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            r.exit_code.unwrap_or(0),
            since(&r.finished_at)
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            r.exit_code.unwrap_or(0),
            since(&r.finished_at)
        ),
        Status::Created => "Created".into(),
        Status::Dead if r.socket.is_some() => "Dead (its monitor died)".into(),
        Status::Dead => "Dead".into(),
    }
}

impl super::Engine {
    /// The bytes container `rec`'s writable layer takes on disk: what removing it frees.
    pub fn container_disk_usage(&self, rec: &ContainerRecord) -> u64 {
        rec.writable.iter().map(|p| disk_bytes(p)).sum()
    }
}

/// Disk usage of the tree at `path` (blocks allocated), links not followed.
pub(crate) fn disk_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                total += disk_bytes(&e.path());
            }
        }
    }
    total
}

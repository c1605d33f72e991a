//! Docker's models to berth's and back: a create body into the engine's [`CreateConfig`], a
//! container record into the list entry clients read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use bollard_stubs::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, ContainerSummaryHostConfig,
    ContainerSummaryNetworkSettings, ContainerSummaryStateEnum, EndpointSettings, HostConfig,
    MountPoint, MountPointTypeEnum, MountTypeEnum, Port, PortTypeEnum, RestartPolicyNameEnum,
};

use super::error::ApiError;
use super::system::{RUNTIME_CONTAINER, RUNTIME_VM};
use crate::engine::{self, CreateConfig, MountRequest, MountSource};
use crate::monitor::policy::RestartPolicy;
use crate::net::ports::Proto;
use crate::net::PortSpec;
use crate::spec::ulimit::Ulimit;
use crate::state::{ContainerRecord, Isolation, MountKind, Status};

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// Reads a create body. `HostConfig.Isolation` is taken out first: berth's `"vm"` is not one
/// of the values Docker's model knows (it has Windows' `hyperv`), and unknown fields are
/// ignored as Docker ignores them.
pub fn parse_create_body(body: &[u8]) -> Result<(ContainerCreateBody, Option<String>), ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
    let isolation = value
        .get_mut("HostConfig")
        .and_then(|h| h.as_object_mut())
        .and_then(|h| h.remove("Isolation"))
        .and_then(|i| i.as_str().map(String::from));
    let body = serde_json::from_value(value)
        .map_err(|e| bad(format!("the container configuration is malformed: {e}")))?;
    Ok((body, isolation))
}

/// `"80/tcp"` -> (80, tcp).
fn port_key(key: &str) -> Result<(u16, Proto), ApiError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto {
        "tcp" | "" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => {
            return Err(bad(format!(
                "port {key}: protocol {other} is not supported; berth publishes tcp and udp"
            )))
        }
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(format!("invalid port {key:?}: a port is 1-65535")))?;
    Ok((port, proto))
}

fn publish(h: &HostConfig) -> Result<Vec<PortSpec>, ApiError> {
    let mut out = Vec::new();
    let mut keys: Vec<_> = h.port_bindings.iter().flatten().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    for (key, bindings) in keys {
        let (container_port, proto) = port_key(key)?;
        for b in bindings.iter().flatten() {
            let host_ip = match b.host_ip.as_deref() {
                None | Some("") => None,
                Some(ip) => Some(
                    ip.parse::<IpAddr>()
                        .map_err(|_| bad(format!("invalid HostIp {ip:?} for port {key}")))?,
                ),
            };
            let host_port = match b.host_port.as_deref() {
                None | Some("") | Some("0") => None,
                Some(p) => Some(p.parse::<u16>().map_err(|_| {
                    bad(format!(
                        "invalid HostPort {p:?} for port {key}: give one port (ranges are not supported)"
                    ))
                })?),
            };
            out.push(PortSpec {
                host_ip,
                host_port,
                container_port,
                proto,
            });
        }
    }
    Ok(out)
}

fn mounts(body: &ContainerCreateBody, h: &HostConfig) -> Result<Vec<MountRequest>, ApiError> {
    let mut out = Vec::new();
    for b in h.binds.iter().flatten() {
        out.push(MountRequest::parse_volume(b)?);
    }
    for m in h.mounts.iter().flatten() {
        let target = m
            .target
            .as_deref()
            .ok_or_else(|| bad("a mount needs a Target"))?;
        let source = match m.typ {
            Some(MountTypeEnum::BIND) => {
                MountSource::Bind(PathBuf::from(m.source.as_deref().unwrap_or_default()))
            }
            Some(MountTypeEnum::VOLUME) | None | Some(MountTypeEnum::EMPTY) => {
                MountSource::Volume {
                    name: m.source.clone().filter(|s| !s.is_empty()),
                    nocopy: m
                        .volume_options
                        .as_ref()
                        .and_then(|o| o.no_copy)
                        .unwrap_or(false),
                }
            }
            Some(MountTypeEnum::TMPFS) => {
                let mut opts = Vec::new();
                if let Some(t) = &m.tmpfs_options {
                    if let Some(size) = t.size_bytes {
                        opts.push(format!("size={size}"));
                    }
                    if let Some(mode) = t.mode {
                        opts.push(format!("mode={mode:o}"));
                    }
                }
                MountSource::Tmpfs(opts)
            }
            Some(other) => {
                return Err(bad(format!(
                    "mount type {other} is not supported: use bind, volume or tmpfs"
                )))
            }
        };
        out.push(MountRequest::checked(
            source,
            target,
            m.read_only.unwrap_or(false),
        )?);
    }
    // `docker run -v /path` (no source) arrives as Config.Volumes: an anonymous volume each.
    let mut anonymous: Vec<&String> = body.volumes.iter().flatten().map(|(k, _)| k).collect();
    anonymous.sort();
    for target in anonymous {
        if out.iter().any(|m| m.target.as_os_str() == target.as_str()) {
            continue;
        }
        out.push(MountRequest::parse_volume(target)?);
    }
    Ok(out)
}

/// The further networks of a create body (`docker run --network a --network b`): the
/// endpoints besides the one of `NetworkMode`, each with its aliases, by name. The container
/// is connected to them once created.
pub fn further_networks(body: &ContainerCreateBody) -> Vec<(String, Vec<String>)> {
    let mode = body
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default();
    let mut out: Vec<(String, Vec<String>)> = body
        .networking_config
        .iter()
        .flat_map(|n| n.endpoints_config.iter().flatten())
        .filter(|(name, _)| {
            **name != mode
                && !super::networks::BUILTIN.contains(&docker_network_name(name).as_str())
        })
        .map(|(name, e)| (name.clone(), e.aliases.clone().unwrap_or_default()))
        .collect();
    out.sort();
    out
}

/// The engine's create configuration from a create body (`name` from the query).
pub fn create_config(
    name: Option<String>,
    body: ContainerCreateBody,
    isolation: Option<String>,
) -> Result<CreateConfig, ApiError> {
    let h = body.host_config.clone().unwrap_or_default();
    let vm_isolation = match isolation.as_deref() {
        Some("vm") => true,
        None | Some("") | Some("default") | Some("process") => false,
        Some(other) => {
            return Err(bad(format!(
                "isolation {other:?} is not available: berth offers \"vm\" (its microVM) or the default container"
            )))
        }
    };
    let vm_runtime = match h.runtime.as_deref() {
        Some(RUNTIME_VM) => true,
        None | Some("") | Some(RUNTIME_CONTAINER) | Some("runc") => false,
        Some(other) => {
            return Err(bad(format!(
                "unknown runtime {other:?}: berth's runtimes are \"{RUNTIME_CONTAINER}\" (a container) and \"{RUNTIME_VM}\" (a microVM)"
            )))
        }
    };
    let vm = vm_isolation || vm_runtime;
    let image = body
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| bad("the configuration names no Image"))?;
    let restart = match h.restart_policy.as_ref().and_then(|r| r.name) {
        None | Some(RestartPolicyNameEnum::EMPTY) | Some(RestartPolicyNameEnum::NO) => {
            RestartPolicy::No
        }
        Some(RestartPolicyNameEnum::ALWAYS) => "always".parse()?,
        Some(RestartPolicyNameEnum::UNLESS_STOPPED) => "unless-stopped".parse()?,
        Some(RestartPolicyNameEnum::ON_FAILURE) => {
            match h
                .restart_policy
                .as_ref()
                .and_then(|r| r.maximum_retry_count)
            {
                Some(n) if n > 0 => format!("on-failure:{n}").parse()?,
                _ => "on-failure".parse()?,
            }
        }
    };
    let network = h
        .network_mode
        .clone()
        .filter(|n| !n.is_empty() && n != "default");
    // Aliases come with the endpoint of the network the container joins.
    let aliases = body
        .networking_config
        .as_ref()
        .and_then(|n| n.endpoints_config.as_ref())
        .and_then(|e| {
            network
                .as_ref()
                .and_then(|n| e.get(n))
                .or_else(|| e.values().next())
        })
        .and_then(|e| e.aliases.clone())
        .unwrap_or_default();
    let ulimits = h
        .ulimits
        .iter()
        .flatten()
        .map(|u| {
            let name = u.name.clone().unwrap_or_default();
            let soft = u.soft.unwrap_or(0);
            let hard = u.hard.unwrap_or(soft);
            Ulimit::parse(&format!("{name}={soft}:{hard}"))
                .map_err(|e| bad(format!("ulimit {name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let log_opts = match &h.log_config {
        Some(l)
            if !matches!(
                l.typ.as_deref(),
                None | Some("") | Some("json-file") | Some("k8s-file")
            ) =>
        {
            return Err(bad(format!(
                "log driver {:?} is not available: berth keeps a json-file style log per container",
                l.typ.as_deref().unwrap_or_default()
            )))
        }
        Some(l) => {
            let mut opts: Vec<(String, String)> =
                l.config.clone().unwrap_or_default().into_iter().collect();
            opts.sort();
            opts
        }
        None => vec![],
    };
    let mut tmpfs: Vec<String> = h
        .tmpfs
        .iter()
        .flatten()
        .map(|(path, opts)| {
            if opts.is_empty() {
                path.clone()
            } else {
                format!("{path}:{opts}")
            }
        })
        .collect();
    tmpfs.sort();
    // `-P` publishes `--expose`'s ports (the body's ExposedPorts) as well as the image's,
    // each on a free host port.
    let mut publish = publish(&h)?;
    if h.publish_all_ports == Some(true) {
        let mut exposed: Vec<&String> = body
            .exposed_ports
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .collect();
        exposed.sort();
        for key in exposed {
            let (container_port, proto) = port_key(key)?;
            if !publish
                .iter()
                .any(|p| p.container_port == container_port && p.proto == proto)
            {
                publish.push(PortSpec {
                    host_ip: None,
                    host_port: None,
                    container_port,
                    proto,
                });
            }
        }
    }
    let memory = h.memory.filter(|m| *m > 0).map(|m| m as u64);
    let cpus = h.nano_cpus.filter(|n| *n > 0).map(|n| n as f64 / 1e9);
    Ok(CreateConfig {
        image,
        name: name.map(|n| n.trim_start_matches('/').to_string()),
        cmd: body.cmd.clone().unwrap_or_default(),
        entrypoint: body.entrypoint.clone(),
        env: body.env.clone().unwrap_or_default(),
        working_dir: body.working_dir.clone(),
        user: body.user.clone(),
        hostname: body.hostname.clone(),
        labels: body
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        tty: body.tty.unwrap_or(false),
        open_stdin: body.open_stdin.unwrap_or(false),
        stop_timeout: body
            .stop_timeout
            .map(|t| u32::try_from(t).map_err(|_| bad(format!("invalid StopTimeout {t}"))))
            .transpose()?,
        host: engine::HostConfig {
            mounts: mounts(&body, &h)?,
            tmpfs,
            volumes_from: h.volumes_from.clone().unwrap_or_default(),
            network,
            publish,
            publish_all: h.publish_all_ports.unwrap_or(false),
            aliases,
            restart,
            auto_remove: h.auto_remove.unwrap_or(false),
            read_only: h.readonly_rootfs.unwrap_or(false),
            init: h.init.unwrap_or(false),
            privileged: h.privileged.unwrap_or(false),
            cap_add: h.cap_add.clone().unwrap_or_default(),
            cap_drop: h.cap_drop.clone().unwrap_or_default(),
            security_opt: h.security_opt.clone().unwrap_or_default(),
            userns: h.userns_mode.clone().filter(|u| !u.is_empty()),
            isolation: if vm {
                Isolation::Vm
            } else {
                Isolation::Container
            },
            cpus,
            memory,
            ulimits,
            log_opts,
        },
    })
}

impl From<crate::monitor::policy::PolicyError> for ApiError {
    fn from(e: crate::monitor::policy::PolicyError) -> ApiError {
        bad(e.to_string())
    }
}

/// Docker's `State` of a list entry.
fn state_enum(s: Status) -> ContainerSummaryStateEnum {
    match s {
        Status::Created => ContainerSummaryStateEnum::CREATED,
        Status::Running => ContainerSummaryStateEnum::RUNNING,
        Status::Restarting => ContainerSummaryStateEnum::RESTARTING,
        Status::Exited => ContainerSummaryStateEnum::EXITED,
        Status::Dead => ContainerSummaryStateEnum::DEAD,
    }
}

/// The network a record is on, as Docker names it: `bridge` for berth's default.
pub fn network_name(r: &ContainerRecord) -> String {
    docker_network_name(&r.network)
}

/// A network as Docker names it: `bridge` for berth's default (whichever stack it uses).
fn docker_network_name(n: &str) -> String {
    match n {
        "" | "default" | "slirp4netns" | "pasta" | "passt" | "private" => "bridge".into(),
        other => other.to_string(),
    }
}

/// One entry of `GET /containers/json`.
pub fn summary(r: &ContainerRecord) -> ContainerSummary {
    let state = engine::state_of(r);
    let ports = r
        .ports
        .iter()
        .map(|p| Port {
            ip: Some(p.host_ip.to_string()),
            private_port: p.container_port,
            public_port: Some(p.host_port),
            typ: Some(match p.proto {
                Proto::Tcp => PortTypeEnum::TCP,
                Proto::Udp => PortTypeEnum::UDP,
            }),
        })
        .collect();
    let net = network_name(r);
    let mut endpoint = EndpointSettings::default();
    if let Some(e) = &r.endpoint {
        endpoint.ip_address = Some(e.ip.to_string());
        endpoint.ip_prefix_len = Some(e.prefix_len as i64);
        endpoint.gateway = Some(e.gateway.to_string());
        endpoint.mac_address = Some(e.mac.clone());
        endpoint.network_id = Some(e.network_id.clone());
        endpoint.aliases = Some(e.aliases.clone());
    }
    if super::networks::BUILTIN.contains(&net.as_str()) {
        endpoint.network_id = Some(super::networks::builtin_id(&net));
    }
    let networks = HashMap::from([(net.clone(), endpoint)]);
    let mounts = r
        .mounts
        .iter()
        .map(|m| MountPoint {
            typ: Some(match m.kind {
                MountKind::Bind => MountPointTypeEnum::BIND,
                MountKind::Volume => MountPointTypeEnum::VOLUME,
                MountKind::Tmpfs => MountPointTypeEnum::TMPFS,
            }),
            name: m.name.clone(),
            source: Some(m.source.display().to_string()),
            destination: Some(m.destination.display().to_string()),
            driver: (m.kind == MountKind::Volume).then(|| "local".to_string()),
            mode: Some(if m.read_only {
                "ro".into()
            } else {
                String::new()
            }),
            rw: Some(!m.read_only),
            propagation: Some(String::new()),
        })
        .collect();
    ContainerSummary {
        id: Some(r.id.clone()),
        names: Some(vec![format!("/{}", r.name)]),
        image: Some(r.image.clone()),
        image_id: Some(r.image_id.clone()),
        command: Some(r.command.join(" ")),
        created: Some(r.created as i64),
        ports: Some(ports),
        labels: Some(r.labels.clone().into_iter().collect()),
        state: Some(state_enum(state)),
        status: Some(engine::status_text(r)),
        host_config: Some(ContainerSummaryHostConfig {
            network_mode: Some(if net == "bridge" {
                "default".into()
            } else {
                net
            }),
            annotations: None,
        }),
        network_settings: Some(ContainerSummaryNetworkSettings {
            networks: Some(networks),
        }),
        mounts: Some(mounts),
        ..ContainerSummary::default()
    }
}

/// berth's default network as Docker's `bridge` in an inspect document, and the built-in
/// networks' ids where berth has none.
fn docker_networks(v: &mut serde_json::Value) {
    let docker_name = docker_network_name;
    if let Some(mode) = v.pointer_mut("/HostConfig/NetworkMode") {
        if let Some(m) = mode.as_str() {
            *mode = serde_json::Value::String(docker_name(m));
        }
    }
    let Some(networks) = v
        .pointer_mut("/NetworkSettings/Networks")
        .and_then(|n| n.as_object_mut())
    else {
        return;
    };
    let entries: Vec<(String, serde_json::Value)> = std::mem::take(networks).into_iter().collect();
    for (name, mut endpoint) in entries {
        let name = docker_name(&name);
        if super::networks::BUILTIN.contains(&name.as_str()) {
            if let Some(e) = endpoint.as_object_mut() {
                e.insert(
                    "NetworkID".into(),
                    super::networks::builtin_id(&name).into(),
                );
            }
        }
        networks.insert(name, endpoint);
    }
}

/// `GET /containers/{id}/json`: berth's inspect document read into Docker's model (so its
/// shape is checked by the compiler's types), with berth's own isolation, which the model has
/// no value for, put back: `"vm"` for a microVM.
pub fn inspect(mut v: serde_json::Value) -> Result<serde_json::Value, ApiError> {
    let isolation = v
        .get_mut("HostConfig")
        .and_then(|h| h.as_object_mut())
        .and_then(|h| h.remove("Isolation"));
    // berth's log is readable through `/containers/{id}/logs` as Docker's json-file log is;
    // clients (docker-py's `containers.run`) read logs only from drivers they know.
    if let Some(t) = v.pointer_mut("/HostConfig/LogConfig/Type") {
        if t == "k8s-file" {
            *t = serde_json::Value::String("json-file".into());
        }
    }
    docker_networks(&mut v);
    let typed: ContainerInspectResponse = serde_json::from_value(v).map_err(|e| {
        ApiError::internal(format!(
            "berth's inspect output does not fit Docker's model: {e}"
        ))
    })?;
    let mut out = serde_json::to_value(typed)
        .map_err(|e| ApiError::internal(format!("writing the inspect document: {e}")))?;
    if let (Some(h), Some(serde_json::Value::String(i))) = (
        out.get_mut("HostConfig").and_then(|h| h.as_object_mut()),
        isolation,
    ) {
        if i == "vm" {
            h.insert("Isolation".into(), serde_json::Value::String(i));
        }
    }
    Ok(out)
}

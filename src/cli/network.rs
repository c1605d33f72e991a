//! `berth network create|ls|inspect|rm|prune|connect|disconnect` and `berth port`.

use clap::{Args, Subcommand};

use berth::engine::Engine;

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a user-defined network: containers on it reach each other by name.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show a network's settings and the containers running on it, as JSON.
    Inspect(InspectArgs),
    /// Remove networks.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove every network no running container uses.
    Prune,
    /// Connect a container to a network: a running one at once (it must be on a user-defined
    /// network already), one that is not running when it starts.
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(DisconnectArgs),
}

#[derive(Args)]
pub struct ConnectArgs {
    /// A further name the container has on the network; repeatable.
    #[arg(long)]
    alias: Vec<String>,
    network: String,
    container: String,
}

#[derive(Args)]
pub struct DisconnectArgs {
    /// No error when the container is not on the network.
    #[arg(short, long)]
    force: bool,
    network: String,
    container: String,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Subnet in CIDR form (default: the next free /24 of 10.89.0.0/16).
    #[arg(long, value_name = "CIDR")]
    subnet: Option<String>,
    /// A label, KEY=VALUE (or KEY); repeatable.
    #[arg(long)]
    label: Vec<String>,
    name: String,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    quiet: bool,
    /// table (default), json (one object per line), a Go template ({{.Name}} {{.Subnet}}),
    /// or `table TEMPLATE` (with a header, in columns).
    #[arg(long)]
    format: Option<String>,
}

/// The fields of a `network ls` row, with their column headers.
const NETWORK_FIELDS: &[(&str, &str)] = &[
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Subnet", "SUBNET"),
    ("Gateway", "GATEWAY"),
    ("CreatedAt", "CREATED AT"),
];

#[derive(Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Do not fail when a network does not exist (as Docker's `-f`). A network that running
    /// containers use is never removed, not even with -f: stop or remove them first.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Args)]
pub struct PortArgs {
    /// The container (name or id).
    container: String,
    /// Only this container port: PORT[/tcp|/udp].
    port: Option<String>,
}

/// `KEY=VALUE` (or `KEY`, with an empty value) flags as pairs: `--label`, `--filter`.
pub fn key_values(items: &[String]) -> impl Iterator<Item = (String, String)> + '_ {
    items.iter().map(|l| {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        (k.to_string(), v.to_string())
    })
}

pub fn network(engine: &Engine, cmd: NetworkCommand) -> anyhow::Result<()> {
    match cmd {
        NetworkCommand::Create(a) => {
            let labels = key_values(&a.label).collect();
            let n = engine.network_create(&a.name, a.subnet.as_deref(), labels)?;
            println!("{}", n.name);
        }
        NetworkCommand::Ls(a) => {
            let json_rows: Vec<serde_json::Value> = engine
                .networks()
                .iter()
                .map(|n| {
                    serde_json::json!({
                        "ID": n.id[..12].to_string(), "Name": n.name, "Driver": n.driver,
                        "Subnet": n.cidr(), "Gateway": n.gateway.to_string(),
                        "CreatedAt": berth::clock::rfc3339(n.created as i128 * 1_000_000_000),
                    })
                })
                .collect();
            if !a.quiet {
                if let Some(text) =
                    super::format::listing(a.format.as_deref(), &json_rows, NETWORK_FIELDS)
                        .map_err(anyhow::Error::msg)?
                {
                    print!("{text}");
                    return Ok(());
                }
            }
            let mut rows = vec![[
                "NETWORK ID".to_string(),
                "NAME".into(),
                "DRIVER".into(),
                "SUBNET".into(),
            ]];
            for n in engine.networks() {
                if a.quiet {
                    println!("{}", n.name);
                    continue;
                }
                rows.push([
                    n.id[..12].to_string(),
                    n.name.clone(),
                    n.driver.clone(),
                    n.cidr(),
                ]);
            }
            if !a.quiet {
                super::image::print_table(&rows);
            }
        }
        NetworkCommand::Inspect(a) => {
            let mut out = vec![];
            for name in &a.networks {
                let (n, users) = engine.network_inspect(name)?;
                out.push(serde_json::json!({
                    "name": n.name,
                    "id": n.id,
                    "driver": n.driver,
                    "subnet": n.cidr(),
                    "gateway": n.gateway,
                    "created": n.created,
                    "containers": users.iter().map(|c| serde_json::json!({
                        "id": c.id, "name": c.name, "ports": c.ports,
                    })).collect::<Vec<_>>(),
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Rm(a) => {
            let mut failed = None;
            for name in &a.networks {
                match engine.network_remove(name, a.force) {
                    Ok(Some(n)) => println!("{n}"),
                    Ok(None) => {}
                    // One network: its error is berth's, reported once by the caller.
                    Err(e) if a.networks.len() == 1 => return Err(e.into()),
                    Err(e) => {
                        super::report(anyhow::Error::new(e), 1);
                        failed = Some(());
                    }
                }
            }
            if failed.is_some() {
                anyhow::bail!("some networks were not removed (see above)");
            }
        }
        NetworkCommand::Connect(a) => engine.network_connect(&a.network, &a.container, &a.alias)?,
        NetworkCommand::Disconnect(a) => {
            engine.network_disconnect(&a.network, &a.container, a.force)?
        }
        NetworkCommand::Prune => {
            for n in engine.network_prune(|_| true)? {
                println!("{n}");
            }
        }
    }
    Ok(())
}

/// `berth port CONTAINER [PORT[/PROTO]]`, as Docker prints it.
pub fn port(engine: &Engine, a: PortArgs) -> anyhow::Result<()> {
    let ports = engine.ports(&a.container)?;
    match &a.port {
        None => {
            for p in &ports {
                println!("{}/{} -> {}", p.container_port, p.proto, p.host_addr());
            }
        }
        Some(want) => {
            let (num, proto) = want.split_once('/').unwrap_or((want.as_str(), "tcp"));
            let found: Vec<_> = ports
                .iter()
                .filter(|p| p.container_port.to_string() == num && p.proto.to_string() == proto)
                .collect();
            if found.is_empty() {
                anyhow::bail!(
                    "no public port '{num}/{proto}' published for {}: `berth port {}` lists what is",
                    a.container,
                    a.container
                );
            }
            for p in found {
                println!("{}", p.host_addr());
            }
        }
    }
    Ok(())
}

//! `network connect` and `network disconnect`: a container joins or leaves a user-defined
//! network. A running container on a user-defined network gets (or loses) a further
//! interface at once, through the network daemon it already uses; a container that is not
//! running starts on the network it was connected to.

use crate::net::netns;
use crate::net::{self, Connected, Endpoint, NetError, NetworkRequest, NetworkStore};
use crate::state::{ContainerRecord, ContainerStore, Isolation};

use super::EngineError;

fn cannot(rec: &ContainerRecord, network: &str, why: impl Into<String>) -> EngineError {
    NetError::CannotConnect {
        container: rec.name.clone(),
        network: network.to_string(),
        why: why.into(),
    }
    .into()
}

impl super::Engine {
    /// `berth network connect [--alias A] NETWORK CONTAINER`.
    pub fn network_connect(
        &self,
        network: &str,
        key: &str,
        aliases: &[String],
    ) -> Result<(), EngineError> {
        let config = NetworkStore::new(&self.dirs).get(network)?;
        let found = self.containers.find(key)?;
        let _lock = self.containers.lock_container(&found.id)?;
        let mut rec = self.containers.find(&found.id)?;
        let already = || NetError::AlreadyConnected {
            container: rec.name.clone(),
            network: config.name.clone(),
        };
        if rec.network == config.name || Connected::of_run(&rec).any(|c| c.network == config.name) {
            return Err(already().into());
        }
        if ContainerStore::is_running(&rec) {
            if rec.isolation == Isolation::Vm {
                return Err(cannot(&rec, &config.name, "a running microVM keeps the network it started with: stop it, connect it, start it again"));
            }
            let on_own_network = NetworkStore::new(&self.dirs).get(&rec.network).is_ok();
            let pid = rec.pid.filter(|_| on_own_network).ok_or_else(|| {
                cannot(&rec, &config.name, format!(
                    "it runs on the default network, whose namespace berth cannot reach: stop it (`docker stop {0}`), connect it, and start it again, or run it with --network {1}",
                    rec.name, config.name
                ))
            })?;
            let mut names = vec![rec.name.clone(), rec.id[..12].to_string()];
            names.extend(
                aliases
                    .iter()
                    .filter(|a| !names.contains(a))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            let hosts = self.containers.dir(&rec.id).join("etc").join("hosts");
            let ip = netns::connect_running(&self.dirs, pid, config.clone(), names, hosts)?;
            rec.connected.retain(|c| c.pid == pid);
            rec.connected.push(Connected {
                network: config.name.clone(),
                endpoint: Endpoint {
                    network_id: config.id.clone(),
                    ip,
                    prefix_len: config.prefix,
                    gateway: config.gateway,
                    mac: net::mac_for(ip),
                    aliases: aliases.to_vec(),
                },
                pid,
            });
        } else {
            let request = rec.network_options.clone().unwrap_or_default().request;
            match &request {
                NetworkRequest::Named(other) => {
                    return Err(cannot(&rec, &config.name, format!(
                        "it starts on network {other}, and a container that is not running starts on one network: disconnect it from {other} first, or connect it once it runs"
                    )))
                }
                NetworkRequest::None | NetworkRequest::Host => {
                    return Err(cannot(&rec, &config.name, format!(
                        "it runs with --network {}, which has no network of its own to join",
                        rec.network
                    )))
                }
                NetworkRequest::Default | NetworkRequest::UserMode(..) => {}
            }
            let opts = rec.network_options.get_or_insert_with(Default::default);
            opts.request = NetworkRequest::Named(config.name.clone());
            opts.aliases = aliases.to_vec();
            rec.network = config.name.clone();
        }
        self.containers.save(&rec)?;
        Ok(())
    }

    /// `berth network disconnect [-f] NETWORK CONTAINER`; with `force`, a container that is
    /// not on the network is no error.
    pub fn network_disconnect(
        &self,
        network: &str,
        key: &str,
        force: bool,
    ) -> Result<(), EngineError> {
        let config = NetworkStore::new(&self.dirs).get(network)?;
        let found = self.containers.find(key)?;
        let _lock = self.containers.lock_container(&found.id)?;
        let mut rec = self.containers.find(&found.id)?;
        let running = ContainerStore::is_running(&rec);
        let joined = Connected::of_run(&rec).any(|c| c.network == config.name);
        if running && (joined || rec.network == config.name) {
            let pid = rec.pid.unwrap_or_default();
            netns::disconnect_running(&self.dirs, pid, &config.id)?;
            if joined {
                rec.connected.retain(|c| c.network != config.name);
            } else {
                rec.endpoint = None;
            }
        } else if !running && rec.network == config.name {
            // It starts on the default network from now on.
            let opts = rec.network_options.get_or_insert_with(Default::default);
            opts.request = NetworkRequest::Default;
            opts.aliases.clear();
            rec.network = opts.request.display_name();
        } else if force {
            return Ok(());
        } else {
            return Err(NetError::NotConnected {
                container: rec.name.clone(),
                network: config.name,
            }
            .into());
        }
        self.containers.save(&rec)?;
        Ok(())
    }
}

//! `network connect` and `network disconnect`: a container joins or leaves a user-defined
//! network. A container is on the network it starts on and on each it was connected to
//! since: a running one gets (or loses) a further interface at once, through the network
//! daemon of the network it started on; each start joins them again.

use crate::net::netns;
use crate::net::{
    self, Connected, Endpoint, NetError, NetworkConfig, NetworkRequest, NetworkStore,
};
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
        if rec.network == config.name || rec.connected.iter().any(|c| c.network == config.name) {
            return Err(NetError::AlreadyConnected {
                container: rec.name.clone(),
                network: config.name,
            }
            .into());
        }
        let request = rec.network_options.clone().unwrap_or_default().request;
        if matches!(request, NetworkRequest::None | NetworkRequest::Host) {
            return Err(cannot(
                &rec,
                &config.name,
                format!(
                    "it runs with --network {}, which has no network of its own to join",
                    rec.network
                ),
            ));
        }
        let on_own_network = matches!(request, NetworkRequest::Named(_));
        if rec.isolation == Isolation::Vm && on_own_network {
            return Err(cannot(
                &rec,
                &config.name,
                format!(
                    "a microVM is on the one network it starts on: disconnect it from {} first",
                    rec.network
                ),
            ));
        }
        if ContainerStore::is_running(&rec) {
            let pid = rec.pid.filter(|_| on_own_network).ok_or_else(|| {
                cannot(&rec, &config.name, format!(
                    "it runs on the default network, whose namespace berth cannot reach: stop it (`docker stop {0}`), connect it, and start it again, or run it with --network {1}",
                    rec.name, config.name
                ))
            })?;
            let endpoint = self.join_running(&rec, pid, &config, aliases)?;
            rec.connected.push(Connected {
                network: config.name.clone(),
                aliases: aliases.to_vec(),
                pid: Some(pid),
                endpoint: Some(endpoint),
            });
        } else if on_own_network {
            // Joined after the network it starts on, at each start.
            rec.connected.push(Connected {
                network: config.name.clone(),
                aliases: aliases.to_vec(),
                pid: None,
                endpoint: None,
            });
        } else {
            // From the default network onto this one: it starts here.
            let opts = rec.network_options.get_or_insert_with(Default::default);
            opts.request = NetworkRequest::Named(config.name.clone());
            opts.aliases = aliases.to_vec();
            rec.network = config.name.clone();
        }
        self.containers.save(&rec)?;
        Ok(())
    }

    /// Asks the network daemon to put the running container `pid` on `config` too.
    fn join_running(
        &self,
        rec: &ContainerRecord,
        pid: i32,
        config: &NetworkConfig,
        aliases: &[String],
    ) -> Result<Endpoint, EngineError> {
        let mut names = vec![rec.name.clone(), rec.id[..12].to_string()];
        for a in aliases {
            if !names.contains(a) {
                names.push(a.clone());
            }
        }
        let hosts = self.containers.dir(&rec.id).join("etc").join("hosts");
        let ip = netns::connect_running(&self.dirs, pid, config.clone(), names, hosts)?;
        Ok(Endpoint {
            network_id: config.id.clone(),
            ip,
            prefix_len: config.prefix,
            gateway: config.gateway,
            mac: net::mac_for(ip),
            aliases: aliases.to_vec(),
        })
    }

    /// Joins the networks `rec` was connected to, once its run (`rec.pid`) is on the network
    /// it starts on. One that cannot be joined (removed since) is reported and left out of
    /// this run; the start goes on.
    pub(super) fn rejoin_networks(&self, rec: &mut ContainerRecord) {
        let Some(pid) = rec.pid else { return };
        let store = NetworkStore::new(&self.dirs);
        let mut connected = std::mem::take(&mut rec.connected);
        for c in &mut connected {
            c.pid = Some(pid);
            c.endpoint = match store
                .get(&c.network)
                .map_err(EngineError::from)
                .and_then(|config| self.join_running(rec, pid, &config, &c.aliases))
            {
                Ok(e) => Some(e),
                Err(e) => {
                    eprintln!(
                        "berth: container {} did not join network {}: {e}",
                        rec.name, c.network
                    );
                    None
                }
            };
        }
        rec.connected = connected;
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
        let joined = Connected::of_run(&rec).any(|(c, _)| c.network == config.name);
        let connected = rec.connected.iter().any(|c| c.network == config.name);
        let started_on = rec.network == config.name;
        if !connected && !started_on {
            if force {
                return Ok(());
            }
            return Err(NetError::NotConnected {
                container: rec.name.clone(),
                network: config.name,
            }
            .into());
        }
        if running && (joined || started_on) {
            let pid = rec.pid.unwrap_or_default();
            netns::disconnect_running(&self.dirs, pid, &config.id)?;
        }
        if connected {
            rec.connected.retain(|c| c.network != config.name);
        } else if running {
            // Off the network it started on, for this run.
            rec.endpoint = None;
        } else {
            // It starts on the default network from now on, and on nothing it was connected
            // to since: the default network's namespace is out of the daemon's reach.
            let opts = rec.network_options.get_or_insert_with(Default::default);
            opts.request = NetworkRequest::Default;
            opts.aliases.clear();
            rec.network = opts.request.display_name();
            rec.connected.clear();
        }
        self.containers.save(&rec)?;
        Ok(())
    }
}

//! User-defined networks on disk: `$XDG_DATA_HOME/berth/networks/NAME.json`, one file per
//! network (written to a temporary file and renamed), each with a subnet of its own.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NetError;

/// Names that `--network` takes for other things.
const RESERVED: &[&str] = &[
    "none",
    "host",
    "slirp4netns",
    "pasta",
    "bridge",
    "private",
    "default",
];

/// Where subnets come from when none is given: 10.89.N.0/24.
const POOL: [u8; 2] = [10, 89];

/// A user-defined network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub name: String,
    pub id: String,
    pub driver: String,
    /// The network address and prefix length.
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// The bridge's address, the containers' default route.
    pub gateway: Ipv4Addr,
    pub created: u64,
    /// `--label` (Docker's `Labels`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl NetworkConfig {
    /// `10.89.1.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.subnet, self.prefix)
    }

    /// The bridge's interface name in the rootless network namespace.
    pub fn bridge(&self) -> String {
        format!("brth{}", &self.id[..8])
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = mask(self.prefix);
        u32::from(ip) & mask == u32::from(self.subnet) & mask
    }

    /// The `n`th host address (1 is the gateway); None past the end of the subnet.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix as u32);
        if n == 0 || n as u64 >= size - 1 {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.subnet) + n))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

/// Whether `name` can name a network (the container name rules).
pub fn valid_name(name: &str) -> bool {
    crate::state::valid_name(name)
}

/// Parses `A.B.C.D/N` (N from 16 to 28).
pub fn parse_subnet(s: &str) -> Result<(Ipv4Addr, u8), NetError> {
    let bad = |why: &str| NetError::Store(format!("invalid --subnet {s:?}: {why}"));
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| bad("expected A.B.C.D/N, e.g. 10.90.0.0/24"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad("not an IPv4 address"))?;
    let len: u8 = len.parse().map_err(|_| bad("not a prefix length"))?;
    if !(16..=28).contains(&len) {
        return Err(bad("the prefix length must be from 16 to 28"));
    }
    Ok((Ipv4Addr::from(u32::from(ip) & mask(len)), len))
}

/// The networks directory.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    root: PathBuf,
}

impl NetworkStore {
    pub fn new(dirs: &crate::paths::Dirs) -> NetworkStore {
        NetworkStore {
            root: dirs.data.join("networks"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.json"))
    }

    /// Every network, by name.
    pub fn list(&self) -> Vec<NetworkConfig> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return vec![];
        };
        let mut out: Vec<NetworkConfig> = rd
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The network `key` names (by name, or id prefix).
    pub fn get(&self, key: &str) -> Result<NetworkConfig, NetError> {
        self.list()
            .into_iter()
            .find(|n| n.name == key || (key.len() >= 3 && n.id.starts_with(key)))
            .ok_or_else(|| NetError::NoSuchNetwork(key.to_string()))
    }

    /// Creates a network, with `subnet` or the next free /24 of 10.89.0.0/16.
    pub fn create(
        &self,
        name: &str,
        subnet: Option<(Ipv4Addr, u8)>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<NetworkConfig, NetError> {
        if !valid_name(name) {
            return Err(NetError::Store(format!(
                "invalid network name {name:?}: use letters, digits, '_', '.' and '-' (starting with a letter or digit)"
            )));
        }
        if RESERVED.contains(&name) {
            return Err(NetError::Store(format!(
                "{name:?} is a built-in network mode: pick another name"
            )));
        }
        std::fs::create_dir_all(&self.root).map_err(super::io("creating", &self.root))?;
        let _lock = super::netns::flock(&self.root.join(".lock"), true)?
            .ok_or_else(|| NetError::Store("cannot lock the networks directory".into()))?;
        let existing = self.list();
        if existing.iter().any(|n| n.name == name) {
            return Err(NetError::Exists(name.to_string()));
        }
        let overlaps = |ip: Ipv4Addr, len: u8| {
            existing.iter().any(|n| {
                let m = mask(len.min(n.prefix));
                u32::from(ip) & m == u32::from(n.subnet) & m
            })
        };
        let (subnet, prefix) = match subnet {
            Some((ip, len)) => {
                if overlaps(ip, len) {
                    return Err(NetError::Store(format!(
                        "subnet {ip}/{len} overlaps another network's: pick another (`berth network ls` shows them)"
                    )));
                }
                (ip, len)
            }
            None => (1..=254u8)
                .map(|n| Ipv4Addr::new(POOL[0], POOL[1], n, 0))
                .find(|ip| !overlaps(*ip, 24))
                .map(|ip| (ip, 24))
                .ok_or_else(|| {
                    NetError::Store(
                        "no free subnet left in 10.89.0.0/16: remove a network or give --subnet"
                            .into(),
                    )
                })?,
        };
        let mut id = String::new();
        while id.len() < 64 {
            id.push_str(&format!("{:016x}", rand_u64()));
        }
        let config = NetworkConfig {
            name: name.to_string(),
            id,
            driver: "bridge".into(),
            subnet,
            prefix,
            gateway: Ipv4Addr::from(u32::from(subnet) + 1),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            labels,
        };
        let path = self.path(name);
        let tmp = path.with_extension("json.tmp");
        let data =
            serde_json::to_vec_pretty(&config).map_err(|e| NetError::Store(e.to_string()))?;
        std::fs::write(&tmp, data).map_err(super::io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(super::io("renaming", &path))?;
        Ok(config)
    }

    /// Deletes a network's definition.
    pub fn remove(&self, name: &str) -> Result<(), NetError> {
        let config = self.get(name)?;
        let path = self.path(&config.name);
        std::fs::remove_file(&path).map_err(super::io("removing", &path))
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ (std::process::id() as u64) << 32;
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &std::path::Path) -> crate::paths::Dirs {
        crate::paths::Dirs {
            data: root.join("data"),
            runtime: root.join("run"),
            cache: root.join("cache"),
        }
    }

    #[test]
    fn networks_get_distinct_subnets() {
        let tmp = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(&dirs(tmp.path()));
        let a = store.create("front", None, Default::default()).unwrap();
        let b = store.create("back", None, Default::default()).unwrap();
        assert_eq!(a.cidr(), "10.89.1.0/24");
        assert_eq!(b.cidr(), "10.89.2.0/24");
        assert_eq!(b.gateway, Ipv4Addr::new(10, 89, 2, 1));
        assert!(store.create("front", None, Default::default()).is_err());
        assert!(store.create("host", None, Default::default()).is_err());
        assert!(store
            .create(
                "over",
                Some(parse_subnet("10.89.1.128/25").unwrap()),
                Default::default()
            )
            .is_err());
        let c = store
            .create(
                "mine",
                Some(parse_subnet("10.90.0.7/24").unwrap()),
                Default::default(),
            )
            .unwrap();
        assert_eq!(c.cidr(), "10.90.0.0/24");
        assert_eq!(store.get("back").unwrap().id, b.id);
        store.remove("back").unwrap();
        assert!(store.get("back").is_err());
        assert_eq!(store.list().len(), 2);
    }

    #[test]
    fn hosts_stay_inside_the_subnet() {
        let (subnet, prefix) = parse_subnet("10.90.0.0/28").unwrap();
        let n = NetworkConfig {
            name: "x".into(),
            id: "0".repeat(64),
            driver: "bridge".into(),
            subnet,
            prefix,
            gateway: Ipv4Addr::new(10, 90, 0, 1),
            created: 0,
            labels: Default::default(),
        };
        assert_eq!(n.host(2), Some(Ipv4Addr::new(10, 90, 0, 2)));
        assert_eq!(n.host(14), Some(Ipv4Addr::new(10, 90, 0, 14)));
        assert_eq!(n.host(15), None, "the broadcast address is not a host");
        assert!(n.contains(Ipv4Addr::new(10, 90, 0, 9)));
        assert!(!n.contains(Ipv4Addr::new(10, 90, 1, 9)));
        assert_eq!(n.bridge(), "brth00000000");
    }
}

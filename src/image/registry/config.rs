//! Registry settings: `$XDG_CONFIG_HOME/berth/registries.toml` (or `.json`).
//!
//! The keys are a subset of podman's `registries.conf` (version 2), so a
//! file written for one reads the same in the other:
//!
//! ```toml
//! unqualified-search-registries = ["registry.example.com"]  # first = default for short names
//!
//! [[registry]]
//! location = "registry.example.com:5000"   # host[:port][/path], matched as a name prefix
//! insecure = true                          # plain http (no TLS)
//!
//! [[registry]]
//! prefix = "docker.io"                     # names starting with this...
//! location = "docker.io"                   # ...come from here (default: prefix)
//! [[registry.mirror]]
//! location = "mirror.example.com:5000/hub" # tried first, in order, for pulls
//! insecure = true
//! ```
//!
//! The JSON form has the same keys. Unknown keys are ignored (podman's file
//! has more); every location is checked, and a bad one is an error naming the file.
//! Registries on localhost and 127.0.0.0/8 are always insecure, as in Docker.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::RegistryError;
use crate::image::reference::{self, Reference, ReferenceError, DEFAULT_REGISTRY};

/// The settings berth uses when it talks to registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConfig {
    /// Registries tried for names without a registry; berth uses the first.
    pub search: Vec<String>,
    /// Per-registry settings, matched by longest name prefix.
    pub registries: Vec<RegistryEntry>,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    /// The name prefix it applies to (`host[:port][/path]`).
    pub prefix: String,
    /// Where names under the prefix are fetched from (the prefix replaced by it).
    pub location: String,
    /// Plain http instead of https.
    pub insecure: bool,
    /// Pull mirrors, tried in order before `location`.
    pub mirrors: Vec<Mirror>,
}

/// One `[[registry.mirror]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port][/path]`.
    pub location: String,
    /// Plain http instead of https.
    pub insecure: bool,
}

/// Where one pull or push goes: a registry host and the repository on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` to connect to.
    pub host: String,
    /// The repository on that host.
    pub repository: String,
    /// Plain http instead of https.
    pub insecure: bool,
    /// A mirror (a failure there moves on to the next endpoint).
    pub mirror: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    unqualified_search_registries: Vec<String>,
    #[serde(default)]
    registry: Vec<RawRegistry>,
}

#[derive(Deserialize)]
struct RawRegistry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Deserialize)]
struct RawMirror {
    location: String,
    #[serde(default)]
    insecure: bool,
}

impl RegistriesConfig {
    /// The settings file in the user's config directory, if there is one.
    pub fn default_paths() -> [PathBuf; 2] {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/"))
                    .join(".config")
            })
            .join("berth");
        [base.join("registries.toml"), base.join("registries.json")]
    }

    /// Reads the user's settings; no file means the defaults.
    pub fn load() -> Result<RegistriesConfig, RegistryError> {
        let [toml_path, json_path] = Self::default_paths();
        match (toml_path.is_file(), json_path.is_file()) {
            (true, true) => Err(RegistryError::Config {
                path: toml_path,
                reason: format!(
                    "{} exists too; keep one of the two files",
                    json_path.display()
                ),
            }),
            (true, false) => Self::read(&toml_path),
            (false, true) => Self::read(&json_path),
            (false, false) => Ok(RegistriesConfig::default()),
        }
    }

    /// Reads a `.toml` or `.json` settings file.
    pub fn read(path: &Path) -> Result<RegistriesConfig, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let json = path.extension().is_some_and(|e| e == "json");
        Self::parse(&text, json).map_err(|reason| RegistryError::Config {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses settings text, TOML or JSON.
    pub fn parse(text: &str, json: bool) -> Result<RegistriesConfig, String> {
        let raw: RawConfig = if json {
            serde_json::from_str(text).map_err(|e| e.to_string())?
        } else {
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?
        };
        for s in &raw.unqualified_search_registries {
            check_location(s, false)?;
        }
        let mut registries = Vec::new();
        for r in raw.registry {
            let (prefix, location) = match (r.prefix, r.location) {
                (Some(p), Some(l)) => (p, l),
                (Some(p), None) => (p.clone(), p),
                (None, Some(l)) => (l.clone(), l),
                (None, None) => return Err("a [[registry]] needs a location or a prefix".into()),
            };
            check_location(&prefix, true)?;
            check_location(&location, true)?;
            let mut mirrors = Vec::new();
            for m in r.mirror {
                check_location(&m.location, true)?;
                mirrors.push(Mirror {
                    location: m.location,
                    insecure: m.insecure,
                });
            }
            registries.push(RegistryEntry {
                prefix,
                location,
                insecure: r.insecure,
                mirrors,
            });
        }
        Ok(RegistriesConfig {
            search: raw.unqualified_search_registries,
            registries,
        })
    }

    /// The registry of names that name none.
    pub fn default_registry(&self) -> &str {
        self.search.first().map_or(DEFAULT_REGISTRY, String::as_str)
    }

    /// Parses a user's reference, putting names without a registry on the
    /// default search registry (Docker's rules when none is configured).
    pub fn qualify(&self, input: &str) -> Result<Reference, ReferenceError> {
        let registry = self.default_registry();
        if registry != DEFAULT_REGISTRY && !names_registry(input) {
            return reference::parse(&format!("{registry}/{input}"));
        }
        reference::parse(input)
    }

    /// Whether `host` is reached over plain http.
    pub fn is_insecure(&self, host: &str) -> bool {
        is_local(host)
            || self
                .registries
                .iter()
                .any(|r| r.insecure && location_host(&r.location) == host)
            || self
                .registries
                .iter()
                .flat_map(|r| &r.mirrors)
                .any(|m| m.insecure && location_host(&m.location) == host)
    }

    /// Where to pull `r` from: its mirrors in order, then its location.
    pub fn pull_endpoints(&self, r: &Reference) -> Vec<Endpoint> {
        let name = r.name();
        let Some(entry) = self.entry_for(&name) else {
            return vec![self.endpoint(&name, false, false)];
        };
        let rest = &name[entry.prefix.len()..];
        let mut out: Vec<Endpoint> = entry
            .mirrors
            .iter()
            .map(|m| self.endpoint(&format!("{}{rest}", m.location), m.insecure, true))
            .collect();
        out.push(self.endpoint(&format!("{}{rest}", entry.location), entry.insecure, false));
        out
    }

    /// Where to push `r`: its location (mirrors are for pulls only).
    pub fn push_endpoint(&self, r: &Reference) -> Endpoint {
        self.pull_endpoints(r)
            .pop()
            .unwrap_or_else(|| self.endpoint(&r.name(), false, false))
    }

    fn entry_for(&self, name: &str) -> Option<&RegistryEntry> {
        self.registries
            .iter()
            .filter(|e| {
                name == e.prefix
                    || name
                        .strip_prefix(e.prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|e| e.prefix.len())
    }

    fn endpoint(&self, name: &str, insecure: bool, mirror: bool) -> Endpoint {
        let (host, repository) = name.split_once('/').unwrap_or((name, ""));
        Endpoint {
            host: host.to_string(),
            repository: repository.to_string(),
            insecure: insecure || self.is_insecure(host),
            mirror,
        }
    }
}

/// Whether the first component of `input` is a registry (Docker's rule).
fn names_registry(input: &str) -> bool {
    match input.split_once('/') {
        Some((first, _)) => {
            first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase())
        }
        None => false,
    }
}

/// `host[:port]` of a location.
fn location_host(location: &str) -> &str {
    location.split_once('/').map_or(location, |(h, _)| h)
}

/// localhost, 127.0.0.0/8 and ::1 are reached over http, as Docker does.
pub(crate) fn is_local(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A location is a registry host, optionally with a repository path.
fn check_location(location: &str, path_allowed: bool) -> Result<(), String> {
    let bad = |why: &str| Err(format!("registry location \"{location}\" {why}"));
    if location.is_empty() {
        return bad("is empty");
    }
    if location.contains("://") {
        return bad("must not have a scheme: write `host[:port]`, and `insecure = true` for http");
    }
    let (host, path) = location.split_once('/').unwrap_or((location, ""));
    if !path_allowed && !path.is_empty() {
        return bad("must be a host name, without a path");
    }
    // The reference grammar checks host and path: parse `location/x`.
    match reference::parse(&format!("{host}/x")) {
        Ok(r)
            if r.registry == host
                || (host == "index.docker.io" && r.registry == DEFAULT_REGISTRY) => {}
        _ => return bad("is not a valid `host[:port]`"),
    }
    if !path.is_empty() && reference::parse(&format!("{host}/{path}")).is_err() {
        return bad("has an invalid repository path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
unqualified-search-registries = ["registry.example.com"]
short-name-mode = "enforcing"   # podman's, ignored

[[registry]]
location = "localhost:5000"
insecure = true

[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.example.com:5000/hub"
insecure = true
[[registry.mirror]]
location = "mirror2.example.com"

[[registry]]
prefix = "docker.io/library/special"
location = "special.example.com/x"
"#;

    #[test]
    fn parses_toml_and_json_alike() {
        let t = RegistriesConfig::parse(TOML, false).unwrap();
        assert_eq!(t.search, ["registry.example.com"]);
        assert_eq!(t.registries.len(), 3);
        assert_eq!(t.registries[1].mirrors.len(), 2);
        assert!(t.registries[1].mirrors[0].insecure);
        let json = r#"{"unqualified-search-registries": ["registry.example.com"],
            "registry": [{"location": "localhost:5000", "insecure": true},
                         {"prefix": "docker.io", "location": "docker.io", "mirror": [
                            {"location": "mirror.example.com:5000/hub", "insecure": true},
                            {"location": "mirror2.example.com"}]},
                         {"prefix": "docker.io/library/special", "location": "special.example.com/x"}]}"#;
        assert_eq!(RegistriesConfig::parse(json, true).unwrap(), t);
        assert_eq!(
            RegistriesConfig::parse("", false).unwrap(),
            RegistriesConfig::default()
        );
    }

    #[test]
    fn rejects_bad_settings() {
        for bad in [
            "unqualified-search-registries = \"docker.io\"",
            "[[registry]]\nlocation = \"https://x.example.com\"",
            "[[registry]]\nlocation = \"bad host\"",
            "[[registry]]\ninsecure = true",
            "unqualified-search-registries = [\"x.example.com/path\"]",
            "[[registry]]\nlocation = \"x.example.com\"\n[[registry.mirror]]\nlocation = \"\"",
            "[[registry",
        ] {
            let err = RegistriesConfig::parse(bad, false).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }

    #[test]
    fn short_names_use_the_search_registry() {
        let none = RegistriesConfig::default();
        assert_eq!(
            none.qualify("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        let c = RegistriesConfig::parse(TOML, false).unwrap();
        assert_eq!(
            c.qualify("busybox:1").unwrap().to_string(),
            "registry.example.com/busybox:1"
        );
        assert_eq!(
            c.qualify("team/app").unwrap().to_string(),
            "registry.example.com/team/app:latest"
        );
        assert_eq!(
            c.qualify("localhost:5000/a").unwrap().to_string(),
            "localhost:5000/a:latest"
        );
        assert_eq!(
            c.qualify("docker.io/busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn endpoints_follow_mirrors_and_prefixes() {
        let c = RegistriesConfig::parse(TOML, false).unwrap();
        let r = reference::parse("busybox").unwrap();
        let eps = c.pull_endpoints(&r);
        let got: Vec<_> = eps
            .iter()
            .map(|e| (e.host.as_str(), e.repository.as_str(), e.insecure, e.mirror))
            .collect();
        assert_eq!(
            got,
            [
                ("mirror.example.com:5000", "hub/library/busybox", true, true),
                ("mirror2.example.com", "library/busybox", false, true),
                ("docker.io", "library/busybox", false, false),
            ]
        );
        assert_eq!(c.push_endpoint(&r).host, "docker.io");
        // The longest prefix wins.
        let special = reference::parse("special").unwrap();
        let eps = c.pull_endpoints(&special);
        assert_eq!(eps.len(), 1);
        assert_eq!(
            (eps[0].host.as_str(), eps[0].repository.as_str()),
            ("special.example.com", "x")
        );
        // Prefixes end at a path boundary.
        let other = reference::parse("docker.io/library/specialist").unwrap();
        assert_eq!(c.pull_endpoints(&other).len(), 3);
        let local = reference::parse("localhost:5000/a/b:1").unwrap();
        assert!(c.pull_endpoints(&local)[0].insecure);
    }

    #[test]
    fn local_registries_are_insecure() {
        let c = RegistriesConfig::default();
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:41234",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(c.is_insecure(host), "{host}");
        }
        for host in [
            "docker.io",
            "quay.io:443",
            "10.0.0.1:5000",
            "localhost.example.com",
        ] {
            assert!(!c.is_insecure(host), "{host}");
        }
    }
}

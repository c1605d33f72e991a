//! `/networks/...`: list, inspect, create, remove, prune. berth's default network (slirp4netns
//! or pasta, one stack per container) is Docker's `bridge`; `host` and `none` are the other
//! built-in networks; the rest are berth's user-defined networks (`berth network create`).

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bollard_stubs::models::{
    Ipam, IpamConfig, Network, NetworkConnectRequest, NetworkContainer, NetworkCreateRequest,
    NetworkCreateResponse, NetworkDisconnectRequest, NetworkPruneResponse,
};
use serde::Deserialize;
use sha2::Digest;

use super::containers::parse_filters;
use super::convert::network_name;
use super::error::{blocking, ApiError};
use super::State;
use crate::engine::filters::{network_matches, NetworkFacts};
use crate::engine::EngineError;
use crate::net::{slirp4netns, Connected, NetworkConfig};
use crate::state::{ContainerRecord, ContainerStore};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/", delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

/// Docker's built-in networks, as berth has them.
pub const BUILTIN: [&str; 3] = ["bridge", "host", "none"];

/// The id of a built-in network: the same on every call, as clients compare ids.
pub fn builtin_id(name: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("berth-network-{name}")))
}

/// A 64-hex endpoint id for container `id` on network `net` (stable across requests).
fn endpoint_id(id: &str, net: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("{net}/{id}")))
}

fn rfc3339(secs: u64) -> String {
    crate::clock::rfc3339(secs as i128 * 1_000_000_000)
}

/// One network's containers (those running on it), as `Network.Containers` has them.
fn members(recs: &[ContainerRecord], net: &str) -> HashMap<String, NetworkContainer> {
    recs.iter()
        .filter(|r| ContainerStore::is_running(r))
        .filter_map(|r| {
            let joined = Connected::of_run(r).find(|(c, _)| c.network == net);
            match joined {
                Some((_, e)) => Some((r, Some(e))),
                None if network_name(r) == net => Some((r, r.endpoint.as_ref())),
                None => None,
            }
        })
        .map(|(r, e)| {
            let c = NetworkContainer {
                name: Some(r.name.clone()),
                endpoint_id: Some(endpoint_id(&r.id, net)),
                mac_address: Some(e.map(|e| e.mac.clone()).unwrap_or_default()),
                ipv4_address: Some(
                    e.map(|e| format!("{}/{}", e.ip, e.prefix_len))
                        .unwrap_or_default(),
                ),
                ipv6_address: Some(String::new()),
            };
            (r.id.clone(), c)
        })
        .collect()
}

fn ipam(subnet: String, gateway: String) -> Ipam {
    Ipam {
        driver: Some("default".into()),
        config: Some(vec![IpamConfig {
            subnet: Some(subnet),
            gateway: Some(gateway),
            ..IpamConfig::default()
        }]),
        options: Some(HashMap::new()),
    }
}

/// A built-in network in Docker's shape.
fn builtin(name: &str, recs: &[ContainerRecord]) -> Network {
    let (driver, ipam) = match name {
        "bridge" => (
            "bridge",
            ipam(
                format!(
                    "{}/{}",
                    std::net::Ipv4Addr::from(
                        u32::from(slirp4netns::GATEWAY)
                            & (u32::MAX << (32 - slirp4netns::PREFIX_LEN))
                    ),
                    slirp4netns::PREFIX_LEN
                ),
                slirp4netns::GATEWAY.to_string(),
            ),
        ),
        other => (
            if other == "host" { "host" } else { "null" },
            Ipam {
                driver: Some("default".into()),
                config: Some(vec![]),
                options: None,
            },
        ),
    };
    shape(
        name,
        builtin_id(name),
        0,
        driver,
        ipam,
        &BTreeMap::new(),
        members(recs, name),
    )
}

/// A user-defined network in Docker's shape.
fn user_defined(n: &NetworkConfig, recs: &[ContainerRecord]) -> Network {
    shape(
        &n.name,
        n.id.clone(),
        n.created,
        &n.driver,
        ipam(n.cidr(), n.gateway.to_string()),
        &n.labels,
        members(recs, &n.name),
    )
}

fn shape(
    name: &str,
    id: String,
    created: u64,
    driver: &str,
    ipam: Ipam,
    labels: &BTreeMap<String, String>,
    containers: HashMap<String, NetworkContainer>,
) -> Network {
    Network {
        name: Some(name.to_string()),
        id: Some(id),
        created: Some(rfc3339(created)),
        scope: Some("local".into()),
        driver: Some(driver.to_string()),
        enable_ipv4: Some(true),
        enable_ipv6: Some(false),
        ipam: Some(ipam),
        internal: Some(false),
        attachable: Some(false),
        ingress: Some(false),
        config_only: Some(false),
        containers: Some(containers),
        options: Some(HashMap::new()),
        labels: Some(labels.clone().into_iter().collect()),
        ..Network::default()
    }
}

/// Every network, the built-in ones first.
fn all_networks(d: &State) -> Vec<Network> {
    let recs = d.engine.containers();
    BUILTIN
        .iter()
        .map(|n| builtin(n, &recs))
        .chain(d.engine.networks().iter().map(|n| user_defined(n, &recs)))
        .collect()
}

/// The network `key` names: its name, its id, or a prefix of its id.
fn find(d: &State, key: &str) -> Result<Network, ApiError> {
    let all = all_networks(d);
    let by_name = all.iter().find(|n| n.name.as_deref() == Some(key));
    let by_id = || {
        let hits: Vec<&Network> = all
            .iter()
            .filter(|n| n.id.as_deref().is_some_and(|id| id.starts_with(key)))
            .collect();
        match hits.as_slice() {
            [one] => Ok(Some(*one)),
            [] => Ok(None),
            _ => Err(ApiError::bad_request(format!(
                "network {key} is ambiguous ({} matches): give more of its id or its name",
                hits.len()
            ))),
        }
    };
    match by_name {
        Some(n) => Ok(n.clone()),
        None if !key.is_empty() => by_id()?.cloned().ok_or_else(|| missing(key)),
        None => Err(missing(key)),
    }
}

fn missing(key: &str) -> ApiError {
    ApiError::not_found(format!(
        "network {key} not found: `docker network ls` lists the networks, `docker network create {key}` makes one"
    ))
}

/// A list's or a prune's query: Docker's `filters`.
#[derive(Deserialize)]
pub(super) struct FiltersQuery {
    filters: Option<String>,
}

impl FiltersQuery {
    pub fn parsed(&self) -> Result<Vec<(String, String)>, ApiError> {
        parse_filters(self.filters.as_deref())
    }
}

async fn list(
    Extract(d): Extract<State>,
    Query(q): Query<FiltersQuery>,
) -> Result<Json<Vec<Network>>, ApiError> {
    let filters = q.parsed()?;
    blocking(move || {
        let mut out = Vec::new();
        for n in all_networks(&d) {
            let labels: BTreeMap<String, String> =
                n.labels.clone().unwrap_or_default().into_iter().collect();
            let name = n.name.clone().unwrap_or_default();
            let facts = NetworkFacts {
                name: &name,
                id: n.id.as_deref().unwrap_or_default(),
                driver: n.driver.as_deref().unwrap_or_default(),
                builtin: BUILTIN.contains(&name.as_str()),
                labels: &labels,
            };
            if network_matches(&facts, &filters)? {
                out.push(n);
            }
        }
        Ok::<_, EngineError>(out)
    })
    .await
    .map(Json)
}

async fn inspect(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
) -> Result<Json<Network>, ApiError> {
    tokio::task::spawn_blocking(move || find(&d, &key))
        .await?
        .map(Json)
}

/// The subnet a create body asks for (berth makes IPv4 bridges, one subnet each, the
/// gateway the subnet's first address).
fn requested_subnet(req: &NetworkCreateRequest) -> Result<Option<String>, ApiError> {
    let configs = req
        .ipam
        .as_ref()
        .and_then(|i| i.config.clone())
        .unwrap_or_default();
    let config = match configs.as_slice() {
        [] => return Ok(None),
        [one] => one,
        _ => {
            return Err(ApiError::bad_request(
                "berth's networks have one IPv4 subnet each: give one IPAM config",
            ))
        }
    };
    let Some(subnet) = config.subnet.clone().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let (ip, prefix) = crate::net::store::parse_subnet(&subnet).map_err(EngineError::from)?;
    if let Some(gw) = config.gateway.as_deref().filter(|g| !g.is_empty()) {
        let first = std::net::Ipv4Addr::from(u32::from(ip) + 1);
        if gw.parse::<std::net::Ipv4Addr>().ok() != Some(first) {
            return Err(ApiError::bad_request(format!(
                "gateway {gw}: berth's bridge is the subnet's first address, {first}: leave the gateway out or give {first}"
            )));
        }
    }
    if config.ip_range.as_deref().is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::bad_request(
            "berth hands out addresses from the whole subnet: leave --ip-range out",
        ));
    }
    Ok(Some(format!("{ip}/{prefix}")))
}

/// A request body in Docker's model; what does not fit is the client's mistake (400).
pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body does not fit: {e}")))
}

/// Refuses a driver other than berth's own (`ours`, or none given); `why` has a `{}` for it.
pub(super) fn only_driver(given: Option<&str>, ours: &str, why: &str) -> Result<(), ApiError> {
    match given {
        None | Some("") => Ok(()),
        Some(d) if d == ours => Ok(()),
        Some(other) => Err(ApiError::bad_request(
            why.replace("{}", &format!("{other:?}")),
        )),
    }
}

async fn create(
    Extract(d): Extract<State>,
    body: Bytes,
) -> Result<(StatusCode, Json<NetworkCreateResponse>), ApiError> {
    let req: NetworkCreateRequest = json_body(&body)?;
    only_driver(
        req.driver.as_deref(),
        "bridge",
        "network driver {} is not available: berth's networks are bridges (leave --driver out)",
    )?;
    if req.enable_ipv6 == Some(true) {
        return Err(ApiError::bad_request(
            "berth's networks are IPv4 only: leave --ipv6 out",
        ));
    }
    if req.internal == Some(true) {
        return Err(ApiError::bad_request(
            "berth's networks always reach the host's network: leave --internal out",
        ));
    }
    if let Some(k) = req.options.iter().flatten().map(|(k, _)| k).next() {
        return Err(ApiError::bad_request(format!(
            "network option {k:?} is not one berth's bridges take: leave --opt out"
        )));
    }
    if BUILTIN.contains(&req.name.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} is a pre-defined network and cannot be created: pick another name",
                req.name
            ),
        ));
    }
    let subnet = requested_subnet(&req)?;
    let labels = req.labels.clone().unwrap_or_default().into_iter().collect();
    let n = blocking(move || {
        d.engine
            .network_create(&req.name, subnet.as_deref(), labels)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(NetworkCreateResponse {
            id: n.id,
            warning: String::new(),
        }),
    ))
}

async fn remove(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let name = match find(&d, &key) {
            Ok(n) => n.name.unwrap_or_default(),
            Err(e) => return Ok(Err(e)),
        };
        if BUILTIN.contains(&name.as_str()) {
            return Ok(Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{name} is a pre-defined network and cannot be removed"),
            )));
        }
        d.engine.network_remove(&name, false).map(|_| Ok(()))
    })
    .await??;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune(
    Extract(d): Extract<State>,
    Query(q): Query<FiltersQuery>,
) -> Result<Json<NetworkPruneResponse>, ApiError> {
    let filters = q.parsed()?;
    let now = crate::clock::now_nanos();
    let mut until = None;
    for (k, v) in &filters {
        match k.as_str() {
            "label" | "label!" => {}
            "until" => {
                until = Some(crate::clock::parse_since(v, now).ok_or_else(|| {
                    ApiError::bad_request(format!(
                    "invalid until filter {v:?}: a time (RFC 3339 or seconds) or a duration (10m)"
                ))
                })?)
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter {other:?}: networks are pruned by label, label! and until"
                )))
            }
        }
    }
    let deleted = blocking(move || {
        d.engine.network_prune(|n| {
            let old_enough = until.is_none_or(|u| (n.created as i128) * 1_000_000_000 < u);
            let labelled = filters.iter().all(|(k, v)| match k.as_str() {
                "label" => crate::engine::filters::label_matches(&n.labels, v),
                "label!" => !crate::engine::filters::label_matches(&n.labels, v),
                _ => true,
            });
            old_enough && labelled
        })
    })
    .await?;
    Ok(Json(NetworkPruneResponse {
        networks_deleted: Some(deleted),
    }))
}

/// The network `key` names, for connect and disconnect: a built-in one is not for joining.
fn joinable(d: &State, key: &str) -> Result<String, ApiError> {
    let name = find(d, key)?.name.unwrap_or_default();
    if BUILTIN.contains(&name.as_str()) {
        return Err(ApiError::bad_request(format!(
            "berth connects containers to user-defined networks, not to {name}: a container on none of them is on {name} (the default) unless created with --network none or host"
        )));
    }
    Ok(name)
}

async fn connect(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let req: NetworkConnectRequest = json_body(&body)?;
    let container = req
        .container
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("name the container to connect (Container)"))?;
    let aliases = req
        .endpoint_config
        .and_then(|e| e.aliases)
        .unwrap_or_default();
    blocking(move || {
        let name = match joinable(&d, &key) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        d.engine
            .network_connect(&name, &container, &aliases)
            .map(Ok)
    })
    .await??;
    Ok(StatusCode::OK)
}

async fn disconnect(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let req: NetworkDisconnectRequest = json_body(&body)?;
    let container = req
        .container
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("name the container to disconnect (Container)"))?;
    let force = req.force.unwrap_or(false);
    blocking(move || {
        let name = match joinable(&d, &key) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        d.engine
            .network_disconnect(&name, &container, force)
            .map(Ok)
    })
    .await??;
    Ok(StatusCode::OK)
}

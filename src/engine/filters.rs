//! Docker's list filters (`ps --filter`, `network ls --filter`, `volume ls --filter`, and the
//! API's `filters=`), for every front end:
//! values of one key are alternatives, keys must all hold, and each `label` must hold.

use crate::state::{ContainerRecord, Isolation, Status};

use super::{state_of, EngineError};

fn usage(msg: String) -> EngineError {
    EngineError::Usage(msg)
}

/// Whether `label` (`KEY` or `KEY=VALUE`) is among `labels`.
pub fn label_matches(labels: &std::collections::BTreeMap<String, String>, label: &str) -> bool {
    match label.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(label),
    }
}

/// Whether every filter holds: the values of one key are alternatives (`value` says whether
/// one holds), and each `label` must hold on its own.
fn all_hold(
    labels: &std::collections::BTreeMap<String, String>,
    filters: &[(String, String)],
    mut value: impl FnMut(&str, &str) -> Result<bool, EngineError>,
) -> Result<bool, EngineError> {
    let mut keys: Vec<&str> = filters.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let mut values = filters.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
        if key == "label" {
            // Every label asked for must be there, as Docker has it.
            if !values.all(|v| label_matches(labels, v)) {
                return Ok(false);
            }
            continue;
        }
        let mut any = false;
        for v in values {
            any |= value(key, v)?;
        }
        if !any {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `true`/`1` or `false`/`0`, for a filter that takes a boolean.
fn boolean(key: &str, v: &str) -> Result<bool, EngineError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(usage(format!(
            "invalid {key} filter {v:?}: use true or false"
        ))),
    }
}

/// Whether container `r` passes every filter (`KEY`, `VALUE` pairs as given).
pub fn container_matches(
    r: &ContainerRecord,
    filters: &[(String, String)],
) -> Result<bool, EngineError> {
    all_hold(&r.labels, filters, |key, v| {
        Ok(match key {
            "id" => r.id.starts_with(v),
            "name" => r.name.contains(v.trim_start_matches('/')),
            "status" => {
                if !["created", "restarting", "running", "exited", "dead", "paused", "removing"]
                    .contains(&v)
                {
                    return Err(usage(format!("invalid status filter {v:?}: use created, restarting, running, exited or dead")));
                }
                state_of(r).name() == v
            }
            "ancestor" => {
                r.image == v
                    || r.image.split(':').next() == Some(v)
                    || r.image_id
                        .trim_start_matches("sha256:")
                        .starts_with(v.trim_start_matches("sha256:"))
            }
            "exited" => {
                let code: i32 = v
                    .parse()
                    .map_err(|_| usage(format!("invalid exited filter {v:?}: give a number")))?;
                state_of(r) == Status::Exited && r.exit_code == Some(code)
            }
            "volume" => r.mounts.iter().any(|m| {
                m.name.as_deref() == Some(v) || m.destination.to_string_lossy() == v
            }),
            "isolation" => {
                let name = match r.isolation {
                    Isolation::Container => "container",
                    Isolation::Vm => "vm",
                };
                name == v
            }
            "network" => r.network == v,
            other => return Err(usage(format!(
                "unknown filter {other:?}: berth filters containers by id, name, label, status, ancestor, exited, volume, network, isolation"
            ))),
        })
    })
}

/// What a network filter looks at (a user-defined network, or one of the built-in
/// `bridge`, `host`, `none`).
pub struct NetworkFacts<'a> {
    pub name: &'a str,
    pub id: &'a str,
    pub driver: &'a str,
    pub builtin: bool,
    pub labels: &'a std::collections::BTreeMap<String, String>,
}

/// Whether a network passes every filter: `name` (part of the name), `id` (a prefix),
/// `label`, `driver`, `type` (`builtin` or `custom`).
pub fn network_matches(
    n: &NetworkFacts,
    filters: &[(String, String)],
) -> Result<bool, EngineError> {
    all_hold(n.labels, filters, |key, v| {
        Ok(match key {
            "name" => n.name.contains(v),
            "id" => n.id.starts_with(v),
            "driver" => n.driver == v,
            "type" => match v {
                "builtin" => n.builtin,
                "custom" => !n.builtin,
                _ => {
                    return Err(usage(format!(
                        "invalid type filter {v:?}: use builtin or custom"
                    )))
                }
            },
            other => {
                return Err(usage(format!(
                "unknown filter {other:?}: berth filters networks by name, id, label, driver, type"
            )))
            }
        })
    })
}

/// Whether volume `v` passes every filter: `name` (part of the name), `label`, `dangling`
/// (no container uses it), `driver` (`local`, berth's only one). The filters are checked
/// first with [`check_volume_filters`].
pub fn volume_matches(
    v: &crate::state::volumes::VolumeRecord,
    in_use: bool,
    filters: &[(String, String)],
) -> Result<bool, EngineError> {
    all_hold(&v.labels, filters, |key, value| {
        Ok(match key {
            "name" => v.name.contains(value),
            "dangling" => boolean(key, value)? != in_use,
            _ => value == "local",
        })
    })
}

/// Refuses a volume filter berth does not know, or a `dangling` that is not a boolean, also
/// where there is no volume to apply it to.
pub fn check_volume_filters(filters: &[(String, String)]) -> Result<(), EngineError> {
    for (key, value) in filters {
        match key.as_str() {
            "name" | "label" | "driver" => {}
            "dangling" => {
                boolean(key, value)?;
            }
            other => {
                return Err(usage(format!(
                "unknown filter {other:?}: berth filters volumes by name, label, dangling, driver"
            )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(labels: &[(&str, &str)]) -> ContainerRecord {
        ContainerRecord {
            id: "abcdef".into(),
            name: "web".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ContainerRecord::default()
        }
    }

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_label_must_hold_and_other_values_are_alternatives() {
        let r = rec(&[("app", "shop"), ("tier", "")]);
        assert!(container_matches(&r, &f(&[("label", "app=shop"), ("label", "tier")])).unwrap());
        assert!(!container_matches(&r, &f(&[("label", "app=shop"), ("label", "x")])).unwrap());
        assert!(!container_matches(&r, &f(&[("label", "app=other")])).unwrap());
        assert!(container_matches(&r, &f(&[("name", "nope"), ("name", "/web")])).unwrap());
        assert!(!container_matches(&r, &f(&[("id", "abc"), ("name", "nope")])).unwrap());
    }

    #[test]
    fn an_unknown_filter_says_which_there_are() {
        let e = container_matches(&rec(&[]), &f(&[("color", "red")])).unwrap_err();
        assert!(e.to_string().contains("label"), "{e}");
    }
}

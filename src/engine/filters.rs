//! Docker's list filters (`ps --filter`, `GET /containers/json?filters=`), for every front end:
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

/// Whether container `r` passes every filter (`KEY`, `VALUE` pairs as given).
pub fn container_matches(
    r: &ContainerRecord,
    filters: &[(String, String)],
) -> Result<bool, EngineError> {
    let mut keys: Vec<&str> = filters.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let values = filters.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
        if key == "label" {
            // Every label asked for must be there, as Docker has it.
            if !values.clone().all(|v| label_matches(&r.labels, v)) {
                return Ok(false);
            }
            continue;
        }
        let mut any = false;
        for v in values {
            any |= match key {
                "id" => r.id.starts_with(v.as_str()),
                "name" => r.name.contains(v.trim_start_matches('/')),
                "status" => {
                    if !["created", "restarting", "running", "exited", "dead", "paused", "removing"]
                        .contains(&v.as_str())
                    {
                        return Err(usage(format!("invalid status filter {v:?}: use created, restarting, running, exited or dead")));
                    }
                    state_of(r).name() == v
                }
                "ancestor" => {
                    r.image == *v
                        || r.image.split(':').next() == Some(v.as_str())
                        || r.image_id
                            .trim_start_matches("sha256:")
                            .starts_with(v.trim_start_matches("sha256:"))
                }
                "exited" => {
                    let code: i32 = v.parse().map_err(|_| {
                        usage(format!("invalid exited filter {v:?}: give a number"))
                    })?;
                    state_of(r) == Status::Exited && r.exit_code == Some(code)
                }
                "volume" => r.mounts.iter().any(|m| {
                    m.name.as_deref() == Some(v.as_str())
                        || m.destination.to_string_lossy() == v.as_str()
                }),
                "isolation" => {
                    let name = match r.isolation {
                        Isolation::Container => "container",
                        Isolation::Vm => "vm",
                    };
                    name == v
                }
                "network" => r.network == *v,
                other => return Err(usage(format!(
                    "unknown filter {other:?}: berth filters containers by id, name, label, status, ancestor, exited, volume, network, isolation"
                ))),
            };
        }
        if !any {
            return Ok(false);
        }
    }
    Ok(true)
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

//! Docker's list filters (`ps --filter`, `images --filter`, `network ls --filter`,
//! `volume ls --filter`, and the API's `filters=`), for every front end: values of one
//! key are alternatives, keys must all hold, and each `label` must hold.

use crate::image::ImageInspect;
use crate::state::{ContainerRecord, Isolation, Status};

use super::{state_of, Engine, EngineError};

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

/// Whether `text` matches the shell-style `pattern` (`*` any run, `?` one character).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // The last `*` seen and where in the text it stood: backtrack there on a mismatch.
    let (mut pi, mut ti, mut star) = (0, 0, None);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether a `reference` filter names `name` (familiar `repo:tag`): a pattern without a tag
/// matches the repository alone.
fn reference_matches(name: &str, pattern: &str) -> bool {
    let has_tag = pattern
        .rsplit_once(':')
        .is_some_and(|(_, tag)| !tag.contains('/'));
    let repo = name.rsplit_once(':').map_or(name, |(r, _)| r);
    glob_matches(pattern, name) || (!has_tag && glob_matches(pattern, repo))
}

impl Engine {
    /// `GET /images/json` and `berth images --filter`: the stored images, newest first, one
    /// each (with all its names), that pass every filter: `reference`, `dangling`, `label`,
    /// `before`, `since`.
    pub fn images_matching(
        &self,
        filters: &[(String, String)],
    ) -> Result<Vec<ImageInspect>, EngineError> {
        let mut ids: Vec<String> = Vec::new();
        for row in self.images()? {
            if !ids.contains(&row.id) {
                ids.push(row.id);
            }
        }
        let created = |i: &ImageInspect| crate::clock::parse_rfc3339(&i.created).unwrap_or(0);
        let mut bounds = Vec::new();
        for (k, v) in filters {
            match k.as_str() {
                "before" | "since" => {
                    let other = self.inspect_image(v)?;
                    bounds.push((k.as_str(), created(&other)));
                }
                "dangling" if !["true", "false", "1", "0"].contains(&v.as_str()) => {
                    return Err(usage(format!(
                        "invalid dangling filter {v:?}: use true or false"
                    )));
                }
                "reference" | "label" | "dangling" => {}
                other => {
                    return Err(usage(format!(
                    "unknown filter {other:?}: berth filters images by reference, dangling, label, before, since"
                )))
                }
            }
        }
        let mut out = Vec::new();
        for id in ids {
            let mut image = match self.inspect_image(&id) {
                Ok(i) => i,
                // Removed since the list was read.
                Err(EngineError::Image(crate::image::ImageError::NotFound(_))) => continue,
                Err(e) => return Err(e),
            };
            let labels = image.config.labels.clone().unwrap_or_default();
            let values = |key: &'static str| {
                filters
                    .iter()
                    .filter(move |(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            let references: Vec<&str> = values("reference").collect();
            // As Docker lists it: only the names the reference filter matched.
            if !references.is_empty() {
                image
                    .repo_tags
                    .retain(|n| references.iter().any(|p| reference_matches(n, p)));
                image.repo_digests.retain(|d| {
                    let repo = d.split_once('@').map_or(d.as_str(), |(r, _)| r);
                    references.iter().any(|p| reference_matches(repo, p))
                });
            }
            let ok = values("label").all(|l| label_matches(&labels, l))
                && values("dangling")
                    .all(|d| ["true", "1"].contains(&d) == image.repo_tags.is_empty())
                && (references.is_empty() || !image.repo_tags.is_empty())
                && bounds.iter().all(|(k, t)| match *k {
                    "before" => created(&image) < *t,
                    _ => created(&image) > *t,
                });
            if ok {
                out.push(image);
            }
        }
        Ok(out)
    }
}

impl Engine {
    /// The images a prune with `filters` may take (`None`: any): `label=K[=V]` must hold,
    /// `label!=K[=V]` must not, `until=TIME|DURATION` made before then.
    pub(super) fn prune_candidates(
        &self,
        filters: &[(String, String)],
    ) -> Result<Option<std::collections::BTreeSet<String>>, EngineError> {
        if filters.is_empty() {
            return Ok(None);
        }
        let now = crate::clock::now_nanos();
        let mut until = None;
        for (k, v) in filters {
            match k.as_str() {
                "until" => {
                    until = Some(crate::clock::parse_since(v, now).ok_or_else(|| {
                        usage(format!(
                            "invalid until filter {v:?}: give a time (2024-05-01T10:00:00Z, a Unix time) or a duration (24h)"
                        ))
                    })?)
                }
                "label" | "label!" => {}
                other => {
                    return Err(usage(format!(
                        "unknown prune filter {other:?}: berth prunes images by dangling, label, label! and until"
                    )))
                }
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for image in self.images_matching(&[])? {
            let labels = image.config.labels.clone().unwrap_or_default();
            let created = crate::clock::parse_rfc3339(&image.created).unwrap_or(0);
            let ok = filters.iter().all(|(k, v)| match k.as_str() {
                "label" => label_matches(&labels, v),
                "label!" => !label_matches(&labels, v),
                _ => until.is_none_or(|t| created < t),
            });
            if ok {
                ids.insert(image.id);
            }
        }
        Ok(Some(ids))
    }
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
    fn references_match_as_globs_with_or_without_a_tag() {
        assert!(glob_matches("bu*box", "busybox"));
        assert!(glob_matches("a?c*", "abcdef"));
        assert!(!glob_matches("a?c", "abcd"));
        let name = "localhost:5000/app:v1";
        assert!(reference_matches(name, "localhost:5000/app"));
        assert!(reference_matches(name, "localhost:5000/*:v1"));
        assert!(!reference_matches(name, "localhost:5000/app:v2"));
        assert!(!reference_matches(name, "app"));
    }

    #[test]
    fn an_unknown_filter_says_which_there_are() {
        let e = container_matches(&rec(&[]), &f(&[("color", "red")])).unwrap_err();
        assert!(e.to_string().contains("label"), "{e}");
    }
}

//! `GET /events`: the event journal ([`crate::state::events`]) replayed from `since`, then
//! followed until `until` (or until the client leaves), filtered as Docker filters it.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as Extract};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::containers::{epoch_nanos, parse_filters};
use super::error::ApiError;
use super::{Busy, State};
use crate::state::events::Event;

/// How often a follower looks for new events.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

pub fn routes() -> Router<State> {
    Router::new().route("/events", get(events))
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    filters: Option<String>,
}

const KEYS: &[&str] = &[
    "type",
    "event",
    "container",
    "image",
    "label",
    "network",
    "volume",
    "scope",
];

/// Whether `e` passes `filters`: values of a key are alternatives, keys must all hold.
fn matches(e: &Event, filters: &[(String, String)]) -> bool {
    let attr = |k: &str| e.actor.attributes.get(k).map(String::as_str);
    KEYS.iter().all(|key| {
        let mut values = filters
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str());
        let mut any = values.clone().next().is_none();
        any |= values.any(|v| match *key {
            "type" => e.kind == v,
            "event" => e.action == v || e.action.starts_with(&format!("{v}:")),
            "container" => {
                e.kind == "container"
                    && (e.actor.id.starts_with(v)
                        || attr("name") == Some(v.trim_start_matches('/')))
            }
            "image" => {
                attr("image") == Some(v)
                    || (e.kind == "image" && (e.actor.id.starts_with(v) || attr("name") == Some(v)))
            }
            "label" => match v.split_once('=') {
                Some((k, val)) => attr(k) == Some(val),
                None => attr(v).is_some(),
            },
            "network" => {
                e.kind == "network" && (e.actor.id.starts_with(v) || attr("name") == Some(v))
            }
            "volume" => e.kind == "volume" && e.actor.id == v,
            "scope" => e.scope == v,
            _ => false,
        });
        any
    })
}

fn line(e: &Event) -> Bytes {
    let mut v = serde_json::to_vec(e).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

async fn events(
    Extract(d): Extract<State>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let filters = parse_filters(q.filters.as_deref())?;
    if let Some((k, _)) = filters.iter().find(|(k, _)| !KEYS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "invalid filter {k:?}: events filter by {}",
            KEYS.join(", ")
        )));
    }
    let time = |raw: &Option<String>, what: &str| -> Result<Option<i64>, ApiError> {
        match raw.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => epoch_nanos(s).map(|n| Some(n as i64)).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid {what} {s:?}: give seconds since the epoch"
                ))
            }),
        }
    };
    let since = time(&q.since, "since")?;
    let until = time(&q.until, "until")?;
    let log = d.engine.events().clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let busy = Busy::new(&d);
    tokio::spawn(async move {
        let _busy = busy;
        let start = since.unwrap_or(i64::MAX);
        let replay = log.clone();
        let Ok((past, mut offset)) = tokio::task::spawn_blocking(move || replay.since(start)).await
        else {
            return;
        };
        let past_until = |e: &Event| until.is_some_and(|u| e.time_nano > u);
        for e in past.iter().filter(|e| matches(e, &filters)) {
            if past_until(e) {
                return;
            }
            if tx.send(Ok(line(e))).await.is_err() {
                return;
            }
        }
        loop {
            if until.is_some_and(|u| (crate::clock::now_nanos() as i64) > u) || tx.is_closed() {
                return;
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            let follow = log.clone();
            let Ok((new, next)) = tokio::task::spawn_blocking(move || follow.follow(offset)).await
            else {
                return;
            };
            offset = next;
            for e in new.iter().filter(|e| matches(e, &filters)) {
                if past_until(e) {
                    return;
                }
                if tx.send(Ok(line(e))).await.is_err() {
                    return;
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ev(kind: &str, action: &str, name: &str) -> Event {
        let mut attrs = BTreeMap::new();
        attrs.insert("name".to_string(), name.to_string());
        attrs.insert("app".to_string(), "shop".to_string());
        Event::new(kind, action, "abcdef", attrs)
    }

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_are_docker_s() {
        let die = ev("container", "die", "web");
        assert!(matches(&die, &[]));
        assert!(matches(&die, &f(&[("event", "start"), ("event", "die")])));
        assert!(!matches(&die, &f(&[("event", "start")])));
        assert!(matches(
            &die,
            &f(&[("container", "web"), ("label", "app=shop")])
        ));
        assert!(!matches(
            &die,
            &f(&[("container", "web"), ("label", "app=other")])
        ));
        assert!(matches(&die, &f(&[("container", "abc")])));
        assert!(!matches(&die, &f(&[("type", "image")])));
        assert!(matches(
            &ev("network", "create", "net"),
            &f(&[("network", "net")])
        ));
    }
}

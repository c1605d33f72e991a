//! `/containers/...`: create, list, inspect, start, stop, kill, restart, wait, remove, rename,
//! attach, resize, logs, top, prune.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State as Extract};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bollard_stubs::models::{
    ContainerBlkioStatEntry, ContainerBlkioStats, ContainerCpuStats, ContainerCpuUsage,
    ContainerCreateResponse, ContainerMemoryStats, ContainerNetworkStats, ContainerPidsStats,
    ContainerPruneResponse, ContainerStatsResponse, ContainerSummary, ContainerTopResponse,
    ContainerWaitExitError, ContainerWaitResponse,
};
use serde::Deserialize;
use tokio::sync::{oneshot, watch};

use super::convert;
use super::error::{blocking, ApiError};
use super::helper::{AttachWant, HelperRequest};
use super::stream::{self, Ended};
use super::{Busy, State};
use crate::engine::{state_of, EngineError, LogsOptions};
use crate::monitor::log::Stream as LogStream;
use crate::monitor::proto::Request as MonitorRequest;
use crate::state::{ContainerRecord, Status};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/containers/json", get(list))
        .route("/containers/create", post(create))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}", delete(remove))
        // Copy and stats (the block at the end of this file).
        .route("/containers/{id}/stats", get(stats))
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
}

/// An attach waiting for its container to start: what it asks the monitor for, and where
/// its connection goes.
type Waiting = (
    MonitorRequest,
    oneshot::Sender<std::os::unix::net::UnixStream>,
);

/// Streams waiting for a container to start, and the exit statuses the daemon learns.
#[derive(Default)]
pub struct Pending {
    attaches: Mutex<HashMap<String, Vec<Waiting>>>,
    exits: Mutex<HashMap<String, watch::Sender<Option<i32>>>>,
    /// Containers whose end a relay of this daemon will report.
    watched: Mutex<HashSet<String>>,
}

impl Pending {
    fn add_attach(
        &self,
        id: &str,
        req: MonitorRequest,
    ) -> oneshot::Receiver<std::os::unix::net::UnixStream> {
        let (tx, rx) = oneshot::channel();
        self.attaches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .push((req, tx));
        rx
    }

    fn take_attaches(
        &self,
        id: &str,
    ) -> Vec<(
        MonitorRequest,
        oneshot::Sender<std::os::unix::net::UnixStream>,
    )> {
        self.attaches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, tx)| !tx.is_closed())
            .collect()
    }

    fn exit_channel(&self, id: &str) -> watch::Receiver<Option<i32>> {
        self.exits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// A new run of `id` begins: its end is not known yet, and a relay here will report it.
    fn started(&self, id: &str) {
        self.exit_channel(id);
        if let Some(tx) = self.exits.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            tx.send_replace(None);
        }
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string());
    }

    fn ended(&self, id: &str, ended: Ended) {
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Ended::Exited(code) = ended {
            if let Some(tx) = self.exits.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
                tx.send_replace(Some(code));
            }
        }
    }

    fn is_watched(&self, id: &str) -> bool {
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }
}

async fn record(d: &State, key: &str) -> Result<ContainerRecord, ApiError> {
    let d = d.clone();
    let key = key.to_string();
    blocking(move || d.engine.container(&key)).await
}

fn running(r: &ContainerRecord) -> bool {
    matches!(state_of(r), Status::Running | Status::Restarting)
}

pub(super) fn flag(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1") | Some("true") | Some("True"))
}

/// Docker's `filters` query: `{"key": ["v", ...]}` (or the older `{"key": {"v": true}}`).
pub fn parse_filters(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(vec![]);
    };
    let v: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filters {raw:?}: {e}")))?;
    let mut out = Vec::new();
    let Some(map) = v.as_object() else {
        return Err(ApiError::bad_request(format!(
            "invalid filters {raw:?}: expected a JSON object"
        )));
    };
    for (k, vals) in map {
        match vals {
            serde_json::Value::Array(a) => out.extend(
                a.iter()
                    .filter_map(|x| x.as_str())
                    .map(|x| (k.clone(), x.to_string())),
            ),
            serde_json::Value::Object(o) => out.extend(
                o.iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(x, _)| (k.clone(), x.clone())),
            ),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid filters {raw:?}: values must be lists"
                )))
            }
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct ListQuery {
    all: Option<String>,
    limit: Option<i64>,
    filters: Option<String>,
}

async fn list(
    Extract(d): Extract<State>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ContainerSummary>>, ApiError> {
    let filters = parse_filters(q.filters.as_deref())?;
    let all = flag(&q.all)
        || q.limit.is_some_and(|l| l > 0)
        || filters.iter().any(|(k, _)| k == "status" || k == "exited");
    let mut recs = blocking(move || {
        let mut out = Vec::new();
        for r in d.engine.containers() {
            if (all || running(&r)) && crate::engine::filters::container_matches(&r, &filters)? {
                out.push(r);
            }
        }
        Ok::<_, EngineError>(out)
    })
    .await?;
    recs.sort_by_key(|r| std::cmp::Reverse(r.created));
    if let Some(l) = q.limit.filter(|l| *l > 0) {
        recs.truncate(l as usize);
    }
    Ok(Json(recs.iter().map(convert::summary).collect()))
}

#[derive(Deserialize)]
struct CreateQuery {
    name: Option<String>,
}

async fn create(
    Extract(d): Extract<State>,
    Query(q): Query<CreateQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<ContainerCreateResponse>), ApiError> {
    // Checked here, so a malformed body costs no helper.
    let (parsed, isolation) = convert::parse_create_body(&body)?;
    convert::create_config(q.name.clone(), parsed, isolation)?;
    let body: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let id = d
        .helper(HelperRequest::Create { name: q.name, body }, None)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ContainerCreateResponse {
            id: id.as_str().unwrap_or_default().to_string(),
            warnings: vec![],
        }),
    ))
}

async fn inspect(
    Extract(d): Extract<State>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let v = blocking(move || d.engine.inspect_container(&id)).await?;
    convert::inspect(v).map(Json)
}

/// Starts `id` with every attach waiting for it connected first; a relay of this daemon reads
/// the run to its end (so `wait` learns the status, also of a `--rm` container).
async fn start(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    let rec = record(&d, &key).await?;
    if running(&rec) {
        return Ok(StatusCode::NOT_MODIFIED);
    }
    let id = rec.id.clone();
    let mut waiting = d.pending.take_attaches(&id);
    let first = if waiting.is_empty() {
        None
    } else {
        Some(waiting.remove(0))
    };
    let want = match first.as_ref().map(|(r, _)| *r) {
        Some(MonitorRequest::Attach {
            stdin,
            stdout,
            stderr,
        }) => AttachWant {
            stdin,
            stdout,
            stderr,
        },
        _ => AttachWant {
            stdin: false,
            stdout: false,
            stderr: false,
        },
    };
    d.pending.started(&id);
    // The service keeps its end of the attach; the helper hands the other to the monitor.
    let (client, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| ApiError::internal(format!("creating a socket pair: {e}")))?;
    let started = d
        .helper(
            HelperRequest::Start {
                id: id.clone(),
                attach: Some(want),
            },
            Some(theirs.into()),
        )
        .await;
    if let Err(e) = started {
        d.pending.ended(&id, Ended::Lost);
        return Err(e);
    }
    match first {
        Some((_, tx)) => {
            if let Err(client) = tx.send(client) {
                // The attach went away meanwhile: read the run here.
                spawn_watch(&d, &id, client, rec.tty);
            }
        }
        None => spawn_watch(&d, &id, client, rec.tty),
    }
    for (req, tx) in waiting {
        let engine_d = d.clone();
        let id = id.clone();
        if let Ok(s) = blocking(move || engine_d.engine.start(&id, Some(req))).await {
            if let Some(c) = s.client {
                let _ = tx.send(c);
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Reads a run's monitor connection to its end, for its exit status.
fn spawn_watch(d: &State, id: &str, client: std::os::unix::net::UnixStream, tty: bool) {
    let d = d.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let ended = match stream::to_tokio(client) {
            Ok(m) => stream::relay(None::<stream::Hijacked>, m, tty, false).await,
            Err(_) => Ended::Lost,
        };
        d.pending.ended(&id, ended);
    });
}

#[derive(Deserialize)]
struct StopQuery {
    t: Option<i64>,
    signal: Option<String>,
}

async fn stop(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<StatusCode, ApiError> {
    let rec = record(&d, &key).await?;
    if !running(&rec) {
        return Ok(StatusCode::NOT_MODIFIED);
    }
    if let Some(s) = &q.signal {
        if crate::engine::parse_signal(s).is_none() {
            return Err(ApiError::bad_request(format!("invalid signal: {s}")));
        }
    }
    let t = q.t.map(|t| t.clamp(0, u32::MAX as i64) as u32);
    blocking(move || d.engine.stop(&rec.id, t)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct KillQuery {
    signal: Option<String>,
}

async fn kill(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<KillQuery>,
) -> Result<StatusCode, ApiError> {
    let sig = q.signal.as_deref().unwrap_or("SIGKILL");
    let signal = crate::engine::parse_signal(sig)
        .ok_or_else(|| ApiError::bad_request(format!("invalid signal: {sig}")))?;
    let rec = record(&d, &key).await?;
    if !running(&rec) {
        return Err(ApiError::conflict(format!(
            "cannot kill container: {}: container {} is not running",
            key, rec.id
        )));
    }
    blocking(move || d.engine.kill(&rec.id, signal)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<StatusCode, ApiError> {
    let rec = record(&d, &key).await?;
    let t = q.t.map(|t| t.clamp(0, u32::MAX as i64) as u32);
    if running(&rec) {
        let d2 = d.clone();
        let id = rec.id.clone();
        blocking(move || d2.engine.stop(&id, t)).await?;
    }
    start(Extract(d), Path(rec.id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct WaitQuery {
    condition: Option<String>,
}

/// Waits as Docker's `condition` says; the headers go out at once, the status when known.
async fn wait(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let condition = q.condition.unwrap_or_else(|| "not-running".into());
    if !["not-running", "next-exit", "removed", ""].contains(&condition.as_str()) {
        return Err(ApiError::bad_request(format!(
            "invalid condition: {condition:?}: use not-running, next-exit or removed"
        )));
    }
    let rec = record(&d, &key).await?;
    let busy = Busy::new(&d);
    let body = futures_util::stream::once(async move {
        let _busy = busy;
        let res = match wait_for(&d, rec, &condition).await {
            Ok(code) => ContainerWaitResponse {
                status_code: code as i64,
                error: None,
            },
            Err(message) => ContainerWaitResponse {
                status_code: -1,
                error: Some(ContainerWaitExitError {
                    message: Some(message),
                }),
            },
        };
        let mut text = serde_json::to_vec(&res).unwrap_or_default();
        text.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(text))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

async fn wait_for(d: &State, rec: ContainerRecord, condition: &str) -> Result<i32, String> {
    let id = rec.id.clone();
    let mut exits = d.pending.exit_channel(&id);
    let code = if condition != "next-exit" && !running(&rec) && rec.status != Status::Created {
        rec.exit_code.unwrap_or(0)
    } else {
        let was_running = running(&rec);
        loop {
            tokio::select! {
                changed = exits.changed() => {
                    if changed.is_err() {
                        return Err("the daemon is shutting down".into());
                    }
                    if let Some(code) = *exits.borrow() {
                        break code;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if d.pending.is_watched(&id) {
                        continue;
                    }
                    let d2 = d.clone();
                    let id2 = id.clone();
                    match blocking(move || d2.engine.container(&id2)).await {
                        Err(e) if e.status == StatusCode::NOT_FOUND => {
                            return exits.borrow().ok_or_else(|| {
                                "the container was removed before its exit status was read".to_string()
                            });
                        }
                        Err(e) => return Err(e.message),
                        Ok(now) if running(&now) => {
                            // Started elsewhere (the berth CLI): its monitor answers.
                            let d2 = d.clone();
                            let id2 = id.clone();
                            break blocking(move || d2.engine.wait(&id2)).await.map_err(|e| e.message)?;
                        }
                        Ok(now) if now.status != Status::Created
                            && (was_running || now.finished_at != rec.finished_at) =>
                        {
                            break now.exit_code.unwrap_or(0);
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
    };
    if condition == "removed" {
        loop {
            let d2 = d.clone();
            let id2 = id.clone();
            match blocking(move || d2.engine.container(&id2)).await {
                Err(_) => break,
                // The monitor removes a --rm container moments after its end.
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    Ok(code)
}

#[derive(Deserialize)]
struct RemoveQuery {
    force: Option<String>,
    v: Option<String>,
}

async fn remove(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let (force, volumes) = (flag(&q.force), flag(&q.v));
    let rec = record(&d, &key).await?;
    if running(&rec) && !force {
        return Err(ApiError::conflict(format!(
            "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
            rec.name
        )));
    }
    d.helper(
        HelperRequest::Remove {
            id: rec.id,
            force,
            volumes,
        },
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RenameQuery {
    name: String,
}

async fn rename(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<RenameQuery>,
) -> Result<StatusCode, ApiError> {
    blocking(move || d.engine.rename(&key, q.name.trim_start_matches('/'))).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct AttachQuery {
    stdin: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
}

enum Source {
    Now(std::os::unix::net::UnixStream),
    Later(oneshot::Receiver<std::os::unix::net::UnixStream>),
    Nothing,
}

/// Hijacks the connection and relays the container's streams; a container not started yet
/// is attached when it starts, so the client misses none of its output.
async fn attach(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<AttachQuery>,
    mut req: Request,
) -> Result<Response, ApiError> {
    if !stream::wants_upgrade(req.headers()) {
        return Err(ApiError::bad_request(
            "attach hijacks the connection: send `Connection: Upgrade` and `Upgrade: tcp`",
        ));
    }
    let rec = record(&d, &key).await?;
    let want = MonitorRequest::Attach {
        stdin: flag(&q.stdin) && rec.open_stdin,
        stdout: flag(&q.stdout),
        stderr: flag(&q.stderr),
    };
    let stdin = matches!(want, MonitorRequest::Attach { stdin: true, .. });
    let source = if running(&rec) {
        let d2 = d.clone();
        let id = rec.id.clone();
        let req = want;
        match blocking(move || d2.engine.start(&id, Some(req)))
            .await?
            .client
        {
            Some(c) => Source::Now(c),
            None => Source::Nothing,
        }
    } else if rec.status == Status::Created {
        Source::Later(d.pending.add_attach(&rec.id, want))
    } else {
        Source::Nothing
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tty = rec.tty;
    let id = rec.id.clone();
    let busy = Busy::new(&d);
    tokio::spawn(async move {
        let _busy = busy;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        let monitor = match source {
            Source::Now(s) => s,
            Source::Later(rx) => match rx.await {
                Ok(s) => s,
                Err(_) => return,
            },
            Source::Nothing => {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
                return;
            }
        };
        let Ok(monitor) = stream::to_tokio(monitor) else {
            return;
        };
        let ended = stream::relay(Some(io), monitor, tty, stdin).await;
        d.pending.ended(&id, ended);
    });
    Ok(stream::switching(tty))
}

/// `?h=ROWS&w=COLUMNS` of a resize (a container's or an exec's).
#[derive(Deserialize)]
pub(super) struct ResizeQuery {
    pub h: Option<u16>,
    pub w: Option<u16>,
}

async fn resize(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<ResizeQuery>,
) -> Result<StatusCode, ApiError> {
    let rec = record(&d, &key).await?;
    if !running(&rec) {
        return Err(ApiError::conflict(format!(
            "container {} is not running",
            rec.name
        )));
    }
    let (rows, cols) = (q.h.unwrap_or(0), q.w.unwrap_or(0));
    blocking(move || {
        let req = MonitorRequest::Attach {
            stdin: false,
            stdout: false,
            stderr: false,
        };
        if let Some(mut c) = d.engine.start(&rec.id, Some(req))?.client {
            use std::io::Write;
            let _ = c.write_all(&stream::resize_frame(rows, cols));
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
struct LogsQuery {
    follow: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    since: Option<String>,
    until: Option<String>,
    timestamps: Option<String>,
    tail: Option<String>,
}

/// Docker's `since`/`until`: seconds since the epoch, with an optional fraction.
pub(crate) fn epoch_nanos(s: &str) -> Option<i128> {
    if s.is_empty() || s == "0" {
        return None;
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i128 = secs.parse().ok()?;
    let mut nanos: i128 = 0;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    Some(secs * 1_000_000_000 + nanos)
}

async fn logs(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let rec = record(&d, &key).await?;
    let (want_out, want_err) = (flag(&q.stdout), flag(&q.stderr));
    if !want_out && !want_err {
        return Err(ApiError::bad_request(
            "you must choose at least one stream: stdout=1 or stderr=1",
        ));
    }
    let opts = LogsOptions {
        follow: flag(&q.follow),
        tail: match q.tail.as_deref() {
            None | Some("") | Some("all") => None,
            Some(n) => Some(n.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid tail {n:?}: a number or all"))
            })?),
        },
        since: q.since.as_deref().and_then(epoch_nanos),
        until: q.until.as_deref().and_then(epoch_nanos),
    };
    let timestamps = flag(&q.timestamps);
    let tty = rec.tty;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let busy = Busy::new(&d);
    let id = rec.id.clone();
    tokio::task::spawn_blocking(move || {
        let _busy = busy;
        let result = d.engine.logs(&id, &opts, &mut |e| {
            let stream = match e.stream {
                LogStream::Stdout if want_out => 1,
                LogStream::Stderr if want_err => 2,
                _ => return Ok(()),
            };
            let mut data = Vec::with_capacity(e.data.len() + 40);
            if timestamps {
                data.extend_from_slice(crate::clock::rfc3339(e.time).as_bytes());
                data.push(b' ');
            }
            data.extend_from_slice(&e.data);
            let chunk = if tty {
                data
            } else {
                let mut out = stream::docker_header(stream, data.len()).to_vec();
                out.extend_from_slice(&data);
                out
            };
            tx.blocking_send(Ok(Bytes::from(chunk)))
                .map_err(|_| std::io::Error::other("the client went away"))
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let kind = if tty {
        stream::RAW
    } else {
        stream::MULTIPLEXED
    };
    Ok(([(header::CONTENT_TYPE, kind)], body).into_response())
}

#[derive(Deserialize)]
struct TopQuery {
    #[allow(dead_code)]
    ps_args: Option<String>,
}

async fn top(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(_q): Query<TopQuery>,
) -> Result<Json<ContainerTopResponse>, ApiError> {
    let procs = blocking(move || d.engine.top(&key)).await?;
    let titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];
    let processes = procs
        .iter()
        .map(|p| {
            let t = p.cpu.as_secs();
            vec![
                p.uid
                    .map_or_else(|| p.host_uid.to_string(), |u| u.to_string()),
                p.pid.to_string(),
                p.ppid.to_string(),
                "0".into(),
                String::new(),
                "?".into(),
                format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60),
                p.cmd.clone(),
            ]
        })
        .collect();
    Ok(Json(ContainerTopResponse {
        titles: Some(titles.iter().map(|t| t.to_string()).collect()),
        processes: Some(processes),
    }))
}

#[derive(Deserialize)]
struct PruneQuery {
    filters: Option<String>,
}

async fn prune(
    Extract(d): Extract<State>,
    Query(q): Query<PruneQuery>,
) -> Result<Json<ContainerPruneResponse>, ApiError> {
    let filters = parse_filters(q.filters.as_deref())?;
    let d2 = d.clone();
    let stopped = blocking(move || {
        Ok::<_, EngineError>(
            d2.engine
                .containers()
                .into_iter()
                .filter(|r| matches!(state_of(r), Status::Exited | Status::Dead | Status::Created))
                .filter(|r| {
                    filters
                        .iter()
                        .filter(|(k, _)| k == "label")
                        .all(|(_, v)| crate::engine::filters::label_matches(&r.labels, v))
                })
                .map(|r| {
                    let size = d2.engine.container_disk_usage(&r);
                    (r.id, size)
                })
                .collect::<Vec<_>>(),
        )
    })
    .await?;
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for (id, size) in stopped {
        let req = HelperRequest::Remove {
            id: id.clone(),
            force: false,
            volumes: false,
        };
        match d.helper(req, None).await {
            Ok(_) => {
                deleted.push(id);
                reclaimed += size;
            }
            // Started or removed meanwhile: not this prune's.
            Err(e) if e.status == StatusCode::NOT_FOUND || e.status == StatusCode::CONFLICT => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Json(ContainerPruneResponse {
        containers_deleted: Some(deleted),
        space_reclaimed: Some(reclaimed as i64),
    }))
}

// ---- Copy and stats: `docker cp` and `docker stats`. ----

#[derive(Deserialize)]
struct StatsQuery {
    stream: Option<String>,
    #[serde(rename = "one-shot")]
    one_shot: Option<String>,
}

/// How long a stats sample measures the CPU over (Docker's clients sample once a second).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// `GET /containers/{id}/stats`: one sample (`stream=false`; with `one-shot` at once, without
/// the CPU figures of a previous one) or one a second while the container runs.
async fn stats(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<StatsQuery>,
) -> Result<Response, ApiError> {
    let stream_on = q.stream.is_none() || flag(&q.stream);
    let one_shot = flag(&q.one_shot);
    if stream_on && one_shot {
        return Err(ApiError::bad_request(
            "cannot have stream=true and one-shot=true: give stream=false with one-shot",
        ));
    }
    let rec = record(&d, &key).await?;
    let interval = if one_shot {
        Duration::ZERO
    } else {
        STATS_INTERVAL
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let busy = Busy::new(&d);
    tokio::spawn(async move {
        let _busy = busy;
        loop {
            let sample = if running(&rec) {
                let d2 = d.clone();
                let id = rec.id.clone();
                blocking(move || d2.engine.stats(&[id], interval))
                    .await
                    .ok()
                    .and_then(|mut v| v.pop())
            } else {
                None
            };
            let ended = sample.is_none();
            let body = stats_response(&rec, sample.as_ref(), one_shot);
            let mut line = serde_json::to_vec(&body).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Ok(Bytes::from(line))).await.is_err() || !stream_on || ended {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Docker's stats JSON from a sample; a container not running has zeros, as Docker's.
fn stats_response(
    rec: &ContainerRecord,
    s: Option<&crate::engine::Stats>,
    one_shot: bool,
) -> ContainerStatsResponse {
    let zero_time = "0001-01-01T00:00:00Z".to_string();
    let mut out = ContainerStatsResponse {
        name: Some(format!("/{}", rec.name)),
        id: Some(rec.id.clone()),
        read: Some(zero_time.clone()),
        preread: Some(zero_time.clone()),
        ..Default::default()
    };
    let Some(s) = s else {
        return out;
    };
    let now = crate::clock::now_nanos();
    out.read = Some(crate::clock::rfc3339(now));
    if !one_shot {
        out.preread = Some(crate::clock::rfc3339(
            now - STATS_INTERVAL.as_nanos() as i128,
        ));
    }
    let cpu = |total: u64, system: u64| ContainerCpuStats {
        cpu_usage: Some(ContainerCpuUsage {
            total_usage: Some(total),
            percpu_usage: None,
            usage_in_kernelmode: None,
            usage_in_usermode: None,
        }),
        system_cpu_usage: Some(system),
        online_cpus: Some(s.cpu.online_cpus),
        throttling_data: None,
    };
    out.cpu_stats = Some(cpu(s.cpu.container_after, s.cpu.system_after));
    out.precpu_stats = Some(if one_shot {
        ContainerCpuStats::default()
    } else {
        cpu(s.cpu.container_before, s.cpu.system_before)
    });
    out.memory_stats = Some(ContainerMemoryStats {
        usage: Some(s.memory_pss),
        limit: Some(s.memory_limit),
        stats: Some(HashMap::from([("pss".to_string(), s.memory_pss)])),
        ..Default::default()
    });
    out.pids_stats = Some(ContainerPidsStats {
        current: Some(s.pids as u64),
        limit: None,
    });
    out.num_procs = Some(0);
    if let (Some(rx), Some(tx)) = (s.net_rx, s.net_tx) {
        out.networks = Some(HashMap::from([(
            "eth0".to_string(),
            ContainerNetworkStats {
                rx_bytes: Some(rx),
                tx_bytes: Some(tx),
                ..Default::default()
            },
        )]));
    }
    let entry = |op: &str, value: u64| ContainerBlkioStatEntry {
        major: Some(0),
        minor: Some(0),
        op: Some(op.to_string()),
        value: Some(value),
    };
    out.blkio_stats = Some(ContainerBlkioStats {
        io_service_bytes_recursive: Some(vec![
            entry("read", s.block_read),
            entry("write", s.block_write),
        ]),
        ..Default::default()
    });
    out
}

#[derive(Deserialize)]
struct ArchiveQuery {
    path: Option<String>,
    #[serde(rename = "noOverwriteDirNonDir")]
    no_overwrite_dir_non_dir: Option<String>,
    #[serde(rename = "copyUIDGID")]
    copy_uid_gid: Option<String>,
}

impl ArchiveQuery {
    fn path(&self) -> Result<String, ApiError> {
        match self.path.as_deref() {
            Some(p) if !p.is_empty() => Ok(p.to_string()),
            _ => Err(ApiError::bad_request(
                "give the path in the container: ?path=/PATH",
            )),
        }
    }
}

/// Go's `os.FileMode` bits for a `st_mode`, as Docker's path stat carries them.
fn go_file_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const NAMED_PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR_DEVICE: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut out = mode & 0o777;
    out |= match mode & libc::S_IFMT {
        libc::S_IFDIR => DIR,
        libc::S_IFLNK => SYMLINK,
        libc::S_IFBLK => DEVICE,
        libc::S_IFCHR => DEVICE | CHAR_DEVICE,
        libc::S_IFIFO => NAMED_PIPE,
        libc::S_IFSOCK => SOCKET,
        _ => 0,
    };
    for (bit, go) in [
        (libc::S_ISUID, SETUID),
        (libc::S_ISGID, SETGID),
        (libc::S_ISVTX, STICKY),
    ] {
        if mode & bit != 0 {
            out |= go;
        }
    }
    out
}

/// The path's metadata, asked of the engine helper (reading it enters the container).
async fn path_stat(
    d: &State,
    key: &str,
    path: &str,
) -> Result<(ContainerRecord, crate::engine::PathStat), ApiError> {
    let rec = record(d, key).await?;
    let req = HelperRequest::PathStat {
        id: rec.id.clone(),
        path: path.to_string(),
    };
    let v = d.helper(req, None).await?;
    let stat = serde_json::from_value(v)
        .map_err(|e| ApiError::internal(format!("the helper's path metadata: {e}")))?;
    Ok((rec, stat))
}

/// `X-Docker-Container-Path-Stat`: base64 of `{name, size, mode, mtime, linkTarget}`.
fn stat_header(stat: &crate::engine::PathStat) -> Result<header::HeaderValue, ApiError> {
    use base64::Engine as _;
    let json = serde_json::json!({
        "name": stat.name,
        "size": stat.size,
        "mode": go_file_mode(stat.mode),
        "mtime": crate::clock::rfc3339(stat.mtime),
        "linkTarget": stat.link_target,
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(json.to_string());
    header::HeaderValue::from_str(&encoded)
        .map_err(|e| ApiError::internal(format!("encoding the path's metadata: {e}")))
}

const PATH_STAT: &str = "X-Docker-Container-Path-Stat";

async fn archive_head(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response, ApiError> {
    let (_, stat) = path_stat(&d, &key, &q.path()?).await?;
    Ok(([(PATH_STAT, stat_header(&stat)?)], StatusCode::OK).into_response())
}

/// A pipe whose ends are not inherited by what the service spawns meanwhile.
fn archive_pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), ApiError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ApiError::internal(format!("creating a pipe for the archive: {e}")))
}

/// The path as a tar stream; its metadata in the header (so the client knows a file from a
/// directory before it reads).
async fn archive_get(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response, ApiError> {
    let path = q.path()?;
    let (rec, stat) = path_stat(&d, &key, &path).await?;
    let (rd, wr) = archive_pipe()?;
    let rd = tokio::net::unix::pipe::Receiver::from_owned_fd(rd)
        .map_err(|e| ApiError::internal(format!("reading the archive's pipe: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let busy = Busy::new(&d);
    let req = HelperRequest::CopyOut { id: rec.id, path };
    let helper = tokio::spawn(async move { d.helper(req, Some(wr)).await });
    tokio::spawn(async move {
        let _busy = busy;
        let mut rd = rd;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut rd, &mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        // A failure after the stream began cuts it short: the client sees a broken archive.
        if let Ok(Err(e)) = helper.await {
            let _ = tx.send(Err(std::io::Error::other(e.message))).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/x-tar"),
            ),
            (
                header::HeaderName::from_static("x-docker-container-path-stat"),
                stat_header(&stat)?,
            ),
        ],
        body,
    )
        .into_response())
}

/// Extracts the request's tar stream into the existing directory `path`.
async fn archive_put(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    Query(q): Query<ArchiveQuery>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let path = q.path()?;
    let (rec, stat) = path_stat(&d, &key, &path).await?;
    if stat.mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(ApiError::bad_request(format!(
            "extraction point is not a directory: {path} in {}: give a directory to extract into",
            rec.name
        )));
    }
    let (rd, wr) = archive_pipe()?;
    let wr = tokio::net::unix::pipe::Sender::from_owned_fd(wr)
        .map_err(|e| ApiError::internal(format!("writing the archive's pipe: {e}")))?;
    let req = HelperRequest::CopyIn {
        id: rec.id,
        path,
        archive: flag(&q.copy_uid_gid),
        keep_kinds: flag(&q.no_overwrite_dir_non_dir),
    };
    let helper = d.helper(req, Some(rd));
    let feed = async move {
        use futures_util::StreamExt;
        let mut wr = wr;
        let mut frames = body.into_data_stream();
        while let Some(chunk) = frames.next().await {
            let Ok(chunk) = chunk else { break };
            if tokio::io::AsyncWriteExt::write_all(&mut wr, &chunk)
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let (done, ()) = tokio::join!(helper, feed);
    done?;
    Ok(StatusCode::OK)
}

//! `/images/...`, `/commit`, `/auth`: list, inspect, history, tag, remove, prune, pull, push,
//! load, save, commit and registry logins. Pulls, pushes, logins, commits and removals run in
//! the engine helper (they fork or check the process's threads); a pull's or push's progress
//! comes back over fd 3 as the engine's typed events and goes out as Docker's JSON messages.

use std::collections::HashMap;
use std::os::unix::net::UnixStream as StdUnixStream;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, Request, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use bollard_stubs::models::{
    AuthConfig, CreateImageInfo, ErrorDetail, HistoryResponseItem, IdResponse,
    ImageDeleteResponseItem, ImageInspect, ImageInspectRootFs, ImagePruneResponse, ImageSummary,
    ProgressDetail, SystemAuthResponse,
};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::containers::{flag, parse_filters};
use super::error::{blocking, ApiError};
use super::helper::HelperRequest;
use super::{Busy, State};
use crate::engine::EngineError;
use crate::image::registry::Credentials;
use crate::image::registry::ProgressEvent;
use crate::image::{ArchiveFormat, ImageInspect as EngineInspect};

/// The largest archive `docker load` may send: bigger than any image a laptop keeps.
const MAX_ARCHIVE_BYTES: u64 = 64 << 30;
/// The largest `X-Registry-Auth` header or `/auth` body.
const MAX_AUTH_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/create", post(pull))
        .route("/images/load", post(load))
        .route("/images/get", get(save_many))
        .route("/images/prune", post(prune))
        .route(
            "/images/{*rest}",
            get(get_image).post(post_image).delete(remove),
        )
        .route("/commit", post(commit))
        .route("/auth", post(auth))
}

/// A missing image in Docker's words (the docker CLI's `rmi -f` and scripts look for them).
fn no_such(name: &str) -> impl Fn(ApiError) -> ApiError + '_ {
    move |e| {
        if e.status == StatusCode::NOT_FOUND {
            ApiError::not_found(format!("No such image: {name}"))
        } else {
            e
        }
    }
}

/// `2024-05-01T10:00:00Z` as Unix seconds (0 when absent or malformed).
fn unix_seconds(rfc3339: Option<&str>) -> i64 {
    rfc3339
        .and_then(crate::clock::parse_rfc3339)
        .map_or(0, |n| (n / 1_000_000_000) as i64)
}

pub(super) fn summary(i: EngineInspect) -> ImageSummary {
    ImageSummary {
        id: i.id,
        parent_id: i.parent,
        repo_tags: i.repo_tags,
        repo_digests: i.repo_digests,
        created: unix_seconds(Some(&i.created)),
        size: i.size as i64,
        shared_size: -1,
        labels: i.config.labels.unwrap_or_default().into_iter().collect(),
        containers: -1,
        ..ImageSummary::default()
    }
}

/// A query of Docker's `filters` alone.
#[derive(Deserialize)]
struct FiltersQuery {
    filters: Option<String>,
}

async fn list(
    Extract(d): Extract<State>,
    Query(q): Query<FiltersQuery>,
) -> Result<Json<Vec<ImageSummary>>, ApiError> {
    let filters = parse_filters(q.filters.as_deref())?;
    let images = blocking(move || d.engine.images_matching(&filters)).await?;
    Ok(Json(images.into_iter().map(summary).collect()))
}

/// A set of names (`Env`, `ExposedPorts`) in Docker's `{"NAME": {}}` form.
fn name_set<V>(
    m: Option<std::collections::BTreeMap<String, V>>,
) -> Option<HashMap<String, HashMap<(), ()>>> {
    m.map(|m| m.into_keys().map(|k| (k, HashMap::new())).collect())
}

fn inspect_model(i: EngineInspect) -> ImageInspect {
    let c = i.config;
    ImageInspect {
        id: Some(i.id),
        repo_tags: Some(i.repo_tags),
        repo_digests: Some(i.repo_digests),
        parent: Some(i.parent),
        comment: Some(i.comment),
        created: Some(i.created),
        docker_version: Some(i.docker_version),
        author: Some(i.author),
        config: Some(bollard_stubs::models::ImageConfig {
            user: Some(c.user),
            exposed_ports: name_set(c.exposed_ports),
            env: c.env,
            cmd: c.cmd,
            volumes: name_set(c.volumes),
            working_dir: Some(c.working_dir),
            entrypoint: c.entrypoint,
            labels: c.labels.map(|l| l.into_iter().collect()),
            stop_signal: c.stop_signal,
            ..Default::default()
        }),
        architecture: Some(i.architecture),
        variant: i.variant,
        os: Some(i.os),
        size: Some(i.size as i64),
        root_fs: Some(ImageInspectRootFs {
            typ: i.root_fs.kind,
            layers: Some(i.root_fs.layers),
        }),
        ..ImageInspect::default()
    }
}

/// `GET /images/{name}/json`, `/images/{name}/history`, `/images/{name}/get`.
async fn get_image(
    Extract(d): Extract<State>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(name) = rest.strip_suffix("/json") {
        let asked = name.to_string();
        let i = blocking(move || d.engine.inspect_image(&asked))
            .await
            .map_err(no_such(name))?;
        return Ok(Json(inspect_model(i)).into_response());
    }
    if let Some(name) = rest.strip_suffix("/history") {
        let asked = name.to_string();
        let (entries, tags) = blocking(move || {
            let entries = d.engine.image_history(&asked)?;
            Ok((entries, d.engine.inspect_image(&asked)?.repo_tags))
        })
        .await
        .map_err(no_such(name))?;
        let items: Vec<HistoryResponseItem> = entries
            .into_iter()
            .enumerate()
            .map(|(n, e)| HistoryResponseItem {
                id: e.id.unwrap_or_else(|| "<missing>".into()),
                created: unix_seconds(e.created.as_deref()),
                created_by: e.created_by,
                // The names belong to the newest step, the image itself.
                tags: if n == 0 { tags.clone() } else { Vec::new() },
                size: e.size as i64,
                comment: e.comment,
            })
            .collect();
        return Ok(Json(items).into_response());
    }
    if let Some(name) = rest.strip_suffix("/get") {
        return save(d, vec![name.to_string()]).await;
    }
    Err(ApiError::not_found(format!(
        "page not found: berth does not serve GET /images/{rest}"
    )))
}

/// `POST /images/{name}/tag`, `/images/{name}/push`.
async fn post_image(
    Extract(d): Extract<State>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(name) = rest.strip_suffix("/tag") {
        let repo = q.get("repo").filter(|r| !r.is_empty()).ok_or_else(|| {
            ApiError::bad_request("tag needs a repository: give ?repo=NAME[&tag=TAG]")
        })?;
        let target = match q.get("tag").filter(|t| !t.is_empty()) {
            Some(tag) => format!("{repo}:{tag}"),
            None => repo.clone(),
        };
        let asked = name.to_string();
        blocking(move || d.engine.tag_image(&asked, &target))
            .await
            .map_err(no_such(name))?;
        return Ok(StatusCode::CREATED.into_response());
    }
    if let Some(name) = rest.strip_suffix("/push") {
        let source = match q.get("tag").filter(|t| !t.is_empty()) {
            Some(tag) => format!("{name}:{tag}"),
            None => name.to_string(),
        };
        let credentials = registry_auth(&headers)?;
        let repo = name.to_string();
        let req = HelperRequest::Push {
            source,
            destination: None,
            credentials,
        };
        let first = info(format!("The push refers to repository [{repo}]"));
        return progress_stream(d, req, first, "Pushing ", |v| {
            let field = |k: &str| {
                v.get(k)
                    .map(|x| x.to_string().trim_matches('"').to_string())
            };
            vec![info(format!(
                "{}: digest: {} size: {}",
                field("tag").unwrap_or_default(),
                field("digest").unwrap_or_default(),
                field("size").unwrap_or_default()
            ))]
        })
        .await;
    }
    Err(ApiError::not_found(format!(
        "page not found: berth does not serve POST /images/{rest}"
    )))
}

#[derive(Deserialize)]
struct RemoveQuery {
    force: Option<String>,
}

/// `DELETE /images/{name}`: what was untagged, and the image if it went.
async fn remove(
    Extract(d): Extract<State>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<Json<Vec<ImageDeleteResponseItem>>, ApiError> {
    let v = d
        .helper(
            HelperRequest::RemoveImage {
                name: name.clone(),
                force: flag(&q.force),
            },
            None,
        )
        .await
        .map_err(no_such(&name))?;
    Ok(Json(deletions(&v)))
}

/// The helper's `{"untagged": [...], "deleted": ID or [IDS]}` as Docker's list.
fn deletions(v: &serde_json::Value) -> Vec<ImageDeleteResponseItem> {
    let strings = |k: &str| -> Vec<String> {
        match v.get(k) {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    let untagged = strings("untagged")
        .into_iter()
        .map(|u| ImageDeleteResponseItem {
            untagged: Some(u),
            deleted: None,
        });
    let deleted = strings("deleted")
        .into_iter()
        .map(|d| ImageDeleteResponseItem {
            untagged: None,
            deleted: Some(d),
        });
    untagged.chain(deleted).collect()
}

/// `POST /images/prune`: images without a name (with `dangling=false`, every image) that no
/// container uses and that pass the `label`, `label!` and `until` filters.
async fn prune(
    Extract(d): Extract<State>,
    Query(q): Query<FiltersQuery>,
) -> Result<Json<ImagePruneResponse>, ApiError> {
    let mut all = false;
    let mut filters = Vec::new();
    for (k, v) in parse_filters(q.filters.as_deref())? {
        match (k.as_str(), v.as_str()) {
            ("dangling", "false" | "0") => all = true,
            ("dangling", "true" | "1") => {}
            ("dangling", v) => {
                return Err(ApiError::bad_request(format!(
                    "invalid dangling filter {v:?}: use true or false"
                )))
            }
            _ => filters.push((k, v)),
        }
    }
    let v = d
        .helper(HelperRequest::PruneImages { all, filters }, None)
        .await?;
    Ok(Json(ImagePruneResponse {
        images_deleted: Some(deletions(&v)),
        space_reclaimed: v.get("reclaimed").and_then(|r| r.as_i64()),
    }))
}

/// The credentials of `X-Registry-Auth` (base64url JSON of Docker's `AuthConfig`), if it
/// names a user.
fn registry_auth(headers: &HeaderMap) -> Result<Option<Credentials>, ApiError> {
    let Some(raw) = headers.get("X-Registry-Auth") else {
        return Ok(None);
    };
    if raw.len() > MAX_AUTH_BYTES {
        return Err(ApiError::bad_request("X-Registry-Auth is too long"));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bad = |why: String| {
        ApiError::bad_request(format!(
            "X-Registry-Auth is not base64url-encoded JSON credentials ({why}): log in again with docker login"
        ))
    };
    let text = raw.to_str().map_err(|e| bad(e.to_string()))?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let json = engine.decode(text).map_err(|e| bad(e.to_string()))?;
    let config: AuthConfig = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    Ok(login_of(config))
}

fn login_of(c: AuthConfig) -> Option<Credentials> {
    match (c.username, c.password) {
        (Some(username), Some(password)) if !username.is_empty() => {
            Some(Credentials { username, password })
        }
        _ => None,
    }
}

/// A message of its own in a progress stream.
fn info(status: String) -> CreateImageInfo {
    CreateImageInfo {
        status: Some(status),
        ..CreateImageInfo::default()
    }
}

/// An error inside a progress stream, as the docker CLI reads it.
fn stream_error(message: String) -> CreateImageInfo {
    CreateImageInfo {
        error: Some(message.clone()),
        error_detail: Some(ErrorDetail {
            code: None,
            message: Some(message),
        }),
        ..CreateImageInfo::default()
    }
}

/// One engine event as Docker's message; `None` for a line the front end says otherwise.
fn message(event: ProgressEvent, skip: &str) -> Option<CreateImageInfo> {
    Some(match event {
        ProgressEvent::Line(l) if l.starts_with(skip) || l.starts_with("Trying to pull") => {
            return None
        }
        ProgressEvent::Line(l) => info(l),
        ProgressEvent::Blob {
            id,
            action,
            current,
            total,
        } => {
            let moving = action == "Downloading" || action == "Pushing";
            CreateImageInfo {
                id: Some(id),
                status: Some(action),
                progress_detail: Some(if moving {
                    ProgressDetail {
                        current: Some(current as i64),
                        total: Some(total as i64),
                    }
                } else {
                    ProgressDetail::default()
                }),
                ..CreateImageInfo::default()
            }
        }
    })
}

fn json_line(m: &CreateImageInfo) -> Bytes {
    let mut v = serde_json::to_vec(m).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn json_stream(rx: mpsc::Receiver<Bytes>) -> Response {
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>),
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Runs a pull or push in the helper and answers with Docker's progress stream: `first`,
/// the engine's events, then `done`'s lines of the helper's answer, or the error as
/// `errorDetail`. A failure before the first blob (no such image, no access) is a plain
/// error answer with its status, as Docker's daemon gives it.
async fn progress_stream(
    d: State,
    req: HelperRequest,
    first: CreateImageInfo,
    skip: &'static str,
    done: impl FnOnce(&serde_json::Value) -> Vec<CreateImageInfo> + Send + 'static,
) -> Result<Response, ApiError> {
    let (ours, theirs) = StdUnixStream::pair()
        .map_err(|e| ApiError::internal(format!("making the progress channel: {e}")))?;
    let ours = super::stream::to_tokio(ours)
        .map_err(|e| ApiError::internal(format!("making the progress channel: {e}")))?;
    let busy = Busy::new(&d);
    let worker = tokio::spawn(async move { d.helper(req, Some(theirs.into())).await });
    let (ev_tx, mut events) = mpsc::channel::<ProgressEvent>(256);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(ours).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(ev) = serde_json::from_str::<ProgressEvent>(&line) {
                if ev_tx.send(ev).await.is_err() {
                    break;
                }
            }
        }
    });
    // Hold the answer back until a blob moves or the work ends.
    let mut held = Vec::new();
    while let Some(ev) = events.recv().await {
        let blob = matches!(ev, ProgressEvent::Blob { .. });
        held.push(ev);
        if blob {
            break;
        }
    }
    let mut worker = Some(worker);
    if held.iter().all(|e| matches!(e, ProgressEvent::Line(_))) {
        // The events ended before any blob: the work is over.
        if let Some(w) = worker.take() {
            let v = w.await??;
            let (tx, rx) = mpsc::channel(64);
            let mut out = vec![first];
            out.extend(held.into_iter().filter_map(|e| message(e, skip)));
            out.extend(done(&v));
            for m in &out {
                let _ = tx.try_send(json_line(m));
            }
            drop(busy);
            return Ok(json_stream(rx));
        }
    }
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let _busy = busy;
        let send = |m: CreateImageInfo| {
            let tx = tx.clone();
            async move { tx.send(json_line(&m)).await.is_ok() }
        };
        send(first).await;
        for e in held {
            if let Some(m) = message(e, skip) {
                send(m).await;
            }
        }
        while let Some(e) = events.recv().await {
            if let Some(m) = message(e, skip) {
                // A client gone stops getting messages; the work goes on to its end.
                send(m).await;
            }
        }
        let result = match worker.take() {
            Some(w) => w.await.map_err(ApiError::from).and_then(|r| r),
            None => Err(ApiError::internal("the helper's result was lost")),
        };
        match result {
            Ok(v) => {
                for m in done(&v) {
                    send(m).await;
                }
            }
            Err(e) => {
                send(stream_error(e.message)).await;
            }
        }
    });
    Ok(json_stream(rx))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullQuery {
    from_image: Option<String>,
    from_src: Option<String>,
    tag: Option<String>,
    platform: Option<String>,
}

/// `POST /images/create?fromImage=NAME&tag=TAG`: a pull.
async fn pull(
    Extract(d): Extract<State>,
    Query(q): Query<PullQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if q.from_src.is_some() {
        return Err(ApiError::bad_request(
            "berth makes images from a registry (fromImage), a docker load archive (POST /images/load), a Dockerfile or a container (POST /commit); for a root filesystem tarball, load it as an image archive",
        ));
    }
    let image = q
        .from_image
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::bad_request("give the image to pull as ?fromImage=NAME"))?;
    let reference = match q.tag.as_deref().filter(|t| !t.is_empty()) {
        Some(t) if image.contains('@') => {
            return Err(ApiError::bad_request(format!(
                "{image} names a digest and ?tag={t} a tag: give one"
            )))
        }
        Some(t) if t.starts_with("sha256:") => format!("{image}@{t}"),
        Some(t) => format!("{image}:{t}"),
        None => image.clone(),
    };
    let parsed = crate::image::reference::parse(&reference).map_err(|e| {
        ApiError::bad_request(format!("invalid reference format {reference:?}: {e}"))
    })?;
    let credentials = registry_auth(&headers)?;
    let tag = parsed
        .digest
        .clone()
        .or_else(|| parsed.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let first = CreateImageInfo {
        id: Some(tag),
        status: Some(format!("Pulling from {}", parsed.repository)),
        ..CreateImageInfo::default()
    };
    let req = HelperRequest::Pull {
        reference,
        platform: q.platform.filter(|p| !p.is_empty()),
        credentials,
    };
    progress_stream(d, req, first, "\0", |_| Vec::new()).await
}

#[derive(Deserialize)]
struct SaveQuery {
    names: Vec<String>,
}

/// `GET /images/get?names=A&names=B`.
async fn save_many(
    Extract(d): Extract<State>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(raw.as_deref().unwrap_or_default())?;
    let q = SaveQuery {
        names: pairs
            .into_iter()
            .filter(|(k, _)| k == "names")
            .map(|(_, v)| v)
            .collect(),
    };
    if q.names.is_empty() {
        return Err(ApiError::bad_request(
            "name the images to save: ?names=IMAGE (repeated)",
        ));
    }
    save(d, q.names).await
}

/// A query string's pairs, repeated keys kept.
fn serde_urlencoded_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let uri: axum::http::Uri = format!("/?{raw}")
        .parse()
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
}

/// What a blocking writer hands the response body.
struct ChannelWriter(mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `docker save`: a docker-archive tar of `names`, streamed as it is written.
async fn save(d: State, names: Vec<String>) -> Result<Response, ApiError> {
    // Every name must be there before the answer starts: a missing one is a 404.
    for n in &names {
        let (asked, engine) = (n.clone(), d.clone());
        blocking(move || engine.engine.inspect_image(&asked))
            .await
            .map_err(no_such(n))?;
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let busy = Busy::new(&d);
    tokio::task::spawn_blocking(move || {
        let _busy = busy;
        let mut out = ChannelWriter(tx.clone());
        if let Err(e) = d
            .engine
            .save_images(&names, ArchiveFormat::DockerArchive, None, &mut out)
        {
            // Cut the body short: the client sees a broken archive, not a whole one.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
}

/// `POST /images/load`: a docker-archive or oci-archive tar body.
async fn load(Extract(d): Extract<State>, req: Request) -> Result<Response, ApiError> {
    let scratch = d.engine.dirs.data.join("tmp");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", scratch.display())))?;
    let file = tempfile_in(&scratch)?;
    let path = file.1.clone();
    let result = receive(req.into_body(), file.0).await;
    let loaded = match result {
        Ok(()) => {
            let p = path.clone();
            tokio::task::spawn_blocking(move || d.engine.load(&p))
                .await
                .map_err(ApiError::from)
                .and_then(|r| r.map_err(|e| archive_error(e, &path)))
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&path);
    let loaded = loaded?;
    let (tx, rx) = mpsc::channel(loaded.len().max(1) * 2);
    for image in loaded {
        let lines: Vec<String> = if image.names.is_empty() {
            vec![format!("Loaded image ID: {}\n", image.id)]
        } else {
            image
                .names
                .iter()
                .map(|n| format!("Loaded image: {n}\n"))
                .collect()
        };
        for l in lines {
            let mut v = serde_json::to_vec(&StreamLine { stream: l }).unwrap_or_default();
            v.push(b'\n');
            let _ = tx.try_send(Bytes::from(v));
        }
    }
    Ok(json_stream(rx))
}

/// A load's error: what is wrong with the client's archive (stored whole in `received`, so
/// reading it fails only on its contents) is a 400, the rest as mapped.
fn archive_error(e: EngineError, received: &std::path::Path) -> ApiError {
    use crate::image::ImageError as I;
    match e {
        EngineError::Image(I::Io { path, source, .. }) if path == received => {
            ApiError::bad_request(format!(
                "the body is not a readable image archive ({source}): send a docker save or OCI archive tar"
            ))
        }
        EngineError::Image(
            i @ (I::NotAnArchive { .. }
            | I::HostileEntry { .. }
            | I::MalformedJson { .. }
            | I::Invalid(_)
            | I::MissingBlob { .. }
            | I::SizeMismatch { .. }),
        ) => ApiError::bad_request(i.to_string()),
        other => other.into(),
    }
}

/// A line of `docker load`'s answer (bollard's `BuildInfo` only deserializes).
#[derive(serde::Serialize)]
struct StreamLine {
    stream: String,
}

/// A new private file in `dir`, and its path.
fn tempfile_in(dir: &std::path::Path) -> Result<(tokio::fs::File, std::path::PathBuf), ApiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!(
        "load-{}-{}.tar",
        std::process::id(),
        crate::clock::now_nanos()
    ));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", path.display())))?;
    Ok((tokio::fs::File::from_std(f), path))
}

/// Writes a request body to `file`, refusing one over [`MAX_ARCHIVE_BYTES`].
async fn receive(body: Body, mut file: tokio::fs::File) -> Result<(), ApiError> {
    use tokio::io::AsyncWriteExt;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the archive: {e}")))?;
        total += chunk.len() as u64;
        if total > MAX_ARCHIVE_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the archive is over {} GiB: load it with berth load from a file instead",
                    MAX_ARCHIVE_BYTES >> 30
                ),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("storing the archive: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal(format!("storing the archive: {e}")))
}

/// `POST /commit?container=ID&repo=R&tag=T&comment=C&author=A&changes=...`.
async fn commit(
    Extract(d): Extract<State>,
    RawQuery(raw): RawQuery,
) -> Result<(StatusCode, Json<IdResponse>), ApiError> {
    let pairs = serde_urlencoded_pairs(raw.as_deref().unwrap_or_default())?;
    let one = |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, v)| key == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let container = one("container")
        .ok_or_else(|| ApiError::bad_request("name the container to commit: ?container=NAME"))?;
    let name = match (one("repo"), one("tag")) {
        (Some(r), Some(t)) => Some(format!("{r}:{t}")),
        (Some(r), None) => Some(r),
        (None, Some(t)) => {
            return Err(ApiError::bad_request(format!(
                "?tag={t} needs a repository: give ?repo=NAME too"
            )))
        }
        (None, None) => None,
    };
    // The docker CLI sends each `-c` as its own `changes`; older clients one per line.
    let changes = pairs
        .iter()
        .filter(|(k, _)| k == "changes")
        .flat_map(|(_, v)| v.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|c| !c.trim().is_empty())
        .collect();
    let v = d
        .helper(
            HelperRequest::Commit {
                container,
                name,
                message: one("comment"),
                author: one("author"),
                changes,
            },
            None,
        )
        .await?;
    let id = v.as_str().unwrap_or_default().to_string();
    Ok((StatusCode::CREATED, Json(IdResponse { id })))
}

/// `POST /auth`: checks the credentials with the registry; the client keeps them.
async fn auth(
    Extract(d): Extract<State>,
    body: Bytes,
) -> Result<Json<SystemAuthResponse>, ApiError> {
    if body.len() > MAX_AUTH_BYTES {
        return Err(ApiError::bad_request("the credentials are too long"));
    }
    let config: AuthConfig = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid credentials body: {e}")))?;
    let server = config
        .serveraddress
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "docker.io".into());
    let credentials = login_of(config)
        .ok_or_else(|| ApiError::bad_request("give a user name and a password to log in"))?;
    d.helper(
        HelperRequest::CheckLogin {
            server,
            credentials,
        },
        None,
    )
    .await?;
    Ok(Json(SystemAuthResponse {
        status: "Login Succeeded".into(),
        identity_token: None,
    }))
}

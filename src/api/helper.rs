//! The service's engine helper: engine operations that fork (starting a container and its
//! monitor, work in a user namespace to make or remove files the container owns, unpacking
//! layers) never run in the service's own process, whose threads could hold a lock the
//! forked child then waits on forever. Each such operation runs in `berth __engine`, a
//! short-lived single-threaded process of the same binary: the request as JSON on its stdin,
//! an attach connection's monitor end as its fd 3, the answer as JSON on its stdout. The
//! engine code it runs is the CLI's: the helper is a dispatcher, nothing more.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::engine::{CommitOptions, Engine, EngineError, EngineOptions};
use crate::image::registry::{
    Credentials, ProgressEvent, ProgressMode, ProgressSink, PullOptions, PushOptions,
};
use crate::monitor::proto::Request as MonitorRequest;

/// What the helper is asked to do.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HelperRequest {
    /// `POST /containers/create`: the Docker body as the client sent it.
    Create {
        name: Option<String>,
        body: serde_json::Value,
    },
    /// Start a created container; with `attach`, fd 3 is the monitor's end of the
    /// connection the service keeps the other end of.
    Start {
        id: String,
        attach: Option<AttachWant>,
    },
    Remove {
        id: String,
        force: bool,
        volumes: bool,
    },
    /// `POST /images/create`: a pull (the registry client's threads and its thread check
    /// belong in a process of their own); fd 3 takes the progress, a JSON event a line.
    Pull {
        reference: String,
        platform: Option<String>,
        credentials: Option<Credentials>,
    },
    /// `POST /images/{name}/push`; fd 3 takes the progress as with `Pull`.
    Push {
        source: String,
        destination: Option<String>,
        credentials: Option<Credentials>,
    },
    /// `POST /auth`: check credentials with a registry, keeping nothing.
    CheckLogin {
        server: String,
        credentials: Credentials,
    },
    /// `POST /commit`: the container's changes become an image (reading them forks).
    Commit {
        container: String,
        name: Option<String>,
        message: Option<String>,
        author: Option<String>,
        changes: Vec<String>,
    },
    /// `DELETE /images/{name}`: unused unpacked layers go in a user namespace.
    RemoveImage { name: String, force: bool },
    /// `POST /images/prune`: `dangling=false` as `all`, the other filters as given.
    PruneImages {
        all: bool,
        filters: Vec<(String, String)>,
    },
    /// The metadata of a path in a container (`HEAD /containers/{id}/archive`).
    PathStat { id: String, path: String },
    /// A path of a container as a tar stream written to fd 3.
    CopyOut { id: String, path: String },
    /// The tar stream read from fd 3 extracted into directory `path` of a container.
    CopyIn {
        id: String,
        path: String,
        archive: bool,
        keep_kinds: bool,
    },
    /// `DELETE /volumes/{name}`: the data may belong to the container's mapped ids.
    VolumeRemove { name: String },
    /// `POST /volumes/prune`: the unused volumes (named ones too with `all`) that carry
    /// every label of `filters`.
    VolumePrune {
        all: bool,
        filters: Vec<(String, String)>,
    },
}

/// The streams of an attach (the monitor's request, in a serializable form).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AttachWant {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl From<AttachWant> for MonitorRequest {
    fn from(a: AttachWant) -> MonitorRequest {
        MonitorRequest::Attach {
            stdin: a.stdin,
            stdout: a.stdout,
            stderr: a.stderr,
        }
    }
}

/// The helper's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelperReply {
    Ok(serde_json::Value),
    Err { status: u16, message: String },
}

impl From<ApiError> for HelperReply {
    fn from(e: ApiError) -> HelperReply {
        HelperReply::Err {
            status: e.status.as_u16(),
            message: e.message,
        }
    }
}

/// The program the service runs its helpers from: its own binary, found once at start.
pub fn program() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

/// Runs `req` in a helper process (on the blocking pool: it waits for the process) and
/// returns its answer.
pub async fn run(
    program: PathBuf,
    engine: EngineOptions,
    req: HelperRequest,
    fd: Option<OwnedFd>,
) -> Result<serde_json::Value, ApiError> {
    tokio::task::spawn_blocking(move || run_blocking(&program, &engine, &req, fd)).await?
}

fn run_blocking(
    program: &std::path::Path,
    engine: &EngineOptions,
    req: &HelperRequest,
    fd: Option<OwnedFd>,
) -> Result<serde_json::Value, ApiError> {
    let input = serde_json::to_vec(req)
        .map_err(|e| ApiError::internal(format!("encoding the helper's request: {e}")))?;
    let mut cmd = Command::new(program);
    if let Some(driver) = &engine.storage_driver {
        cmd.arg("--storage-driver").arg(driver);
    }
    cmd.arg("__engine")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(fd) = &fd {
        let raw = fd.as_raw_fd();
        // SAFETY: between fork and exec the child only calls dup2, which is
        // async-signal-safe; it puts the connection at fd 3 without O_CLOEXEC.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        ApiError::internal(format!(
            "starting the engine helper {}: {e}",
            program.display()
        ))
    })?;
    drop(fd);
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ApiError::internal(format!("waiting for the engine helper: {e}")))?;
    match serde_json::from_slice::<HelperReply>(&out.stdout) {
        Ok(HelperReply::Ok(v)) => Ok(v),
        Ok(HelperReply::Err { status, message }) => Err(ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message,
        )),
        Err(_) => Err(ApiError::internal(format!(
            "the engine helper failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// `berth __engine`: one request from stdin, its answer on stdout. Returns the exit status.
pub fn main(opts: EngineOptions) -> i32 {
    let mut input = Vec::new();
    let reply = match std::io::stdin().read_to_end(&mut input) {
        Err(e) => HelperReply::from(ApiError::internal(format!("reading the request: {e}"))),
        Ok(_) => match serde_json::from_slice::<HelperRequest>(&input) {
            Err(e) => HelperReply::from(ApiError::bad_request(format!(
                "the helper's request is malformed: {e}"
            ))),
            Ok(req) => match Engine::open(opts) {
                Err(e) => HelperReply::from(ApiError::from(e)),
                Ok(engine) => match handle(&engine, req) {
                    Ok(v) => HelperReply::Ok(v),
                    Err(e) => HelperReply::from(e),
                },
            },
        },
    };
    let text = serde_json::to_vec(&reply).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&text);
    let _ = out.flush();
    0
}

fn handle(engine: &Engine, req: HelperRequest) -> Result<serde_json::Value, ApiError> {
    match req {
        HelperRequest::Create { name, body } => {
            let text = serde_json::to_vec(&body).unwrap_or_default();
            let (body, isolation) = super::convert::parse_create_body(&text)?;
            let further = super::convert::further_networks(&body);
            let config = super::convert::create_config(name, body, isolation)?;
            // Docker answers 404 for an image it does not have, and its clients pull and
            // retry; the service never pulls on its own.
            if let Err(EngineError::Image(crate::image::ImageError::NotFound(_))) =
                engine.inspect_image(&config.image)
            {
                return Err(ApiError::not_found(format!(
                    "No such image: {}",
                    config.image
                )));
            }
            let (image, req, flags) = config.resolve()?;
            let id = engine.create(&image, req, &flags)?;
            for (network, aliases) in further {
                if let Err(e) = engine.network_connect(&network, &id, &aliases) {
                    // Not made, as Docker's create fails whole.
                    let _ = engine.remove(&id, true, false);
                    return Err(e.into());
                }
            }
            Ok(serde_json::json!(id))
        }
        HelperRequest::Start { id, attach } => {
            match attach {
                Some(want) => {
                    engine.start_handing(&id, want.into(), stream_fd())?;
                }
                None => {
                    engine.start_created(&id, None)?;
                }
            }
            Ok(serde_json::Value::Null)
        }
        HelperRequest::Remove { id, force, volumes } => {
            Ok(serde_json::json!(engine.remove(&id, force, volumes)?))
        }
        HelperRequest::Pull {
            reference,
            platform,
            credentials,
        } => {
            let opts = PullOptions {
                platform,
                progress: progress_to_fd3(),
                credentials,
                ..PullOptions::default()
            };
            let pulled = engine.pull(&reference, &opts)?;
            Ok(serde_json::json!({ "id": pulled.id, "reference": pulled.reference }))
        }
        HelperRequest::Push {
            source,
            destination,
            credentials,
        } => {
            let opts = PushOptions {
                progress: progress_to_fd3(),
                credentials,
                ..PushOptions::default()
            };
            let pushed = engine.push(&source, destination.as_deref(), &opts)?;
            Ok(serde_json::json!({
                "tag": pushed.tag, "digest": pushed.digest, "size": pushed.size,
            }))
        }
        HelperRequest::CheckLogin {
            server,
            credentials,
        } => {
            let host = engine.check_login(&server, &credentials, true)?;
            Ok(serde_json::json!(host))
        }
        HelperRequest::Commit {
            container,
            name,
            message,
            author,
            changes,
        } => {
            let opts = CommitOptions {
                message,
                author,
                changes,
            };
            Ok(serde_json::json!(engine.commit(
                &container,
                name.as_deref(),
                &opts
            )?))
        }
        HelperRequest::RemoveImage { name, force } => {
            let removal = engine.remove_image(&name, force)?;
            Ok(serde_json::json!({
                "untagged": removal.untagged, "deleted": removal.deleted,
            }))
        }
        HelperRequest::PruneImages { all, filters } => {
            let report = engine.prune_images(all, &filters)?;
            Ok(serde_json::json!({
                "deleted": report.deleted, "untagged": report.untagged,
                "reclaimed": report.reclaimed,
            }))
        }
        HelperRequest::PathStat { id, path } => {
            Ok(serde_json::json!(engine.path_stat(&id, &path)?))
        }
        HelperRequest::CopyOut { id, path } => {
            let mut out = std::fs::File::from(stream_fd());
            engine.copy_out(&id, &path, false, &mut out)?;
            Ok(serde_json::Value::Null)
        }
        HelperRequest::CopyIn {
            id,
            path,
            archive,
            keep_kinds,
        } => {
            let mut input = std::fs::File::from(stream_fd());
            engine.copy_in(&id, &path, archive, keep_kinds, &mut input)?;
            Ok(serde_json::Value::Null)
        }
        HelperRequest::VolumeRemove { name } => {
            engine.volume_remove(&name)?;
            Ok(serde_json::Value::Null)
        }
        HelperRequest::VolumePrune { all, filters } => {
            Ok(serde_json::json!(engine.volume_prune(all, &filters)?))
        }
    }
}

/// A pull's or push's progress as JSON lines on fd 3, which the service reads and turns
/// into Docker's progress stream.
fn progress_to_fd3() -> ProgressMode {
    // The service put its end of a progress socket at fd 3 for this request.
    let out = std::sync::Mutex::new(std::fs::File::from(stream_fd()));
    ProgressMode::Events(ProgressSink(std::sync::Arc::new(
        move |event: ProgressEvent| {
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            let _ = out
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_all(&line);
        },
    )))
}

/// The descriptor the service passed at fd 3 for this request (an attach connection, an
/// archive's pipe).
fn stream_fd() -> OwnedFd {
    // SAFETY: the service put the request's descriptor at fd 3 (`run_blocking`); nothing
    // else in this process owns it, and each request takes it once.
    unsafe { OwnedFd::from_raw_fd(3) }
}

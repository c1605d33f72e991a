//! The Docker Engine API, served by `berth system service` on a UNIX socket: the docker CLI,
//! docker-py, compose and testcontainers drive berth through it. A thin front end: every
//! route turns its request into an engine call (run on tokio's blocking pool, as the engine
//! does file and socket I/O) and the engine's answer or error into Docker's shape.
//!
//! Nothing here forks: containers start under their own monitor (a spawned program, as with
//! the CLI's `run -d`), and attach and logs go through the monitor's socket and the log file.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, Uri};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;

use crate::engine::{Engine, EngineOptions};

mod containers;
mod convert;
mod error;
mod events;
mod exec;
pub mod helper;
mod images;
mod networks;
mod stream;
mod system;
mod volumes;

pub use error::ApiError;

/// The API version berth speaks, and the oldest it accepts.
pub const API_VERSION: &str = "1.47";
pub const MIN_API_VERSION: &str = "1.24";

/// How `berth system service` listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The socket path; `None` with systemd's socket activation.
    pub socket: Option<PathBuf>,
    /// Exit after this long without a client or a running request; `None` never exits.
    pub idle: Option<Duration>,
    pub engine: EngineOptions,
    /// Print each request, its status and time on stderr (`--log-level debug`).
    pub log_requests: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another berth service already listens on {0}: stop it, or give another socket (berth system service unix:///PATH)")]
    InUse(PathBuf),
    #[error("{0}")]
    Engine(#[from] crate::engine::EngineError),
}

/// The default socket: `$XDG_RUNTIME_DIR/berth/berth.sock`.
pub fn default_socket(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("berth.sock")
}

/// What every handler shares.
pub(crate) struct Daemon {
    pub engine: Engine,
    /// How to run the engine helper (`berth __engine`) for what forks.
    pub helper: PathBuf,
    pub engine_opts: EngineOptions,
    /// Attach requests made to a container that is not started yet, handed their stream by
    /// the start that follows (Docker's clients attach first, then start).
    pub pending: containers::Pending,
    /// Clients connected, requests running, streams open: the idle timer runs while it is 0.
    pub busy: AtomicUsize,
    /// The exec instances made through the API.
    pub execs: exec::Execs,
}

pub(crate) type State = Arc<Daemon>;

/// Counts a connection or a hijacked stream as activity while it lives.
pub(crate) struct Busy(State);

impl Daemon {
    /// Runs an engine operation that forks in a helper process ([`helper`]).
    pub async fn helper(
        &self,
        req: helper::HelperRequest,
        fd: Option<std::os::fd::OwnedFd>,
    ) -> Result<serde_json::Value, ApiError> {
        helper::run(self.helper.clone(), self.engine_opts.clone(), req, fd).await
    }
}

impl Busy {
    pub fn new(d: &State) -> Busy {
        d.busy.fetch_add(1, Ordering::SeqCst);
        Busy(d.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The router: every route, under `/vX.Y/` or none.
fn router(state: State) -> Router {
    Router::new()
        .merge(system::routes())
        .merge(containers::routes())
        .merge(events::routes())
        .merge(images::routes())
        .merge(exec::routes())
        .merge(networks::routes())
        .merge(volumes::routes())
        .fallback(|req: Request| async move {
            ApiError::not_found(format!(
                "page not found: berth does not serve {} {}",
                req.method(),
                req.uri().path()
            ))
        })
        .with_state(state)
        .layer(axum::middleware::map_response(headers))
}

/// Docker's headers on every reply; an error axum itself answered (a body too large, a
/// query that does not parse) as Docker's JSON error.
async fn headers(res: Response) -> Response {
    let plain = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_none_or(|t| t.as_bytes().starts_with(b"text/plain"));
    let mut res = if res.status().as_u16() >= 400 && plain {
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let message = String::from_utf8_lossy(&bytes).trim().to_string();
        axum::response::IntoResponse::into_response(ApiError::new(status, message))
    } else {
        res
    };
    let h = res.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("berth/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    res
}

/// `/v1.47/containers/json` -> `/containers/json`; a version below the oldest berth speaks
/// is refused as Docker does.
fn strip_version(mut req: Request) -> Result<Request, Box<Response>> {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(req);
    };
    let Some((version, tail)) = rest.split_once('/') else {
        return Ok(req);
    };
    let Some((major, minor)) = version.split_once('.') else {
        return Ok(req);
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return Ok(req);
    };
    if (major, minor) < (1, 24) {
        return Err(Box::new(axum::response::IntoResponse::into_response(
            ApiError::bad_request(format!(
                "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
            )),
        )));
    }
    let mut parts = req.uri().clone().into_parts();
    let pq = match req.uri().query() {
        Some(q) => format!("/{tail}?{q}"),
        None => format!("/{tail}"),
    };
    parts.path_and_query = pq.parse().ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    Ok(req)
}

/// Serves the API until the idle time runs out (or forever).
pub fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let engine = Engine::open(opts.engine.clone())?;
    let (listener, bound) = match activated_listener() {
        Some(l) => (l, None),
        None => {
            let path = opts
                .socket
                .clone()
                .unwrap_or_else(|| default_socket(&engine.dirs.runtime));
            (bind(&path)?, Some(path))
        }
    };
    let daemon = Arc::new(Daemon {
        engine,
        helper: helper::program(),
        engine_opts: opts.engine.clone(),
        pending: Default::default(),
        busy: AtomicUsize::new(0),
        execs: Default::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(256)
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io {
            what: "starting the server's runtime",
            path: PathBuf::from("tokio"),
            source,
        })?;
    let result = rt.block_on(accept_loop(listener, daemon, opts.idle, opts.log_requests));
    // A socket this service made goes with it (systemd owns an activated one).
    if let Some(path) = bound {
        let _ = std::fs::remove_file(path);
    }
    result
}

async fn accept_loop(
    listener: std::os::unix::net::UnixListener,
    daemon: State,
    idle: Option<Duration>,
    log_requests: bool,
) -> Result<(), ServeError> {
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Io {
            what: "setting up",
            path: PathBuf::from("the listening socket"),
            source,
        })?;
    let listener =
        tokio::net::UnixListener::from_std(listener).map_err(|source| ServeError::Io {
            what: "setting up",
            path: PathBuf::from("the listening socket"),
            source,
        })?;
    let app = router(daemon.clone());
    let mut idle_since = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let busy = Busy::new(&daemon);
                let app = app.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let app = app.clone();
                        async move {
                            let req = req.map(axum::body::Body::new);
                            let line = log_requests.then(|| format!("{} {}", req.method(), req.uri()));
                            let began = std::time::Instant::now();
                            let res = match strip_version(req) {
                                Ok(req) => app.oneshot(req).await,
                                Err(res) => Ok(*res),
                            };
                            if let (Some(line), Ok(r)) = (line, &res) {
                                eprintln!("berth service: {line} -> {} ({} ms)", r.status().as_u16(), began.elapsed().as_millis());
                            }
                            res
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                    drop(busy);
                });
            }
            _ = tick.tick() => {
                if daemon.busy.load(Ordering::SeqCst) > 0 {
                    idle_since = tokio::time::Instant::now();
                } else if let Some(limit) = idle {
                    if idle_since.elapsed() >= limit {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The socket systemd passed (`LISTEN_FDS`, `LISTEN_PID`), as podman.socket activates podman.
fn activated_listener() -> Option<std::os::unix::net::UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    const SD_LISTEN_FDS_START: RawFd = 3;
    // A descriptor that is not an open socket (a wrong unit file) is not taken: the service
    // then listens on its own socket.
    let is_socket = nix::sys::stat::fstat(SD_LISTEN_FDS_START)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK);
    if !is_socket {
        eprintln!("berth system service: LISTEN_FDS names fd 3, which is not an open socket; listening on a socket of its own instead");
        return None;
    }
    // SAFETY: systemd hands the listening socket over as fd 3 (LISTEN_PID names this
    // process), checked open above; nothing else in berth owns that descriptor.
    Some(unsafe { std::os::unix::net::UnixListener::from_raw_fd(SD_LISTEN_FDS_START) })
}

/// Binds `path` (its directory 0700, the socket 0600), replacing a stale socket but never a
/// live service's.
fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, ServeError> {
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| ServeError::Io {
            what,
            path: p,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("restricting", dir))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io("removing the stale socket", path))?;
    }
    // The socket is made 0600 from the start: no window where another user could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    bound.map_err(io("listening on", path))
}

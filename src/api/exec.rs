//! `/containers/{id}/exec` and `/exec/{id}/...`: processes started in a running container.
//!
//! The service never forks one itself: `exec start` spawns `berth exec` (the CLI's own
//! command, a single-threaded process of this binary, without any pre-exec work), whose
//! standard streams are the hijacked connection's ends: pipes the service relays as Docker's
//! multiplexed frames, or with a TTY a pty the service opened, relayed raw. A resize sets the
//! size of that pty and signals `berth exec` (SIGWINCH), which passes it on to the process's
//! terminal as it does for a user's terminal.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bollard_stubs::models::{ExecConfig, ExecInspectResponse, ExecStartConfig, ProcessConfig};
use nix::pty::Winsize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::containers::ResizeQuery;
use super::error::{blocking, ApiError};
use super::stream::{self, Hijacked};
use super::{Busy, State};
use crate::engine::state_of;
use crate::state::Status;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/containers/{id}/exec", post(create))
        .route("/exec/{id}/start", post(start))
        .route("/exec/{id}/resize", post(resize))
        .route("/exec/{id}/json", get(inspect))
}

/// The exec instances this service made, by id.
#[derive(Default)]
pub struct Execs(Mutex<HashMap<String, Arc<Exec>>>);

/// The most exec instances kept; past it the ended ones go first (a client could make them
/// without end).
const MAX_EXECS: usize = 4096;

impl Execs {
    fn add(&self, exec: Arc<Exec>) -> Result<(), ApiError> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() >= MAX_EXECS {
            all.retain(|_, e| {
                let run = e.run();
                !run.started || run.running
            });
        }
        if all.len() >= MAX_EXECS {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_EXECS} exec instances wait to be started or still run: start or end some first"),
            ));
        }
        all.insert(exec.id.clone(), exec);
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Arc<Exec>, ApiError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "No such exec instance: {id}: create one with POST /containers/{{id}}/exec"
                ))
            })
    }
}

/// One exec instance: what was asked, and how its process is doing.
struct Exec {
    id: String,
    container: String,
    config: ExecConfig,
    run: Mutex<Run>,
}

#[derive(Default)]
struct Run {
    started: bool,
    running: bool,
    exit_code: Option<i64>,
    /// `berth exec`'s pid.
    pid: Option<u32>,
    /// The service's end of the process's terminal, for resizes.
    pty: Option<Arc<OwnedFd>>,
}

impl Exec {
    fn run(&self) -> std::sync::MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fresh exec id: 64 hex digits, as Docker's.
fn new_id() -> String {
    let mut bytes = [0u8; 32];
    if getrandom(&mut bytes).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes[..16].copy_from_slice(&t.to_le_bytes());
        bytes[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn running(rec: &crate::state::ContainerRecord) -> bool {
    matches!(state_of(rec), Status::Running | Status::Restarting)
}

/// `{"Id": ...}`: bollard's `IdResponse` writes `id`, which Docker's clients other than
/// Go's (docker-py reads `["Id"]`) do not find.
#[derive(serde::Serialize)]
struct ExecCreated {
    #[serde(rename = "Id")]
    id: String,
}

async fn create(
    Extract(d): Extract<State>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ExecCreated>), ApiError> {
    let config: ExecConfig = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the exec configuration is invalid: {e}")))?;
    if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(ApiError::bad_request(
            "no exec command specified: give Cmd, e.g. [\"sh\", \"-c\", \"...\"]",
        ));
    }
    if let Some(w) = config.working_dir.as_deref().filter(|w| !w.is_empty()) {
        if !w.starts_with('/') {
            return Err(ApiError::bad_request(format!(
                "the working directory {w:?} is invalid: it needs to be an absolute path"
            )));
        }
    }
    detach_keys(config.detach_keys.as_deref())?;
    let d2 = d.clone();
    let rec = blocking(move || d2.engine.container(&key)).await?;
    if !running(&rec) {
        return Err(ApiError::conflict(format!(
            "container {} is not running: start it first (docker start {})",
            rec.id, rec.name
        )));
    }
    let id = new_id();
    let exec = Arc::new(Exec {
        id: id.clone(),
        container: rec.id,
        config,
        run: Mutex::default(),
    });
    d.execs.add(exec)?;
    Ok((StatusCode::CREATED, Json(ExecCreated { id })))
}

async fn inspect(
    Extract(d): Extract<State>,
    Path(id): Path<String>,
) -> Result<Json<ExecInspectResponse>, ApiError> {
    let e = d.execs.get(&id)?;
    let run = e.run();
    let c = &e.config;
    let cmd = c.cmd.clone().unwrap_or_default();
    Ok(Json(ExecInspectResponse {
        can_remove: Some(false),
        detach_keys: Some(c.detach_keys.clone().unwrap_or_default()),
        id: Some(e.id.clone()),
        running: Some(run.running),
        exit_code: run.exit_code,
        process_config: Some(ProcessConfig {
            privileged: Some(c.privileged.unwrap_or(false)),
            user: Some(c.user.clone().unwrap_or_default()),
            tty: Some(c.tty.unwrap_or(false)),
            entrypoint: cmd.first().cloned(),
            arguments: Some(cmd.iter().skip(1).cloned().collect()),
        }),
        open_stdin: Some(c.attach_stdin.unwrap_or(false)),
        open_stderr: Some(c.attach_stderr.unwrap_or(false)),
        open_stdout: Some(c.attach_stdout.unwrap_or(false)),
        container_id: Some(e.container.clone()),
        pid: Some(run.pid.map_or(0, i64::from)),
    }))
}

/// `[h, w]` as a window size.
fn winsize(size: Option<&Vec<usize>>) -> Option<Winsize> {
    match size.map(|v| v.as_slice()) {
        Some([h, w]) if *h > 0 && *w > 0 => Some(Winsize {
            ws_row: (*h).min(u16::MAX as usize) as u16,
            ws_col: (*w).min(u16::MAX as usize) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }),
        _ => None,
    }
}

async fn start(
    Extract(d): Extract<State>,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let upgrade = stream::wants_upgrade(req.headers());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
    let start: ExecStartConfig = if body.iter().all(|b| b.is_ascii_whitespace()) {
        ExecStartConfig::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("the exec start configuration is invalid: {e}"))
        })?
    };
    let exec = d.execs.get(&id)?;
    let detach = start.detach.unwrap_or(false);
    if !detach && !upgrade {
        return Err(ApiError::bad_request(
            "exec start streams over the hijacked connection: send `Connection: Upgrade` and `Upgrade: tcp`, or Detach: true",
        ));
    }
    {
        let d2 = d.clone();
        let key = exec.container.clone();
        let rec = blocking(move || d2.engine.container(&key)).await?;
        if !running(&rec) {
            return Err(ApiError::conflict(format!(
                "container {} is not running: start it, then create a new exec",
                rec.name
            )));
        }
        let mut run = exec.run();
        if run.started {
            return Err(ApiError::conflict(format!(
                "exec {id} has already been started: create a new exec for another run"
            )));
        }
        run.started = true;
    }
    let tty = start.tty.or(exec.config.tty).unwrap_or(false);
    let size = winsize(start.console_size.as_ref()).or(winsize(exec.config.console_size.as_ref()));
    let spawned = match spawn(&d, &exec, tty, detach, size) {
        Ok(s) => s,
        Err(e) => {
            exec.run().started = false;
            return Err(e);
        }
    };
    // A client's session keeps the service from its idle exit; a detached process does not
    // (it runs on without the service, as `berth exec -d`'s would).
    let busy = (!detach).then(|| Busy::new(&d));
    let exec2 = exec.clone();
    tokio::spawn(async move {
        let _busy = busy;
        let client = if detach {
            None
        } else {
            on_upgrade.await.ok().map(hyper_util::rt::TokioIo::new)
        };
        relay(exec2, spawned, client).await;
    });
    if detach {
        let mut res = Json(serde_json::json!({})).into_response();
        *res.status_mut() = StatusCode::OK;
        return Ok(res);
    }
    Ok(stream::switching(tty))
}

/// A started `berth exec` and the service's ends of its streams.
struct Spawned {
    child: std::process::Child,
    io: Io,
    stdin: bool,
}

enum Io {
    Pipes {
        stdin: Option<std::process::ChildStdin>,
        stdout: Option<std::process::ChildStdout>,
        stderr: Option<std::process::ChildStderr>,
    },
    Pty(Arc<OwnedFd>),
}

/// Starts `berth exec` for `exec` (a spawn with nothing run between fork and exec).
fn spawn(
    d: &State,
    exec: &Exec,
    tty: bool,
    detach: bool,
    size: Option<Winsize>,
) -> Result<Spawned, ApiError> {
    let c = &exec.config;
    let want = |v: Option<bool>| v.unwrap_or(false) && !detach;
    let (stdin, stdout, stderr) = (
        want(c.attach_stdin),
        want(c.attach_stdout),
        want(c.attach_stderr),
    );
    let mut cmd = Command::new(&d.helper);
    if let Some(driver) = &d.engine_opts.storage_driver {
        cmd.arg("--storage-driver").arg(driver);
    }
    cmd.arg("exec");
    if stdin {
        cmd.arg("--interactive");
    }
    if tty {
        cmd.arg("--tty");
    }
    if c.privileged.unwrap_or(false) {
        cmd.arg("--privileged");
    }
    // `K` alone would copy the service's own variable: only `K=V` is passed on.
    // `--flag=VALUE`: a value the client made to start with `-` stays a value.
    for e in c.env.iter().flatten().filter(|e| e.contains('=')) {
        cmd.arg(format!("--env={e}"));
    }
    if let Some(u) = c.user.as_deref().filter(|u| !u.is_empty()) {
        cmd.arg(format!("--user={u}"));
    }
    if let Some(w) = c.working_dir.as_deref().filter(|w| !w.is_empty()) {
        cmd.arg(format!("--workdir={w}"));
    }
    cmd.arg("--").arg(&exec.container);
    cmd.args(c.cmd.iter().flatten());
    let io = if tty {
        let (master, slave) = open_pty(size.unwrap_or(Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }))?;
        let dup = |f: &OwnedFd| {
            f.try_clone()
                .map(Stdio::from)
                .map_err(|e| ApiError::internal(format!("duplicating the exec's terminal: {e}")))
        };
        cmd.stdin(dup(&slave)?)
            .stdout(dup(&slave)?)
            .stderr(dup(&slave)?);
        Io::Pty(Arc::new(master))
    } else {
        let pipe_or_null = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(pipe_or_null(stdin))
            .stdout(pipe_or_null(stdout))
            .stderr(pipe_or_null(stderr));
        Io::Pipes {
            stdin: None,
            stdout: None,
            stderr: None,
        }
    };
    let mut child = cmd.spawn().map_err(|e| {
        ApiError::internal(format!("starting berth exec ({}): {e}", d.helper.display()))
    })?;
    let io = match io {
        Io::Pipes { .. } => Io::Pipes {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        },
        pty => pty,
    };
    {
        let mut run = exec.run();
        run.running = true;
        run.pid = Some(child.id());
        if let Io::Pty(m) = &io {
            run.pty = Some(m.clone());
        }
    }
    Ok(Spawned { child, io, stdin })
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

/// A pty for an exec's terminal: both ends close-on-exec (the service spawns other programs
/// meanwhile), the slave raw (the process's own terminal, in the container, does the
/// line discipline), at `size`.
fn open_pty(size: Winsize) -> Result<(OwnedFd, OwnedFd), ApiError> {
    use nix::fcntl::OFlag;
    use nix::sys::termios;
    let fail = |what: &str, e: nix::Error| ApiError::internal(format!("{what}: {e}"));
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| fail("opening /dev/ptmx for the exec's terminal", e))?;
    nix::pty::grantpt(&master).map_err(|e| fail("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| fail("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| fail("ptsname", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail(&format!("opening {name}"), e))?;
    // SAFETY: open returned a fresh descriptor that nothing else owns.
    let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(slave) };
    let mut raw = termios::tcgetattr(slave.as_fd()).map_err(|e| fail("tcgetattr", e))?;
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(slave.as_fd(), termios::SetArg::TCSANOW, &raw)
        .map_err(|e| fail("tcsetattr", e))?;
    // SAFETY: TIOCSWINSZ reads one Winsize from a valid pointer.
    let _ = unsafe { set_winsize(slave.as_raw_fd(), &size) };
    // SAFETY: posix_openpt returned a fresh descriptor that nothing else owns.
    let master = unsafe {
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
            master,
        ))
    };
    Ok((master, slave))
}

/// Relays the process's streams and the client's (if any) until the process ends, then
/// records its exit status before the client's stream closes (the docker CLI reads it then).
async fn relay(exec: Arc<Exec>, spawned: Spawned, client: Option<Hijacked>) {
    let Spawned {
        mut child,
        io,
        stdin,
    } = spawned;
    let (cl_rd, cl_wr) = match client {
        Some(c) => {
            let (r, w) = tokio::io::split(c);
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    let waited = tokio::task::spawn_blocking(move || child.wait());
    let mut cl_wr = match io {
        Io::Pipes {
            stdin: to,
            stdout,
            stderr,
        } => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
            if let (Some(to), Some(rd)) = (to, cl_rd.filter(|_| stdin)) {
                if let Ok(to) = pipe::Sender::from_owned_fd(OwnedFd::from(to)) {
                    tokio::spawn(copy_stdin(rd, to, None));
                }
            }
            let mut readers = Vec::new();
            for (kind, fd) in [
                (1u8, stdout.map(OwnedFd::from)),
                (2u8, stderr.map(OwnedFd::from)),
            ] {
                let Some(rd) = fd.and_then(|f| pipe::Receiver::from_owned_fd(f).ok()) else {
                    continue;
                };
                readers.push(tokio::spawn(pump(rd, tx.clone(), Some(kind))));
            }
            drop(tx);
            let writer = tokio::spawn(forward(rx, cl_wr, None));
            for r in readers {
                let _ = r.await;
            }
            writer.await.ok().flatten()
        }
        Io::Pty(master) => {
            let ends = (|| {
                nix::fcntl::fcntl(
                    master.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )
                .map_err(std::io::Error::from)?;
                let rd = pipe::Receiver::from_owned_fd_unchecked(master.try_clone()?)?;
                let wr = pipe::Sender::from_owned_fd_unchecked(master.try_clone()?)?;
                Ok::<_, std::io::Error>((rd, wr))
            })();
            match ends {
                Ok((rd, wr)) => {
                    let (detach_tx, detach_rx) = tokio::sync::oneshot::channel();
                    if let Some(cl) = cl_rd.filter(|_| stdin) {
                        // The detach keys, or the client's half-close (Docker closes no
                        // terminal's input), let the client go while the process runs on.
                        let keys = Escape::new(
                            detach_keys(exec.config.detach_keys.as_deref()).unwrap_or_default(),
                        );
                        tokio::spawn(copy_stdin(cl, wr, Some((keys, detach_tx))));
                    }
                    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
                    let reader = tokio::spawn(pump(rd, tx, None));
                    let w = forward(rx, cl_wr, Some(detach_rx)).await;
                    let _ = reader.await;
                    w
                }
                Err(_) => cl_wr,
            }
        }
    };
    let code = match waited.await {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(125)
        }
        _ => 125,
    };
    {
        let mut run = exec.run();
        run.running = false;
        run.exit_code = Some(code as i64);
        run.pty = None;
    }
    if let Some(c) = cl_wr.as_mut() {
        let _ = c.shutdown().await;
    }
}

/// Writes the chunks to the client until they end; a client that went away gets no more
/// (the process runs on to its end). Returns the client's stream if it is still there.
async fn forward<W: AsyncWrite + Unpin>(
    mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    mut client: Option<W>,
    mut detached: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Option<W> {
    loop {
        let chunk = tokio::select! {
            chunk = chunks.recv() => chunk,
            Ok(()) = async { detached.as_mut().expect("guarded").await }, if detached.is_some() => {
                detached = None;
                if let Some(mut c) = client.take() {
                    let _ = c.shutdown().await;
                }
                continue;
            }
        };
        let Some(chunk) = chunk else { break };
        if let Some(c) = client.as_mut() {
            if c.write_all(&chunk).await.is_err() || c.flush().await.is_err() {
                client = None;
            }
        }
    }
    client
}

/// Reads `from` to its end (a pty's end is EIO once the process closed it) and sends the
/// bytes on, as Docker frames of stream `kind` when given.
async fn pump<R: AsyncRead + Unpin>(
    mut from: R,
    to: tokio::sync::mpsc::Sender<Vec<u8>>,
    kind: Option<u8>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = match kind {
            Some(k) => {
                let mut out = stream::docker_header(k, n).to_vec();
                out.extend_from_slice(&buf[..n]);
                out
            }
            None => buf[..n].to_vec(),
        };
        if to.send(chunk).await.is_err() {
            return;
        }
    }
}

/// The client's bytes to the process's stdin. Without `detach` (pipes) the client's
/// half-close closes the pipe: EOF. With it (a terminal) the detach keys or the half-close
/// signal the client's leave, and the terminal stays open.
async fn copy_stdin<R, W>(
    mut from: R,
    mut to: W,
    mut detach: Option<(Escape, tokio::sync::oneshot::Sender<()>)>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(buf.len());
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let data = match detach.as_mut() {
                    Some((keys, _)) => {
                        out.clear();
                        if keys.feed(&buf[..n], &mut out) {
                            let _ = to.write_all(&out).await;
                            break;
                        }
                        &out[..]
                    }
                    None => &buf[..n],
                };
                if to.write_all(data).await.is_err() {
                    return;
                }
            }
        }
    }
    if let Some((_, tx)) = detach {
        let _ = tx.send(());
    }
}

/// Docker's detach keys (`ctrl-p,ctrl-q` unless given): `ctrl-X` for a letter or one of
/// `@[\\]^_`, or a single character, comma-separated.
fn detach_keys(spec: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let spec = spec.filter(|s| !s.is_empty()).unwrap_or("ctrl-p,ctrl-q");
    let bad = || {
        ApiError::bad_request(format!(
            "invalid detach keys {spec:?}: give keys like ctrl-p,ctrl-q (ctrl- with a letter or one of @[\\]^_, or single characters)"
        ))
    };
    let mut keys = Vec::new();
    for key in spec.split(',') {
        let key = key.trim();
        let byte = match key.strip_prefix("ctrl-") {
            Some(k) if k.len() == 1 => match k.as_bytes()[0].to_ascii_lowercase() {
                c @ b'a'..=b'z' => c - b'a' + 1,
                b'@' => 0,
                c @ b'['..=b'_' => c - b'[' + 27,
                _ => return Err(bad()),
            },
            Some(_) => return Err(bad()),
            None if key.len() == 1 => key.as_bytes()[0],
            None => return Err(bad()),
        };
        keys.push(byte);
    }
    Ok(keys)
}

/// Watches a client's input for the detach keys, holding back a partial match until it
/// completes (detach) or breaks (the bytes pass on).
#[derive(Debug, Default)]
struct Escape {
    keys: Vec<u8>,
    matched: usize,
}

impl Escape {
    fn new(keys: Vec<u8>) -> Escape {
        Escape { keys, matched: 0 }
    }

    /// Appends to `out` what passes; true when the keys were typed (what follows them is
    /// dropped: the client is leaving).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return false;
        }
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return true;
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = usize::from(b == self.keys[0]);
            if self.matched == 0 {
                out.push(b);
            }
        }
        false
    }
}

async fn resize(
    Extract(d): Extract<State>,
    Path(id): Path<String>,
    Query(q): Query<ResizeQuery>,
) -> Result<StatusCode, ApiError> {
    let exec = d.execs.get(&id)?;
    let (Some(h), Some(w)) = (q.h, q.w) else {
        return Err(ApiError::bad_request(
            "give the new size as h (rows) and w (columns)",
        ));
    };
    let run = exec.run();
    let (Some(pty), Some(pid), true) = (&run.pty, run.pid, run.running) else {
        return Err(ApiError::conflict(format!(
            "exec {id} has no running terminal to resize: start it with Tty: true"
        )));
    };
    let ws = Winsize {
        ws_row: h,
        ws_col: w,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one Winsize from a valid pointer.
    let _ = unsafe { set_winsize(pty.as_raw_fd(), &ws) };
    // `berth exec` copies its terminal's new size to the process's on SIGWINCH.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGWINCH,
    );
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_dockers() {
        assert_eq!(detach_keys(None).unwrap(), vec![16, 17]);
        assert_eq!(detach_keys(Some("ctrl-a,x")).unwrap(), vec![1, b'x']);
        assert_eq!(detach_keys(Some("ctrl-@,ctrl-_")).unwrap(), vec![0, 31]);
        assert!(detach_keys(Some("ctrl-pq")).is_err());
        assert!(detach_keys(Some("alt-x")).is_err());
    }

    #[test]
    fn the_escape_holds_a_partial_match_and_detaches_on_the_whole() {
        let mut e = Escape::new(vec![16, 17]);
        let mut out = Vec::new();
        assert!(!e.feed(b"ab\x10", &mut out));
        assert_eq!(out, b"ab");
        // Broken off: the held key passes on.
        assert!(!e.feed(b"c", &mut out));
        assert_eq!(out, b"ab\x10c");
        out.clear();
        assert!(!e.feed(b"\x10\x10", &mut out));
        assert!(e.feed(b"\x11rest", &mut out));
        assert_eq!(out, b"\x10");
    }
}

//! Hijacked streams as Docker does them: `101 Switching Protocols` on `Upgrade: tcp`, then the
//! container's raw bytes (a TTY) or Docker's multiplexed frames (an 8-byte header: the stream,
//! three zero bytes, the length big-endian), and the client's bytes as stdin, its half-close
//! passed on as EOF. The container side is a monitor connection speaking berth's frames.

use std::os::unix::net::UnixStream as StdUnixStream;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::monitor::proto;

pub const RAW: &str = "application/vnd.docker.raw-stream";
pub const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";

/// Docker's frame header for `len` bytes of stream `kind` (1 stdout, 2 stderr).
pub fn docker_header(kind: u8, len: usize) -> [u8; 8] {
    let n = (len as u32).to_be_bytes();
    [kind, 0, 0, 0, n[0], n[1], n[2], n[3]]
}

/// The `101` answer to a hijack, with the content type of what follows.
pub fn switching(tty: bool) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if tty { RAW } else { MULTIPLEXED }),
    );
    res
}

/// Whether the request asks for the connection to be hijacked.
pub fn wants_upgrade(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"))
}

/// How a relayed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The container (or exec) ended with this status.
    Exited(i32),
    /// The monitor went away without one.
    Lost,
}

pub fn to_tokio(s: StdUnixStream) -> std::io::Result<UnixStream> {
    s.set_nonblocking(true)?;
    UnixStream::from_std(s)
}

/// Relays between a hijacked client and a monitor connection until the container ends or
/// the monitor goes away. The client leaving (or never having come: `client` is `None`) does
/// not end the relay: the monitor is read to the end, so the exit status is known.
pub async fn relay<C>(client: Option<C>, monitor: UnixStream, tty: bool, stdin: bool) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut mon_rd, mut mon_wr) = monitor.into_split();
    let (mut cl_rd, mut cl_wr) = match client {
        Some(c) => {
            let (r, w) = tokio::io::split(c);
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    // The client's bytes to the container's stdin, EOF on its half-close.
    let to_container = async move {
        let Some(rd) = cl_rd.as_mut().filter(|_| stdin) else {
            return std::future::pending::<()>().await;
        };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = mon_wr.write_all(&frame(proto::STDIN_EOF, &[])).await;
                    return std::future::pending::<()>().await;
                }
                Ok(n) => {
                    if mon_wr
                        .write_all(&frame(proto::STDIN, &buf[..n]))
                        .await
                        .is_err()
                    {
                        return std::future::pending::<()>().await;
                    }
                }
            }
        }
    };
    let from_container = async move {
        let mut inbuf: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match mon_rd.read(&mut buf).await {
                Ok(0) | Err(_) => return Ended::Lost,
                Ok(n) => n,
            };
            inbuf.extend_from_slice(&buf[..n]);
            let mut used = 0;
            while let Ok(Some((kind, range))) = proto::next_frame(&inbuf[used..]) {
                let payload = &inbuf[used + range.start..used + range.end];
                let end = used + range.end;
                match kind {
                    proto::STDOUT | proto::STDERR => {
                        if let Some(w) = cl_wr.as_mut() {
                            let stream = if kind == proto::STDOUT { 1 } else { 2 };
                            let ok = if tty {
                                w.write_all(payload).await
                            } else {
                                let mut out = docker_header(stream, payload.len()).to_vec();
                                out.extend_from_slice(payload);
                                w.write_all(&out).await
                            };
                            // A client that went away stops getting output; the relay goes on.
                            if ok.is_err() || w.flush().await.is_err() {
                                cl_wr = None;
                            }
                        }
                    }
                    proto::EXIT => {
                        let code = proto::parse_exit(payload);
                        if let Some(w) = cl_wr.as_mut() {
                            let _ = w.shutdown().await;
                        }
                        return code.map_or(Ended::Lost, Ended::Exited);
                    }
                    proto::ERROR => {
                        if let Some(w) = cl_wr.as_mut() {
                            let msg = String::from_utf8_lossy(payload).into_owned() + "\n";
                            let _ = if tty {
                                w.write_all(msg.as_bytes()).await
                            } else {
                                let mut out = docker_header(2, msg.len()).to_vec();
                                out.extend_from_slice(msg.as_bytes());
                                w.write_all(&out).await
                            };
                            let _ = w.shutdown().await;
                        }
                        return Ended::Lost;
                    }
                    _ => {}
                }
                used = end;
            }
            inbuf.drain(..used);
        }
    };
    tokio::select! {
        ended = from_container => ended,
        _ = to_container => Ended::Lost,
    }
}

/// One berth frame.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = proto::header(kind, payload.len()).to_vec();
    v.extend_from_slice(payload);
    v
}

/// A resize frame for the monitor: rows and columns, big-endian.
pub fn resize_frame(rows: u16, cols: u16) -> Vec<u8> {
    let mut p = [0u8; 4];
    p[..2].copy_from_slice(&rows.to_be_bytes());
    p[2..].copy_from_slice(&cols.to_be_bytes());
    frame(proto::RESIZE, &p)
}

/// The upgraded connection of a hijacked request, as a tokio stream.
pub type Hijacked = TokioIo<hyper::upgrade::Upgraded>;

//! `berth system service` for a test, and the real clients that drive it: the docker CLI on
//! PATH (28.x), as the fixture's user, with DOCKER_HOST at the service's socket.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{describe, finish, have, skip, Berth, Running};

/// The usual fixture and its service, or `None` (skipped, with the reason printed) where the
/// docker CLI or the test user is missing.
pub fn setup() -> Option<(Berth, Service)> {
    if !have("docker") {
        skip("the docker CLI is not installed: the API tests drive berth with it");
        return None;
    }
    let berth = Berth::new()?;
    let service = Service::start(&berth);
    Some((berth, service))
}

/// A running API service of a fixture.
pub struct Service {
    pub socket: PathBuf,
    /// DOCKER_CONFIG for the clients: nothing of the machine's own docker set-up leaks in.
    pub docker_config: PathBuf,
    running: Option<Running>,
}

impl Service {
    /// Starts `berth system service --time 0 unix://RUNTIME/api.sock` and waits until it
    /// answers.
    pub fn start(berth: &Berth) -> Service {
        Self::start_with(berth, &["--time", "0"])
    }

    /// As [`Service::start`], with other flags before the socket.
    pub fn start_with(berth: &Berth, flags: &[&str]) -> Service {
        let socket = berth.runtime_dir.join("api.sock");
        let uri = format!("unix://{}", socket.display());
        let mut args = vec!["system", "service"];
        args.extend_from_slice(flags);
        args.push(&uri);
        let running = berth.spawn(&args);
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "berth system service did not listen on {} within 30 s",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Service {
            docker_config: berth.runtime_dir.join("docker-config"),
            socket,
            running: Some(running),
        }
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `PROGRAM ARGS` as the fixture's user, pointed at this service.
    pub fn client(&self, berth: &Berth, program: &str, args: &[&str]) -> Command {
        let mut cmd = berth.identity.command(program, args);
        cmd.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", &self.docker_config)
            .current_dir(&berth.host_dir);
        cmd
    }

    /// `docker ARGS`, waited for.
    pub fn docker(&self, berth: &Berth, args: &[&str]) -> Output {
        finish(self.client(berth, "docker", args), None, args)
    }

    /// `docker ARGS` with `input` on stdin.
    pub fn docker_with_stdin(&self, berth: &Berth, args: &[&str], input: &[u8]) -> Output {
        finish(self.client(berth, "docker", args), Some(input), args)
    }

    /// `docker ARGS` on a fresh `rows` x `cols` pty, as a user at a terminal runs it.
    pub fn docker_pty(
        &self,
        berth: &Berth,
        args: &[&str],
        rows: u16,
        cols: u16,
    ) -> super::pty::PtySession {
        let mut cmd = self.client(berth, "docker", args);
        cmd.env("TERM", "xterm");
        let owner = berth
            .identity
            .drop_privileges
            .then_some((berth.identity.uid, berth.identity.gid));
        super::pty::PtySession::spawn(cmd, rows, cols, owner)
    }

    /// `docker ARGS`, which must succeed; its stdout.
    pub fn docker_ok(&self, berth: &Berth, args: &[&str]) -> String {
        let out = self.docker(berth, args);
        assert!(out.status.success(), "docker {}", describe(args, &out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One raw request: `head` is the request line and any headers of its own; the body goes
    /// with its length. The status line and the body of the answer.
    pub fn send(&self, head: &str, body: &[u8]) -> (String, String) {
        let mut req = format!(
            "{head}\r\nHost: berth\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        raw_request(&self.socket, &req)
    }

    /// The service process, to signal or wait for.
    pub fn process(&mut self) -> &mut Running {
        self.running.as_mut().expect("the service runs")
    }

    /// Ends the service and returns what it printed.
    pub fn stop(mut self) -> Output {
        let running = self.running.take().expect("the service runs");
        running.signal(nix::sys::signal::Signal::SIGTERM);
        running.wait(Duration::from_secs(20))
    }
}

/// One HTTP/1.1 request over the socket, answered: the status line and the body.
pub fn raw_request(socket: &std::path::Path, request: &[u8]) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = UnixStream::connect(socket).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

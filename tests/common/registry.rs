//! A Debian `docker-registry` on 127.0.0.1 for tests and benches: open or
//! with htpasswd basic auth, fed and inspected through skopeo.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The user of an auth registry.
pub const USER: &str = "berth-user";
/// Its password.
pub const PASSWORD: &str = "s3cret-Pa55word";

/// A `docker-registry` on 127.0.0.1, killed and removed on drop.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
    auth: bool,
}

impl Registry {
    /// Starts one; with `auth`, only [`USER`] with [`PASSWORD`] gets in.
    pub fn start(auth: bool) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd");
            assert!(out.status.success(), "htpasswd: {out:?}");
            let file = dir.path().join("htpasswd");
            fs::write(&file, &out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("write registry config");
        let log = fs::File::create(dir.path().join("log")).expect("log file");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning docker-registry");
        let registry = Registry {
            child,
            dir,
            port,
            auth,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                if reply.starts_with("HTTP/1.") {
                    return;
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not start:\n{}", self.log());
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its log, access log included.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `skopeo copy` of an oci-archive to `REPO:TAG` here.
    pub fn push_archive(&self, archive: &Path, repo_tag: &str) {
        self.push(&format!("oci-archive:{}", archive.display()), repo_tag);
    }

    /// `skopeo copy SOURCE docker://HOST/REPO:TAG`.
    pub fn push(&self, source: &str, repo_tag: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if self.auth {
            cmd.arg(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        cmd.arg(source)
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        run_tool(cmd);
    }

    /// `skopeo inspect` (`--raw` for the manifest bytes).
    pub fn inspect(&self, repo_tag: &str, raw: bool) -> Vec<u8> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--tls-verify=false"]);
        if raw {
            cmd.arg("--raw");
        }
        if self.auth {
            cmd.arg(format!("--creds={USER}:{PASSWORD}"));
        }
        cmd.arg(format!("docker://{}/{repo_tag}", self.host()));
        run_tool(cmd)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a tool that must succeed; returns its stdout.
pub fn run_tool(mut cmd: Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

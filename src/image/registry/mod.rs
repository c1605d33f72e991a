//! Registries: `pull`, `push`, `login`, `logout`, through the oci-client crate.
//!
//! - [`config`]: registry settings (mirrors, insecure registries, the search registry).
//! - [`auth`]: credentials in podman's auth file (Docker's read too).
//! - `pull`: manifests and indexes (OCI and Docker schema 2), platform choice,
//!   blobs streamed into the store with their digest checked on the way.
//! - `push`: blobs the registry lacks (HEAD first, mount when it can), then the manifest.
//!
//! oci-client is async. Each operation builds a current-thread tokio runtime,
//! runs on it, and shuts it down before returning ([`block_on`]): `berth run`
//! pulls and then forks a container with a raw clone, which must happen in a
//! process with a single thread, so the caller gets control back only once
//! every thread the runtime started is gone.

pub mod auth;
pub mod config;
mod login;
mod progress;
mod pull;
mod push;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use thiserror::Error;

use super::reference::ReferenceError;
use super::store::ImageError;

pub use auth::Credentials;
pub use config::{Endpoint, RegistriesConfig};
pub use login::{check_login, login, logout, normalize_host};
pub use progress::{ProgressEvent, ProgressMode, ProgressSink};
pub use pull::{pull, Platform, PullOptions, PulledImage};
pub use push::{push, PushOptions, PushedImage};

/// Layers (and blobs of a push) transferred at the same time.
const PARALLEL_BLOBS: usize = 3;

/// What went wrong talking to a registry.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The content store or the image itself is at fault.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A malformed reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The registry settings file is malformed.
    #[error("registry settings {}: {reason}", path.display())]
    Config {
        /// The settings file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The auth file cannot be read or written.
    #[error("auth file {}: {reason}; fix or remove it, then `berth login` again", path.display())]
    AuthFile {
        /// The auth file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--platform` is malformed.
    #[error(
        "invalid platform \"{0}\": write os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
    )]
    Platform(String),
    /// The registry has no such repository, tag or digest.
    #[error("{reference} not found on {registry}: check the name and the tag")]
    NotFound {
        /// What was asked for.
        reference: String,
        /// The registry asked.
        registry: String,
    },
    /// The registry wants credentials berth does not have, or refuses them for this repository.
    #[error("{registry} denied access to {reference}: log in with `berth login {registry}`, or check that the repository exists and you may use it")]
    AccessDenied {
        /// What was asked for.
        reference: String,
        /// The registry asked.
        registry: String,
    },
    /// The registry refused the user name and password.
    #[error("{registry} refused the user name or password: check them and log in again")]
    BadCredentials {
        /// The registry.
        registry: String,
    },
    /// The registry cannot be reached.
    #[error("cannot reach {registry} over {scheme}: {hint}")]
    Unreachable {
        /// The registry.
        registry: String,
        /// http or https.
        scheme: &'static str,
        /// What the failure says and what to do about it ([`unreachable_hint`]).
        hint: &'static str,
        /// The cause.
        #[source]
        source: OciDistributionError,
    },
    /// Any other registry failure, with what berth was doing.
    #[error("{action} on {registry} failed")]
    Protocol {
        /// What berth was doing.
        action: String,
        /// The registry.
        registry: String,
        /// The cause.
        #[source]
        source: OciDistributionError,
    },
    /// An index has no image for the platform asked for.
    #[error(
        "{reference} has no image for {wanted} (it has: {available}): choose one with --platform"
    )]
    NoMatchingPlatform {
        /// What was pulled.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms the index lists.
        available: String,
    },
    /// The async runtime cannot start.
    #[error("cannot start the registry client: {0}")]
    Runtime(#[source] std::io::Error),
    /// Threads of the registry client outlived it.
    #[error("the registry client left {0} threads running; berth will not start a container from a multi-threaded process: run the command again")]
    ThreadsLeft(usize),
    /// `berth logout` for a registry without credentials.
    #[error("not logged in to {0}")]
    NotLoggedIn(String),
}

/// Runs `future` on a fresh current-thread runtime, shuts the runtime down,
/// and returns only when the process has no more threads than before.
pub(crate) fn block_on<F: Future>(future: F) -> Result<F::Output, RegistryError> {
    let before = thread_count();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RegistryError::Runtime)?;
    let out = runtime.block_on(future);
    // Dropping the runtime joins its blocking pool (DNS lookups, file I/O).
    drop(runtime);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = thread_count();
        if now <= before {
            return Ok(out);
        }
        if Instant::now() > deadline {
            return Err(RegistryError::ThreadsLeft(now - before));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Threads of this process, from /proc/self/task.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// A client for `endpoint`: https with the system's CA store, or plain http
/// for an insecure endpoint; `tls_verify = false` accepts any certificate.
pub(crate) fn client(endpoint: &Endpoint, tls_verify: bool) -> Result<Client, RegistryError> {
    // reqwest is built without a default crypto provider: use ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ClientConfig {
        protocol: if endpoint.insecure {
            ClientProtocol::HttpsExcept(vec![endpoint.host.clone()])
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: !tls_verify,
        use_monolithic_push: true,
        platform_resolver: None,
        max_concurrent_download: PARALLEL_BLOBS,
        max_concurrent_upload: PARALLEL_BLOBS,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    Client::try_from(config).map_err(|source| RegistryError::Protocol {
        action: "setting up the registry client".into(),
        registry: endpoint.host.clone(),
        source,
    })
}

/// The ways to reach an endpoint, in order: as configured; with
/// `tls_verify = false`, a registry not marked insecure is tried over https
/// without certificate checks, then over plain http (podman's order).
pub(crate) fn attempts(endpoint: &Endpoint, tls_verify: bool) -> Vec<Endpoint> {
    let mut out = vec![endpoint.clone()];
    if !endpoint.insecure && !tls_verify {
        out.push(Endpoint {
            insecure: true,
            ..endpoint.clone()
        });
    }
    out
}

/// The credentials for an endpoint, anonymous when there are none.
pub(crate) fn registry_auth(
    endpoint: &Endpoint,
    given: Option<&Credentials>,
) -> Result<RegistryAuth, RegistryError> {
    if let Some(c) = given {
        return Ok(RegistryAuth::Basic(c.username.clone(), c.password.clone()));
    }
    Ok(match auth::lookup(&endpoint.host, &endpoint.repository)? {
        Some(c) => RegistryAuth::Basic(c.username, c.password),
        None => RegistryAuth::Anonymous,
    })
}

/// oci-client's reference for a repository on an endpoint.
pub(crate) fn oci_reference(
    endpoint: &Endpoint,
    tag: Option<&str>,
    digest: Option<&str>,
) -> oci_client::Reference {
    let (host, repo) = (endpoint.host.clone(), endpoint.repository.clone());
    match (tag, digest) {
        (_, Some(d)) => oci_client::Reference::with_digest(host, repo, d.to_string()),
        (Some(t), None) => oci_client::Reference::with_tag(host, repo, t.to_string()),
        (None, None) => oci_client::Reference::with_tag(host, repo, "latest".into()),
    }
}

/// Why a registry could not be reached, told from the request's error chain, with what to
/// do: TLS advice only where TLS failed.
fn unreachable_hint(e: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut text = String::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        text.push_str(&err.to_string().to_lowercase());
        text.push('\n');
        cur = err.source();
    }
    hint_for(&text)
}

fn hint_for(chain: &str) -> &'static str {
    let any = |words: &[&str]| words.iter().any(|w| chain.contains(w));
    if any(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "temporary failure in name resolution",
        "no address associated",
    ]) {
        "its name does not resolve here: check the name, and this machine's DNS and network connection"
    } else if any(&["connection refused"]) {
        "nothing answers at that address (connection refused): check the address and port, and that the registry runs"
    } else if any(&["network is unreachable", "no route to host"]) {
        "this machine has no route to it: check its network connection"
    } else if any(&["timed out", "timeout"]) {
        "it did not answer in time: check this machine's network connection (and proxy)"
    } else if any(&[
        "certificate",
        "tls",
        "ssl",
        "handshake",
        "invalidcontenttype",
        "corrupt message",
    ]) {
        "the TLS connection failed: for a registry without TLS add it as insecure in registries.toml or pass --tls-verify=false; for one with a private CA, trust its certificate"
    } else {
        "check the address and that the registry runs; for a registry without TLS add it as insecure in registries.toml or pass --tls-verify=false"
    }
}

/// Turns a client error into one that says what to do.
pub(crate) fn classify(
    e: OciDistributionError,
    endpoint: &Endpoint,
    reference: &str,
    action: &str,
) -> RegistryError {
    let registry = endpoint.host.clone();
    let has = |e: &OciDistributionError, wanted: &[OciErrorCode]| match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|err| wanted.contains(&err.code))
        }
        _ => false,
    };
    let missing = [
        OciErrorCode::ManifestUnknown,
        OciErrorCode::NameUnknown,
        OciErrorCode::NotFound,
        OciErrorCode::BlobUnknown,
    ];
    let denied = [OciErrorCode::Unauthorized, OciErrorCode::Denied];
    match e {
        _ if has(&e, &missing) => RegistryError::NotFound {
            reference: reference.to_string(),
            registry,
        },
        OciDistributionError::ServerError { code: 404, .. } => RegistryError::NotFound {
            reference: reference.to_string(),
            registry,
        },
        OciDistributionError::UnauthorizedError { .. } => RegistryError::AccessDenied {
            reference: reference.to_string(),
            registry,
        },
        _ if has(&e, &denied) => RegistryError::AccessDenied {
            reference: reference.to_string(),
            registry,
        },
        OciDistributionError::AuthenticationFailure(_) => {
            RegistryError::BadCredentials { registry }
        }
        OciDistributionError::RequestError(ref r) if r.is_connect() || r.is_timeout() => {
            RegistryError::Unreachable {
                registry,
                scheme: if endpoint.insecure { "http" } else { "https" },
                hint: unreachable_hint(r),
                source: e,
            }
        }
        source => RegistryError::Protocol {
            action: action.to_string(),
            registry,
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_tls_failure_gets_tls_advice() {
        let dns = "error sending request\nclient error (connect)\ndns error: failed to lookup address information: temporary failure in name resolution\n";
        assert!(hint_for(dns).contains("does not resolve"));
        let refused =
            "client error (connect)\ntcp connect error: connection refused (os error 111)\n";
        assert!(hint_for(refused).contains("connection refused"));
        assert!(!hint_for(refused).contains("TLS"));
        let tls = "client error (connect)\ninvalid peer certificate: unknownissuer\n";
        assert!(hint_for(tls).contains("TLS"));
        assert!(hint_for("operation timed out").contains("in time"));
    }
}

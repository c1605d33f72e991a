//! `berth login` and `berth logout`: check credentials against the registry,
//! then keep or drop them in the auth file.

use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;

use super::auth::{self, Credentials};
use super::{attempts, block_on, classify, oci_reference, RegistriesConfig, RegistryError};
use crate::image::reference::{self, DEFAULT_REGISTRY};
use crate::image::store::ImageError;

/// A repository no one has: asking for its tags tells good credentials
/// (404) from bad ones (401) on registries that use basic auth.
const PROBE_REPOSITORY: &str = "berth-login-probe/none";

/// The registry host a user's `HOST` argument means (`https://` and Docker
/// Hub's aliases accepted).
pub fn normalize_host(input: &str) -> Result<String, RegistryError> {
    let trimmed = input
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = trimmed.split('/').next().unwrap_or_default();
    let invalid = || {
        RegistryError::Image(ImageError::Usage(format!(
            "\"{input}\" is not a registry: give a host name, e.g. `registry.example.com` or `localhost:5000`"
        )))
    };
    if host.is_empty() {
        return Err(invalid());
    }
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY,
        h => h,
    };
    match reference::parse(&format!("{host}/x")) {
        Ok(r) if r.registry == host => Ok(host.to_string()),
        _ => Err(invalid()),
    }
}

/// Checks `creds` against `host` and saves them; returns the auth file.
pub fn login(
    config: &RegistriesConfig,
    host: &str,
    creds: &Credentials,
    tls_verify: bool,
) -> Result<std::path::PathBuf, RegistryError> {
    check_login(config, host, creds, tls_verify)?;
    auth::store(host, creds)
}

/// Checks `creds` against `host` without keeping them (the API's `/auth`: the client keeps
/// them).
pub fn check_login(
    config: &RegistriesConfig,
    host: &str,
    creds: &Credentials,
    tls_verify: bool,
) -> Result<(), RegistryError> {
    let probe = reference::parse(&format!("{host}/{PROBE_REPOSITORY}"))?;
    let endpoint = config.push_endpoint(&probe);
    let auth = RegistryAuth::Basic(creds.username.clone(), creds.password.clone());
    block_on(async {
        let mut result = Ok(());
        for attempt in attempts(&endpoint, tls_verify) {
            result = check(&attempt, host, &auth, tls_verify).await;
            if !matches!(result, Err(RegistryError::Unreachable { .. })) {
                break;
            }
        }
        result
    })?
}

/// Asks the registry whether `auth` is good.
async fn check(
    endpoint: &super::Endpoint,
    host: &str,
    auth: &RegistryAuth,
    tls_verify: bool,
) -> Result<(), RegistryError> {
    let client = super::client(endpoint, tls_verify)?;
    let target = oci_reference(endpoint, Some("latest"), None);
    let fail = |e| classify(e, endpoint, host, "logging in");
    // A bearer-token registry checks the password when it issues a token.
    let token = client
        .auth(&target, auth, RegistryOperation::Pull)
        .await
        .map_err(fail)?;
    if token.is_some() {
        return Ok(());
    }
    // Basic auth (or none): the credentials go with every request.
    let refused = || RegistryError::BadCredentials {
        registry: host.to_string(),
    };
    match client.list_tags(&target, auth, Some(1), None).await {
        Ok(_) => Ok(()),
        Err(OciDistributionError::UnauthorizedError { .. }) => Err(refused()),
        Err(e) => match fail(e) {
            RegistryError::NotFound { .. } => Ok(()),
            RegistryError::AccessDenied { .. } => Err(refused()),
            other => Err(other),
        },
    }
}

/// Drops the credentials for `host` from the auth file.
pub fn logout(host: &str) -> Result<(), RegistryError> {
    if auth::remove(host)? {
        Ok(())
    } else {
        Err(RegistryError::NotLoggedIn(host.to_string()))
    }
}

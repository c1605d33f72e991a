//! Registry credentials in the auth file podman and skopeo use, readable by Docker's format.
//!
//! Written: `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`
//! (else `~/.config/containers/auth.json`), mode 0600 in a 0700 directory,
//! replaced atomically; other entries and keys in the file are kept.
//! Read: that file, then `~/.config/containers/auth.json`, then
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
//!
//! ```json
//! {"auths": {"registry.example.com": {"auth": "<base64 user:password>"}}}
//! ```
//!
//! Credential helpers (`credHelpers`, `credsStore`) are not run.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::RegistryError;
use crate::image::store::unique_name;

/// A user name and password for one registry (serializable: the API service hands an API
/// client's to its engine helper on a pipe).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token; never printed.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The file `berth login` writes.
pub fn auth_file() -> PathBuf {
    if let Some(p) = env_path("REGISTRY_AUTH_FILE") {
        return p;
    }
    match env_path("XDG_RUNTIME_DIR") {
        Some(run) => run.join("containers/auth.json"),
        None => home().join(".config/containers/auth.json"),
    }
}

/// Every file credentials are read from, in order.
fn read_files() -> Vec<PathBuf> {
    let docker = env_path("DOCKER_CONFIG").unwrap_or_else(|| home().join(".docker"));
    let mut files = vec![
        auth_file(),
        home().join(".config/containers/auth.json"),
        docker.join("config.json"),
    ];
    files.dedup();
    files
}

/// The keys an entry for `host` may have (Docker Hub has several names).
fn keys_for(host: &str) -> Vec<String> {
    let mut keys = vec![host.to_string()];
    if matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        keys.extend(
            [
                "docker.io",
                "index.docker.io",
                "registry-1.docker.io",
                "https://index.docker.io/v1/",
            ]
            .map(String::from),
        );
    }
    keys.push(format!("https://{host}"));
    keys.push(format!("http://{host}"));
    keys.dedup();
    keys
}

/// The credentials for `repository` on `host`: an entry for `host/repository`
/// (or a parent path) first, as podman allows, then one for `host`.
pub fn lookup(host: &str, repository: &str) -> Result<Option<Credentials>, RegistryError> {
    for file in read_files() {
        let Some(auths) = read_auths(&file)? else {
            continue;
        };
        let mut scopes: Vec<String> = Vec::new();
        let mut path = format!("{host}/{repository}");
        while let Some((parent, _)) = path.rsplit_once('/') {
            scopes.push(path.clone());
            path = parent.to_string();
        }
        scopes.extend(keys_for(host));
        for key in scopes {
            if let Some(entry) = auths.get(&key) {
                if let Some(c) = decode_entry(entry, &file)? {
                    return Ok(Some(c));
                }
            }
        }
    }
    Ok(None)
}

/// Saves credentials for `host` in [`auth_file`]; returns the file.
pub fn store(host: &str, creds: &Credentials) -> Result<PathBuf, RegistryError> {
    let path = auth_file();
    let mut doc = read_doc(&path)?.unwrap_or_else(|| Value::Object(Map::new()));
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", creds.username, creds.password));
    let root = doc
        .as_object_mut()
        .ok_or_else(|| malformed(&path, "not a JSON object"))?;
    let auths = root
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| malformed(&path, "\"auths\" is not an object"))?;
    auths.insert(host.to_string(), serde_json::json!({ "auth": encoded }));
    write_doc(&path, &doc)?;
    Ok(path)
}

/// Removes the entry for `host` from [`auth_file`]; false when there was none.
pub fn remove(host: &str) -> Result<bool, RegistryError> {
    let path = auth_file();
    let Some(mut doc) = read_doc(&path)? else {
        return Ok(false);
    };
    let mut removed = false;
    if let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) {
        for key in keys_for(host) {
            removed |= auths.remove(&key).is_some();
        }
    }
    if removed {
        write_doc(&path, &doc)?;
    }
    Ok(removed)
}

fn malformed(path: &Path, reason: &str) -> RegistryError {
    RegistryError::AuthFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_doc(path: &Path) -> Result<Option<Value>, RegistryError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(malformed(path, &e.to_string())),
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| malformed(path, &format!("not valid JSON ({e})")))
}

fn read_auths(path: &Path) -> Result<Option<Map<String, Value>>, RegistryError> {
    Ok(read_doc(path)?.and_then(|d| d.get("auths").and_then(Value::as_object).cloned()))
}

fn decode_entry(entry: &Value, path: &Path) -> Result<Option<Credentials>, RegistryError> {
    let Some(auth) = entry.get("auth").and_then(Value::as_str) else {
        return Ok(None);
    };
    if auth.is_empty() {
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| malformed(path, "an \"auth\" value is not base64"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| malformed(path, "an \"auth\" value is not UTF-8"))?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| malformed(path, "an \"auth\" value is not `user:password`"))?;
    Ok(Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    }))
}

/// Writes `doc` to a 0600 temporary file beside `path` and renames it over `path`.
fn write_doc(path: &Path, doc: &Value) -> Result<(), RegistryError> {
    let io_err = |e: std::io::Error| malformed(path, &e.to_string());
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
    }
    let tmp = dir.join(unique_name(".auth.json"));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        // The mode above is filtered by the umask; 0600 exactly is the contract.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        let mut text = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
        text.push(b'\n');
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_docker_keys_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/auth.json");
        let creds = Credentials {
            username: "user".into(),
            password: "p:ss".into(),
        };
        let doc = serde_json::json!({"auths": {"other.example.com": {"auth": "eDp5"}}, "keep": 1});
        write_doc(&path, &doc).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let auths = read_auths(&path).unwrap().unwrap();
        let got = decode_entry(&auths["other.example.com"], &path)
            .unwrap()
            .unwrap();
        assert_eq!((got.username.as_str(), got.password.as_str()), ("x", "y"));
        let encoded = base64::engine::general_purpose::STANDARD.encode("user:p:ss");
        let entry = serde_json::json!({ "auth": encoded });
        assert_eq!(decode_entry(&entry, &path).unwrap(), Some(creds.clone()));
        assert!(!format!("{creds:?}").contains("p:ss"));
        assert!(keys_for("docker.io").contains(&"https://index.docker.io/v1/".to_string()));
        assert!(decode_entry(&serde_json::json!({"auth": "!!"}), &path).is_err());
        assert_eq!(decode_entry(&serde_json::json!({}), &path).unwrap(), None);
    }
}

//! Docker image references: parse, validate and normalise `name[:tag][@digest]`.
//!
//! The grammar follows the distribution project's `reference` package, the one
//! Docker and podman share: `busybox` means `docker.io/library/busybox:latest`,
//! a first component with a `.` or `:` or equal to `localhost` is a registry,
//! repository components are lowercase, tags match `[\w][\w.-]{0,127}`.

use std::fmt;

use thiserror::Error;

/// The registry an unqualified name refers to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The namespace of single-component names on the default registry.
const OFFICIAL_NAMESPACE: &str = "library";
/// The tag of a reference that names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository name (registry and path) the grammar allows.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A reference that does not follow Docker's grammar.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Nothing to parse.
    #[error("empty image reference: name an image, e.g. `busybox` or `docker.io/library/busybox:latest`")]
    Empty,
    /// The repository has uppercase letters.
    #[error("invalid image reference \"{reference}\": repository names must be lowercase (try \"{suggestion}\")")]
    Uppercase {
        /// The reference as given.
        reference: String,
        /// The same reference with a lowercase repository.
        suggestion: String,
    },
    /// A 64-hex string is an image id, not a name.
    #[error("invalid image reference \"{0}\": a 64-character hex string is an image id, not a repository name; write it as `sha256:{0}`")]
    HexName(String),
    /// The name part is malformed.
    #[error("invalid image reference \"{reference}\": {reason}")]
    Invalid {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// Repository path below the registry (`library/busybox`).
    pub repository: String,
    /// Tag, `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Digest (`sha256:<64 hex>`), when given.
    pub digest: Option<String>,
}

impl Reference {
    /// `registry/repository`, the full name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short name Docker shows: default registry and `library/` left out.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            match self.repository.strip_prefix("library/") {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The short display form, e.g. `busybox:latest` or `localhost:5000/x:1`.
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_name();
        push_suffix(&mut out, self);
        out
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        push_suffix(&mut out, self);
        f.write_str(&out)
    }
}

fn push_suffix(out: &mut String, r: &Reference) {
    if let Some(tag) = &r.tag {
        out.push(':');
        out.push_str(tag);
    }
    if let Some(digest) = &r.digest {
        out.push('@');
        out.push_str(digest);
    }
}

/// Parses and normalises a reference (`busybox` -> `docker.io/library/busybox:latest`).
pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
    if input.is_empty() {
        return Err(ReferenceError::Empty);
    }
    let invalid = |reason: &str| ReferenceError::Invalid {
        reference: input.to_string(),
        reason: reason.to_string(),
    };

    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => {
            validate_digest(digest).map_err(|reason| invalid(&reason))?;
            (rest, Some(digest.to_string()))
        }
        None => (input, None),
    };
    // A tag follows the last ':' that comes after the last '/'; a ':' before
    // that belongs to a registry port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let tag = &rest[last_slash + i + 1..];
            if !valid_tag(tag) {
                return Err(invalid(
                    "tags are 1 to 128 characters of letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
                ));
            }
            (&rest[..last_slash + i], Some(tag.to_string()))
        }
        None => (rest, None),
    };
    if name.is_empty() {
        return Err(invalid("the repository name is missing"));
    }
    if is_hex64(name) {
        return Err(ReferenceError::HexName(name.to_string()));
    }

    let (registry, path) = split_registry(name);
    if name.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(invalid("the name is longer than 255 characters"));
    }
    if let Some(registry) = registry {
        if !valid_domain(registry) {
            return Err(invalid(
                "the registry must be a host name or address, optionally with `:port`",
            ));
        }
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) && valid_path(&path.to_ascii_lowercase()) {
        let lowered = format!(
            "{}{}{}",
            registry.map(|r| format!("{r}/")).unwrap_or_default(),
            path.to_ascii_lowercase(),
            &rest[name.len()..]
        );
        return Err(ReferenceError::Uppercase {
            reference: input.to_string(),
            suggestion: lowered,
        });
    }
    if !valid_path(path) {
        return Err(invalid(
            "repository components are lowercase letters and digits, separated by `/` and joined by `.`, `_`, `__` or dashes",
        ));
    }

    let registry = match registry {
        None | Some("index.docker.io") => DEFAULT_REGISTRY.to_string(),
        Some(r) => r.to_string(),
    };
    let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("{OFFICIAL_NAMESPACE}/{path}")
    } else {
        path.to_string()
    };
    let tag = match (tag, &digest) {
        (None, None) => Some(DEFAULT_TAG.to_string()),
        (tag, _) => tag,
    };
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

/// Splits off the registry the way Docker does: the first component is a
/// registry when it has a `.` or `:`, is `localhost`, or has an uppercase letter.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `[\w][\w.-]{0,127}`
pub(crate) fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// Only sha256 digests are supported: that is what every image tool writes.
fn validate_digest(digest: &str) -> Result<(), String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if is_hex64(hex) => Ok(()),
        Some(("sha256", _)) => Err("a sha256 digest is 64 lowercase hex characters".into()),
        Some((alg, _)) => Err(format!(
            "digest algorithm `{alg}` is not supported: use a sha256 digest"
        )),
        None => Err("a digest looks like `sha256:<64 hex characters>`".into()),
    }
}

/// path-component ('/' path-component)*, path-component = alnum (separator alnum)*,
/// separator = `.` | `_` | `__` | `-`+
fn valid_path(path: &str) -> bool {
    path.split('/').all(valid_path_component)
}

fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// domain-component ('.' domain-component)* [':' port], or a bracketed IPv6 address.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match domain.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.is_empty() {
        return domain.starts_with('[');
    }
    host.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    })
}

/// The edit distance between `a` and `b`: insertions, deletions, substitutions and swaps of
/// two neighbouring characters (a typo's usual forms) count one each.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: the distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The name among `known` (familiar `NAME:TAG` forms) that `wanted` most likely misspells:
/// the closest by [`edit_distance`] (the tag compared only where `wanted` gives one), if
/// close enough to be a typo (at most 2 edits, fewer for short names). None for an exact match.
pub fn closest<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let r = parse(wanted).ok()?;
    let name = r.familiar_name();
    // `parse` fills in `latest`: only a tag written out counts.
    let written = wanted
        .split('@')
        .next()
        .is_some_and(|w| w.rsplit('/').next().is_some_and(|last| last.contains(':')));
    let tag = r.tag.clone().filter(|_| written);
    let limit = (name.chars().count() / 4).clamp(1, 2);
    known
        .into_iter()
        .filter_map(|k| {
            let kr = parse(k).ok()?;
            let mut d = edit_distance(&name, &kr.familiar_name());
            if let (Some(t), Some(kt)) = (&tag, &kr.tag) {
                d += edit_distance(t, kt);
            }
            (d > 0 && d <= limit).then_some((d, k))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_short_names() {
        let r = parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar(), "busybox:latest");
        let r = parse("user/app:1.0").unwrap();
        assert_eq!(r.to_string(), "docker.io/user/app:1.0");
        assert_eq!(r.familiar(), "user/app:1.0");
        let r = parse("index.docker.io/library/alpine:3").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:3");
        assert_eq!(r.familiar(), "alpine:3");
    }

    #[test]
    fn registries_with_ports_and_localhost() {
        let r = parse("localhost:5000/x:1").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "x");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.familiar(), "localhost:5000/x:1");
        let r = parse("localhost/x").unwrap();
        assert_eq!(r.to_string(), "localhost/x:latest");
        let r = parse("quay.io/a/b/c").unwrap();
        assert_eq!(r.to_string(), "quay.io/a/b/c:latest");
        let r = parse("registry:5000/app").unwrap();
        assert_eq!(r.registry, "registry:5000");
        let r = parse("[::1]:5000/app:v").unwrap();
        assert_eq!(r.registry, "[::1]:5000");
    }

    #[test]
    fn digests() {
        let r = parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = parse(&format!("localhost:5000/x:1@{D}")).unwrap();
        assert_eq!(r.familiar(), format!("localhost:5000/x:1@{D}"));
        assert!(parse("busybox@sha256:abc").is_err());
        assert!(parse("busybox@md5:0123").is_err());
        assert!(parse(&format!("@{D}")).is_err());
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(parse(""), Err(ReferenceError::Empty));
        assert!(matches!(
            parse("Busybox"),
            Err(ReferenceError::Uppercase { ref suggestion, .. }) if suggestion == "busybox"
        ));
        for bad in [
            "a//b",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "a:",
            "a:-x",
            "a:.x",
            "/a",
            "a/",
            "a b",
            "host:port/x",
            "exa_mple.com/x",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(matches!(
            parse(&"a".repeat(64).replace('a', "b")),
            Err(ReferenceError::HexName(_))
        ));
        assert!(parse(&format!("x:{}", "t".repeat(129))).is_err());
        assert!(parse(&format!("x:{}", "t".repeat(128))).is_ok());
        assert!(parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn accepts_separators_and_tags() {
        for good in [
            "a.b",
            "a_b",
            "a__b",
            "a---b",
            "a/b-c/d",
            "x:V1.2_3-rc",
            "x:_",
        ] {
            assert!(parse(good).is_ok(), "{good} should be accepted");
        }
        // An uppercase first component is a registry, as in Docker.
        assert_eq!(parse("Example/x").unwrap().registry, "Example");
    }

    #[test]
    fn typos_find_the_local_name_meant() {
        assert_eq!(edit_distance("debain", "debian"), 1, "a swap is one edit");
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let known = [
            "bars/debian:12",
            "busybox:latest",
            "localhost/berth-test:latest",
        ];
        assert_eq!(closest("bars/debain:12", known), Some("bars/debian:12"));
        assert_eq!(closest("bars/debain", known), Some("bars/debian:12"));
        assert_eq!(closest("bars/debian:13", known), Some("bars/debian:12"));
        assert_eq!(closest("busybix", known), Some("busybox:latest"));
        assert_eq!(
            closest("localhost/berth-tset", known),
            Some("localhost/berth-test:latest")
        );
        assert_eq!(closest("alpine", known), None, "nothing close");
        assert_eq!(closest("bars/debian:12", known), None, "not a typo");
        assert_eq!(closest("nginx", known), None);
    }
}

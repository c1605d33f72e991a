//! `--restart no|on-failure[:N]|always|unless-stopped`: when a sandbox that ended comes back,
//! and after how long. Pure logic; the monitor applies it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A restart policy, as Docker spells and means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max` times (0: no limit).
    OnFailure {
        max: u32,
    },
    Always,
    /// As `always` while the monitor lives; berth has no daemon whose restart would tell
    /// the two apart.
    UnlessStopped,
}

/// Why a restart policy string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid restart policy {0:?}: use no, on-failure[:MAX-RETRIES], always or unless-stopped")]
pub struct PolicyError(pub String);

impl FromStr for RestartPolicy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let bad = || PolicyError(s.to_string());
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        match (name, count) {
            ("" | "no", None) => Ok(RestartPolicy::No),
            ("always", None) => Ok(RestartPolicy::Always),
            ("unless-stopped", None) => Ok(RestartPolicy::UnlessStopped),
            ("on-failure", None) => Ok(RestartPolicy::OnFailure { max: 0 }),
            ("on-failure", Some(c)) => c
                .parse()
                .map(|max| RestartPolicy::OnFailure { max })
                .map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max: 0 } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max } => write!(f, "on-failure:{max}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl serde::Serialize for RestartPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RestartPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl RestartPolicy {
    /// Docker's name for the policy (`HostConfig.RestartPolicy.Name`).
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// `HostConfig.RestartPolicy.MaximumRetryCount`.
    pub fn max_retries(&self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max } => *max,
            _ => 0,
        }
    }

    /// Whether a sandbox that ended with `code` comes back. `stopped` is true when a user
    /// stopped it (`berth stop`, `berth kill` with the stop signal or SIGKILL, `rm -f`):
    /// then no policy restarts it. `restarts` counts the restarts so far.
    pub fn should_restart(&self, code: i32, stopped: bool, restarts: u32) -> bool {
        if stopped {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max } => code != 0 && (*max == 0 || restarts < *max),
        }
    }
}

/// The first restart delay; each quick restart doubles it, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest restart delay.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A sandbox that ran this long before it ended restarts at once, as a fresh start.
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// How long to wait before restart number `restarts + 1` of a sandbox that ran for `ran`,
/// and the delay to remember for the next one (Docker's doubling back-off).
pub fn backoff(previous: Option<Duration>, ran: Duration) -> Duration {
    match previous {
        Some(prev) if ran < RESET_AFTER => (prev * 2).min(MAX_DELAY),
        _ => FIRST_DELAY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_spellings() {
        assert_eq!("no".parse(), Ok(RestartPolicy::No));
        assert_eq!("always".parse(), Ok(RestartPolicy::Always));
        assert_eq!("unless-stopped".parse(), Ok(RestartPolicy::UnlessStopped));
        assert_eq!(
            "on-failure:3".parse(),
            Ok(RestartPolicy::OnFailure { max: 3 })
        );
        assert_eq!(
            "on-failure".parse(),
            Ok(RestartPolicy::OnFailure { max: 0 })
        );
        assert!("sometimes".parse::<RestartPolicy>().is_err());
        assert!("on-failure:x".parse::<RestartPolicy>().is_err());
        assert_eq!(
            RestartPolicy::OnFailure { max: 3 }.to_string(),
            "on-failure:3"
        );
    }

    #[test]
    fn decides_like_docker() {
        let on_failure = RestartPolicy::OnFailure { max: 2 };
        assert!(on_failure.should_restart(1, false, 0));
        assert!(on_failure.should_restart(1, false, 1));
        assert!(
            !on_failure.should_restart(1, false, 2),
            "at most 2 restarts"
        );
        assert!(!on_failure.should_restart(0, false, 0), "success ends it");
        assert!(RestartPolicy::Always.should_restart(0, false, 100));
        assert!(
            !RestartPolicy::Always.should_restart(0, true, 0),
            "stopped by the user"
        );
        assert!(!RestartPolicy::No.should_restart(1, false, 0));
    }

    #[test]
    fn backoff_doubles_and_resets() {
        assert_eq!(backoff(None, Duration::ZERO), FIRST_DELAY);
        assert_eq!(
            backoff(Some(FIRST_DELAY), Duration::from_secs(1)),
            FIRST_DELAY * 2
        );
        assert_eq!(backoff(Some(MAX_DELAY), Duration::ZERO), MAX_DELAY);
        assert_eq!(
            backoff(Some(MAX_DELAY), Duration::from_secs(11)),
            FIRST_DELAY
        );
    }
}

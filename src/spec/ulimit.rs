//! `--ulimit NAME=SOFT[:HARD]` in Docker's syntax, turned into the spec's `process.rlimits`
//! (applied by the container's init and by the microVM agent before the command runs).

use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType};

/// Docker's names, as `ulimit` and setrlimit(2) know them.
const NAMES: &[(&str, PosixRlimitType)] = &[
    ("core", PosixRlimitType::RlimitCore),
    ("cpu", PosixRlimitType::RlimitCpu),
    ("data", PosixRlimitType::RlimitData),
    ("fsize", PosixRlimitType::RlimitFsize),
    ("locks", PosixRlimitType::RlimitLocks),
    ("memlock", PosixRlimitType::RlimitMemlock),
    ("msgqueue", PosixRlimitType::RlimitMsgqueue),
    ("nice", PosixRlimitType::RlimitNice),
    ("nofile", PosixRlimitType::RlimitNofile),
    ("nproc", PosixRlimitType::RlimitNproc),
    ("rss", PosixRlimitType::RlimitRss),
    ("rtprio", PosixRlimitType::RlimitRtprio),
    ("rttime", PosixRlimitType::RlimitRttime),
    ("sigpending", PosixRlimitType::RlimitSigpending),
    ("stack", PosixRlimitType::RlimitStack),
];

/// A `--ulimit` that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UlimitError {
    #[error("invalid --ulimit {0:?}: expected NAME=SOFT[:HARD], e.g. --ulimit nofile=1024:2048")]
    Syntax(String),
    #[error(
        "invalid --ulimit {given:?}: unknown name {name:?}; use one of core, cpu, data, fsize, \
         locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack"
    )]
    Name { given: String, name: String },
    #[error("invalid --ulimit {given:?}: {value:?} is not a number (or -1 for unlimited)")]
    Value { given: String, value: String },
    #[error("invalid --ulimit {0:?}: the soft limit must not exceed the hard limit")]
    SoftAboveHard(String),
}

/// One `--ulimit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

impl Ulimit {
    /// Parses `NAME=SOFT[:HARD]` (HARD defaults to SOFT; -1 means unlimited).
    pub fn parse(s: &str) -> Result<Ulimit, UlimitError> {
        let (name, limits) = s
            .split_once('=')
            .ok_or_else(|| UlimitError::Syntax(s.to_string()))?;
        if !NAMES.iter().any(|(n, _)| *n == name) {
            return Err(UlimitError::Name {
                given: s.to_string(),
                name: name.to_string(),
            });
        }
        let number = |v: &str| -> Result<u64, UlimitError> {
            match v.trim() {
                "-1" | "unlimited" => Ok(libc::RLIM_INFINITY),
                n => n.parse::<u64>().map_err(|_| UlimitError::Value {
                    given: s.to_string(),
                    value: v.to_string(),
                }),
            }
        };
        let (soft, hard) = match limits.split_once(':') {
            Some((soft, hard)) => (number(soft)?, number(hard)?),
            None => {
                let v = number(limits)?;
                (v, v)
            }
        };
        if soft > hard {
            return Err(UlimitError::SoftAboveHard(s.to_string()));
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }

    /// The spec's entry.
    pub fn to_rlimit(&self) -> PosixRlimit {
        let typ = NAMES
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, t)| *t)
            .expect("parse accepts only known names");
        PosixRlimitBuilder::default()
            .typ(typ)
            .soft(self.soft)
            .hard(self.hard)
            .build()
            .expect("every field of a PosixRlimit is set")
    }
}

/// The spec's `process.rlimits` for `ulimits`: one entry per name, the last given winning.
pub fn rlimits(ulimits: &[Ulimit]) -> Vec<PosixRlimit> {
    let mut out: Vec<PosixRlimit> = Vec::new();
    for u in ulimits {
        let r = u.to_rlimit();
        out.retain(|o| o.typ() != r.typ());
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_and_hard_as_docker_writes_them() {
        let u = Ulimit::parse("nofile=1024:2048").unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 1024, 2048));
        let u = Ulimit::parse("nproc=64").unwrap();
        assert_eq!((u.soft, u.hard), (64, 64), "one value sets both");
        let u = Ulimit::parse("core=-1").unwrap();
        assert_eq!(u.hard, libc::RLIM_INFINITY);
        let u = Ulimit::parse("stack=8192:-1").unwrap();
        assert_eq!((u.soft, u.hard), (8192, libc::RLIM_INFINITY));
    }

    #[test]
    fn mistakes_are_refused_with_the_fix() {
        assert!(matches!(
            Ulimit::parse("nofile"),
            Err(UlimitError::Syntax(_))
        ));
        let e = Ulimit::parse("files=10").unwrap_err();
        assert!(e.to_string().contains("nofile"), "{e}");
        assert!(matches!(
            Ulimit::parse("nofile=ten"),
            Err(UlimitError::Value { .. })
        ));
        assert!(matches!(
            Ulimit::parse("nofile=10:5"),
            Err(UlimitError::SoftAboveHard(_))
        ));
        assert!(Ulimit::parse("as=10").is_err(), "not one of Docker's names");
    }

    #[test]
    fn every_name_maps_and_the_last_one_given_wins() {
        for (name, typ) in NAMES {
            let r = Ulimit::parse(&format!("{name}=1")).unwrap().to_rlimit();
            assert_eq!(r.typ(), *typ);
        }
        let list = rlimits(&[
            Ulimit::parse("nofile=10").unwrap(),
            Ulimit::parse("nproc=5").unwrap(),
            Ulimit::parse("nofile=20:30").unwrap(),
        ]);
        assert_eq!(list.len(), 2);
        let nofile = list
            .iter()
            .find(|r| r.typ() == PosixRlimitType::RlimitNofile)
            .unwrap();
        assert_eq!((nofile.soft(), nofile.hard()), (20, 30));
    }
}

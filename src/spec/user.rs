//! Resolving `USER[:GROUP]` (from `-u` or the image config) through the image's /etc/passwd
//! and /etc/group, as Docker does.

/// A resolved process identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in the image's /etc/passwd; use a numeric id (-u 1000) or add the user to the image")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in the image's /etc/group; use a numeric id (-u USER:50)")]
    NoGroup(String),
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 6 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 || l.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// The user `--userns=keep-id` runs as: the host user's name with the ids it has inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepIdUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The /etc/passwd and /etc/group a keep-id container sees: the image's, plus an entry for
/// `user` where the image has none for its uid (or gid), with `home` as its home, as podman
/// does. The image itself is left as it is: berth bind-mounts these over it.
pub fn with_user(
    passwd: Option<&str>,
    group: Option<&str>,
    user: &KeepIdUser,
    home: &str,
) -> (String, String) {
    let ensure_newline = |t: &str| {
        let mut t = t.to_string();
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t
    };
    let mut p = ensure_newline(passwd.unwrap_or("root:x:0:0:root:/root:/bin/sh\n"));
    if !passwd_entries(&p).any(|e| e.uid == user.uid) {
        let name = if passwd_entries(&p).any(|e| e.name == user.name) {
            format!("{}{}", user.name, user.uid)
        } else {
            user.name.clone()
        };
        p.push_str(&format!(
            "{name}:*:{}:{}:{name}:{home}:/bin/sh\n",
            user.uid, user.gid
        ));
    }
    let mut g = ensure_newline(group.unwrap_or("root:x:0:\n"));
    if !group_entries(&g).any(|e| e.gid == user.gid) {
        let name = if group_entries(&g).any(|e| e.name == user.name) {
            format!("{}{}", user.name, user.gid)
        } else {
            user.name.clone()
        };
        g.push_str(&format!("{name}:x:{}:\n", user.gid));
    }
    (p, g)
}

/// Resolves `spec` ("", "name", "uid", "name:group", "uid:gid", ...) against the image's
/// passwd and group files (either may be missing).
pub fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    let numeric = user_part.parse::<u32>().ok();
    let entry = passwd_entries(passwd).find(|e| match numeric {
        Some(uid) => e.uid == uid,
        None => e.name == user_part,
    });
    let (uid, mut gid, home, name) = match (&entry, numeric) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name.to_string())),
        (None, Some(uid)) => (uid, 0, "/".to_string(), None),
        (None, None) => return Err(UserError::NoUser(user_part.to_string())),
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::NoGroup(g.to_string()))?,
        };
    }
    let mut additional: Vec<u32> = match &name {
        Some(n) => group_entries(group)
            .filter(|e| e.members.iter().any(|m| m == n))
            .map(|e| e.gid)
            .collect(),
        None => vec![],
    };
    additional.retain(|g| *g != gid);
    additional.sort_unstable();
    additional.dedup();
    Ok(ExecUser {
        uid,
        gid,
        additional_gids: additional,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:user\nuser:x:1000:\nwheel:x:10:root,user\n";

    #[test]
    fn root_by_default() {
        let u = resolve("", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.additional_gids, vec![10]);
    }

    #[test]
    fn names_and_groups() {
        let u = resolve("user", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![10, 50]);
        let u = resolve("user:staff", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(u.gid, 50);
        let u = resolve("1000:50", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 50, "/home/user"));
    }

    #[test]
    fn unknown_numeric_ids_pass_through() {
        let u = resolve("4242:4343", Some(PASSWD), None).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 4343, "/"));
        let u = resolve("4242", None, None).unwrap();
        assert_eq!(u.gid, 0);
    }

    #[test]
    fn unknown_names_fail_clearly() {
        assert_eq!(
            resolve("ghost", Some(PASSWD), Some(GROUP)),
            Err(UserError::NoUser("ghost".into()))
        );
        assert_eq!(
            resolve("user:ghosts", Some(PASSWD), Some(GROUP)),
            Err(UserError::NoGroup("ghosts".into()))
        );
    }

    #[test]
    fn keep_id_user_is_added_only_when_missing() {
        let alice = KeepIdUser {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
        };
        let (p, g) = with_user(Some("root:x:0:0:root:/root:/bin/sh"), None, &alice, "/src");
        assert_eq!(
            p,
            "root:x:0:0:root:/root:/bin/sh\nalice:*:1000:1000:alice:/src:/bin/sh\n"
        );
        assert_eq!(g, "root:x:0:\nalice:x:1000:\n");
        let u = resolve("1000:1000", Some(&p), Some(&g)).unwrap();
        assert_eq!(u.home, "/src");
        // The image's own user 1000 (node's `node`) stays as it is.
        let image = "root:x:0:0::/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n";
        let groups = "root:x:0:\nnode:x:1000:\n";
        assert_eq!(
            with_user(Some(image), Some(groups), &alice, "/"),
            (image.to_string(), groups.to_string())
        );
    }
}

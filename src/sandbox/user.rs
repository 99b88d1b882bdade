//! USER resolution against the image's /etc/passwd and /etc/group, with Docker's rules: a name
//! or uid, optionally `:group`; supplementary groups from /etc/group unless a group is given;
//! an unknown numeric uid gets gid 0; the primary gid is always among the groups.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: Option<String>,
}

fn passwd_entry<'a>(passwd: &'a str, key: &str) -> Option<Vec<&'a str>> {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == key || f[2] == key))
}

fn group_id(group: &str, key: &str) -> Option<u32> {
    group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && (f[0] == key || f[2] == key))
        .and_then(|f| f[2].parse().ok())
}

/// A USER value the image's /etc/passwd and /etc/group cannot resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("invalid uid in /etc/passwd for {user}")]
    BadUid { user: String },
    #[error("invalid gid in /etc/passwd for {user}")]
    BadGid { user: String },
    #[error("unable to find user {user}: no matching entries in /etc/passwd")]
    NoUser { user: String },
    #[error("unable to find group {group}: no matching entries in /etc/group")]
    NoGroup { group: String },
}

/// Resolve a USER value. Errors name what could not be found.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Ids, UserError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = passwd_entry(passwd, user);
    let (uid, mut gid, name, home) = match (&entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| UserError::BadUid { user: user.into() })?,
            f[3].parse::<u32>()
                .map_err(|_| UserError::BadGid { user: user.into() })?,
            Some(f[0]),
            f.get(5).map(|h| h.to_string()),
        ),
        (None, Ok(n)) => (n, 0, None, None),
        (None, Err(_)) => return Err(UserError::NoUser { user: user.into() }),
    };
    let mut groups = Vec::new();
    match grp {
        Some(g) => {
            gid = match (group_id(group, g), g.parse::<u32>()) {
                (Some(id), _) => id,
                (None, Ok(n)) => n,
                (None, Err(_)) => return Err(UserError::NoGroup { group: g.into() }),
            };
        }
        None => {
            if let Some(name) = name {
                for l in group.lines() {
                    let f: Vec<&str> = l.split(':').collect();
                    if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                        if let Ok(id) = f[2].parse::<u32>() {
                            groups.push(id);
                        }
                    }
                }
            }
        }
    }
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Ok(Ids {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:root,app\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n";

    #[test]
    fn docker_rules() {
        assert_eq!(
            resolve("", PASSWD, GROUP).unwrap(),
            Ids {
                uid: 0,
                gid: 0,
                groups: vec![0, 10],
                home: Some("/root".into())
            }
        );
        assert_eq!(
            resolve("app", PASSWD, GROUP).unwrap().groups,
            vec![1000, 10, 2000]
        );
        assert_eq!(resolve("1000", PASSWD, GROUP).unwrap().uid, 1000);
        let g = resolve("app:extra", PASSWD, GROUP).unwrap();
        assert_eq!((g.gid, g.groups), (2000, vec![2000]));
        assert_eq!(
            resolve("1042:1043", PASSWD, GROUP).unwrap(),
            Ids {
                uid: 1042,
                gid: 1043,
                groups: vec![1043],
                home: None
            }
        );
        assert_eq!(resolve("1234", PASSWD, GROUP).unwrap().gid, 0);
        let e = resolve("nobody", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            e,
            UserError::NoUser {
                user: "nobody".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "unable to find user nobody: no matching entries in /etc/passwd"
        );
        let e = resolve("app:nope", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find group nope: no matching entries in /etc/group"
        );
    }
}

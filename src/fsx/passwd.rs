//! The one reader of an image's `/etc/passwd` and `/etc/group`: entries by name or id, group
//! membership, and USER resolution with Docker's rules (a name or uid, optionally `:group`;
//! supplementary groups from /etc/group unless a group is given; an unknown numeric uid gets
//! gid 0; the primary gid always among the groups). It takes the files' text: where they come
//! from (an unpacked root, a layer's tar, a path index) is the caller's business.

/// One line of `/etc/passwd` with at least four fields. Ids stay as written: a malformed one
/// is the caller's error to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub gid: &'a str,
    /// The sixth field, when the line has one.
    pub home: Option<&'a str>,
}

/// One line of `/etc/group` with at least three fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group<'a> {
    pub name: &'a str,
    pub gid: &'a str,
    /// The comma-separated member list, when the line has a fourth field.
    pub members: Option<&'a str>,
}

impl Group<'_> {
    pub fn has_member(&self, user: &str) -> bool {
        self.members
            .is_some_and(|m| m.split(',').any(|m| m == user))
    }
}

/// The text of an `/etc/passwd`.
#[derive(Debug, Clone, Copy)]
pub struct Passwd<'a>(pub &'a str);

impl<'a> Passwd<'a> {
    pub fn users(&self) -> impl Iterator<Item = User<'a>> {
        self.0.lines().filter_map(|l| {
            let f: Vec<&'a str> = l.split(':').collect();
            (f.len() >= 4).then(|| User {
                name: f[0],
                uid: f[2],
                gid: f[3],
                home: f.get(5).copied(),
            })
        })
    }

    /// The first entry named `name`.
    pub fn by_name(&self, name: &str) -> Option<User<'a>> {
        self.users().find(|u| u.name == name)
    }

    /// The first entry whose uid field is `uid` as written in decimal.
    pub fn by_uid(&self, uid: u32) -> Option<User<'a>> {
        let uid = uid.to_string();
        self.users().find(|u| u.uid == uid)
    }

    /// The first entry whose name or uid field is `key` (USER takes either).
    pub fn by_name_or_uid(&self, key: &str) -> Option<User<'a>> {
        self.users().find(|u| u.name == key || u.uid == key)
    }
}

/// The text of an `/etc/group`.
#[derive(Debug, Clone, Copy)]
pub struct Groups<'a>(pub &'a str);

impl<'a> Groups<'a> {
    pub fn groups(&self) -> impl Iterator<Item = Group<'a>> {
        self.0.lines().filter_map(|l| {
            let f: Vec<&'a str> = l.split(':').collect();
            (f.len() >= 3).then(|| Group {
                name: f[0],
                gid: f[2],
                members: f.get(3).copied(),
            })
        })
    }

    /// The first group named `name`.
    pub fn by_name(&self, name: &str) -> Option<Group<'a>> {
        self.groups().find(|g| g.name == name)
    }

    /// The first group whose name or gid field is `key`.
    pub fn by_name_or_gid(&self, key: &str) -> Option<Group<'a>> {
        self.groups().find(|g| g.name == key || g.gid == key)
    }

    /// The gids of the groups that list `user` as a member, in file order.
    pub fn of_member(&self, user: &str) -> Vec<u32> {
        self.groups()
            .filter(|g| g.has_member(user))
            .filter_map(|g| g.gid.parse().ok())
            .collect()
    }
}

/// A user and its groups as a process runs with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: Option<String>,
}

/// What USER resolution could not find.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("invalid uid in /etc/passwd for {user}")]
    Uid { user: String },
    #[error("invalid gid in /etc/passwd for {user}")]
    Gid { user: String },
    #[error("unable to find user {user}: no matching entries in /etc/passwd")]
    NoUser { user: String },
    #[error("unable to find group {group}: no matching entries in /etc/group")]
    NoGroup { group: String },
}

/// Resolve a USER value (`user[:group]`, names or ids) against the image's files.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Ids, UserError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = Passwd(passwd).by_name_or_uid(user);
    let (uid, mut gid, name, home) = match (&entry, user.parse::<u32>()) {
        (Some(e), _) => (
            e.uid.parse::<u32>().map_err(|_| UserError::Uid {
                user: user.to_string(),
            })?,
            e.gid.parse::<u32>().map_err(|_| UserError::Gid {
                user: user.to_string(),
            })?,
            Some(e.name),
            e.home.map(str::to_string),
        ),
        (None, Ok(n)) => (n, 0, None, None),
        (None, Err(_)) => {
            return Err(UserError::NoUser {
                user: user.to_string(),
            })
        }
    };
    let groups_file = Groups(group);
    let mut groups = Vec::new();
    match grp {
        Some(g) => {
            let found = groups_file
                .by_name_or_gid(g)
                .and_then(|e| e.gid.parse().ok());
            gid = match (found, g.parse::<u32>()) {
                (Some(id), _) => id,
                (None, Ok(n)) => n,
                (None, Err(_)) => {
                    return Err(UserError::NoGroup {
                        group: g.to_string(),
                    })
                }
            };
        }
        None => {
            if let Some(name) = name {
                groups = groups_file.of_member(name);
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

/// `--chown` ids: a user and an optional group, each a number or a name resolved in the
/// destination's files (names only, as Docker's chown); a user alone takes its primary
/// group, or its own number as gid when it is a number.
pub fn chown_ids(
    user: &str,
    group: Option<&str>,
    passwd: &str,
    groups: &str,
) -> Result<(u32, u32), ChownError> {
    let uid_of = |u: &str| -> Result<(u32, Option<u32>), ChownError> {
        if let Ok(n) = u.parse::<u32>() {
            return Ok((n, None));
        }
        Passwd(passwd)
            .by_name(u)
            .and_then(|e| Some((e.uid.parse().ok()?, e.gid.parse().ok())))
            .ok_or_else(|| ChownError::NoUser {
                user: u.to_string(),
            })
    };
    let gid_of = |g: &str| -> Result<u32, ChownError> {
        if let Ok(n) = g.parse::<u32>() {
            return Ok(n);
        }
        Groups(groups)
            .by_name(g)
            .and_then(|e| e.gid.parse().ok())
            .ok_or_else(|| ChownError::NoGroup {
                group: g.to_string(),
            })
    };
    let (uid, primary) = uid_of(if user.is_empty() { "0" } else { user })?;
    let gid = match group {
        Some(g) => gid_of(g)?,
        None => primary.unwrap_or(uid),
    };
    Ok((uid, gid))
}

/// A `--chown` name the destination's files do not have (BuildKit's words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChownError {
    #[error("unable to find user {user}: no matching entries in passwd file")]
    NoUser { user: String },
    #[error("unable to find group {group}: no matching entries in group file")]
    NoGroup { group: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\napp:x:1000:1000::/home/app:/bin/sh\nshort:x:7\nbad:x:x1:y2::/bad:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\nstaff:x:50\n";

    #[test]
    fn entries_by_name_and_id() {
        let p = Passwd(PASSWD);
        assert_eq!(
            p.users().count(),
            4,
            "a line with fewer than four fields is no entry"
        );
        let app = p.by_name("app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.home),
            ("1000", "1000", Some("/home/app"))
        );
        assert_eq!(p.by_name_or_uid("42").unwrap().name, "_apt");
        assert_eq!(p.by_uid(1000).unwrap().name, "app");
        assert!(
            p.by_uid(7).is_none(),
            "a line with fewer than four fields is no entry"
        );
        assert!(p.by_uid(4242).is_none());
        assert!(p.by_name("42").is_none());
        assert!(p.by_name("short").is_none());
        let g = Groups(GROUP);
        assert_eq!(g.by_name("staff").unwrap().gid, "50");
        assert_eq!(g.by_name_or_gid("65534").unwrap().name, "nogroup");
        assert_eq!(g.of_member("app"), vec![10, 2000]);
        assert_eq!(g.of_member("root"), vec![10]);
        assert!(g.of_member("nobody").is_empty());
    }

    #[test]
    fn user_resolution_follows_docker() {
        let r = |s: &str| resolve(s, PASSWD, GROUP);
        assert_eq!(
            r("").unwrap(),
            Ids {
                uid: 0,
                gid: 0,
                groups: vec![0, 10],
                home: Some("/root".into())
            }
        );
        assert_eq!(r("app").unwrap().groups, vec![1000, 10, 2000]);
        assert_eq!(r("app:extra").unwrap().groups, vec![2000]);
        assert_eq!(r("1000:wheel").unwrap().gid, 10);
        // An unknown numeric uid: gid 0, no home.
        assert_eq!(
            r("4242").unwrap(),
            Ids {
                uid: 4242,
                gid: 0,
                groups: vec![0],
                home: None
            }
        );
        assert_eq!(r("app:77").unwrap().gid, 77);
        assert_eq!(
            r("nobody").unwrap_err().to_string(),
            "unable to find user nobody: no matching entries in /etc/passwd"
        );
        assert_eq!(
            r("app:nogrp").unwrap_err().to_string(),
            "unable to find group nogrp: no matching entries in /etc/group"
        );
        assert_eq!(
            r("bad").unwrap_err().to_string(),
            "invalid uid in /etc/passwd for bad"
        );
    }

    #[test]
    fn chown_names_and_numbers() {
        let c = |u: &str, g: Option<&str>| chown_ids(u, g, PASSWD, GROUP);
        assert_eq!(c("_apt", None).unwrap(), (42, 65534));
        assert_eq!(c("app", Some("staff")).unwrap(), (1000, 50));
        assert_eq!(c("1042", Some("1043")).unwrap(), (1042, 1043));
        assert_eq!(c("1042", None).unwrap(), (1042, 1042));
        assert_eq!(c("", Some("wheel")).unwrap(), (0, 10));
        assert_eq!(
            c("nobody", None).unwrap_err().to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(
            c("app", Some("nogrp")).unwrap_err().to_string(),
            "unable to find group nogrp: no matching entries in group file"
        );
        // Chown looks names up only: a number-like name field is not a uid.
        assert!(c("bad", None).is_err());
    }
}

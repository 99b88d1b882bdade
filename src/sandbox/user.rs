//! USER resolution against the image's /etc/passwd and /etc/group, with Docker's rules: a name
//! or uid, optionally `:group`; supplementary groups from /etc/group unless a group is given;
//! an unknown numeric uid gets gid 0; the primary gid is always among the groups.
//!
//! The rules and the reading of the files are [`crate::fsx::passwd`]'s, the one reader of an
//! image's `/etc/passwd` and `/etc/group`; the sandbox child calls them by this name.

pub use crate::fsx::passwd::{resolve, Ids, UserError};

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

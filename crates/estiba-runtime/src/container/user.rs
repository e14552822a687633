//! Resolves a container `user` (`name`, `uid`, `name:group`, `uid:gid`) against the image's
//! `/etc/passwd` and `/etc/group`, as Docker does.

use crate::Error;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = Vec<&str>> {
    passwd.lines().filter(|l| !l.starts_with('#')).map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4)
}

/// `passwd` and `group` are the image's files (empty when missing).
pub fn resolve(spec: Option<&str>, passwd: &str, group: &str) -> Result<User, Error> {
    let spec = spec.unwrap_or("").trim();
    if spec.is_empty() || spec == "0" || spec == "root" {
        let home = passwd_entries(passwd).find(|f| f[2] == "0").and_then(|f| f.get(5).map(|h| h.to_string()));
        return Ok(User { uid: 0, gid: 0, additional_gids: vec![], home: home.unwrap_or_else(|| "/root".into()) });
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd_entries(passwd).find(|f| f[0] == u || f[2] == u);
    let (uid, mut gid, home, name) = match (u.parse::<u32>(), &entry) {
        (_, Some(f)) => (
            f[2].parse().map_err(|_| Error::Container(format!("bad uid in /etc/passwd for {u}")))?,
            f[3].parse().unwrap_or(0),
            f.get(5).map(|h| h.to_string()).unwrap_or_else(|| "/".into()),
            Some(f[0]),
        ),
        (Ok(uid), None) => (uid, uid, "/".to_owned(), None),
        (Err(_), None) => {
            return Err(Error::Container(format!("unable to find user {u}: no matching entries in passwd file")))
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    Error::Container(format!("unable to find group {g}: no matching entries in group file"))
                })?,
        };
    }
    let additional_gids = match name {
        Some(n) => group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .filter(|&x| x != gid)
            .collect(),
        None => vec![],
    };
    Ok(User { uid, gid, additional_gids, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\napp:x:1000:\ndocker:x:999:app\n";

    #[test]
    fn resolves() {
        assert_eq!(resolve(None, PASSWD, GROUP).unwrap().uid, 0);
        let a = resolve(Some("app"), PASSWD, GROUP).unwrap();
        assert_eq!((a.uid, a.gid, a.additional_gids.clone(), a.home.as_str()), (1000, 1000, vec![999], "/home/app"));
        assert_eq!(resolve(Some("1234"), PASSWD, GROUP).unwrap().gid, 1234);
        assert_eq!(resolve(Some("nobody:app"), PASSWD, GROUP).unwrap().gid, 1000);
        assert_eq!(resolve(Some("1000:5"), PASSWD, GROUP).unwrap().gid, 5);
        assert!(resolve(Some("ghost"), PASSWD, GROUP).is_err());
        assert!(resolve(Some("app:ghosts"), PASSWD, GROUP).is_err());
    }
}

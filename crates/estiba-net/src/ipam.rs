//! Address management for a node's networks, on disk like CNI's host-local plugin: one file
//! per address handed out, `<dir>/<pool>/<ip>`, holding its owner (a task id). A file is
//! created with `O_EXCL`, so an address is never handed out twice even across restarts; it
//! is removed when the owner releases it; an owner asking again gets the address it has.
//! The lowest free address is handed out first: a released address is reused at once, which
//! is safe because a task's MAC address is derived from its IP address (neighbours' ARP
//! entries stay right).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::Ipv4Net;

use crate::NetError;

/// A range addresses are handed out from: `net` minus its first `reserved_head` addresses,
/// its last one (AWS keeps the first four and the last address of every subnet) and the
/// `reserved_tail` addresses below that (kept for others: load balancers in VPC subnets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub net: Ipv4Net,
    pub reserved_head: u32,
    pub reserved_tail: u32,
}

impl Range {
    fn bounds(&self) -> (u32, u32) {
        let first = u32::from(self.net.network()).saturating_add(self.reserved_head);
        let last = u32::from(self.net.broadcast()).saturating_sub(1).saturating_sub(self.reserved_tail);
        (first, last)
    }
}

#[derive(Default)]
struct Pool {
    loaded: bool,
    by_ip: BTreeMap<Ipv4Addr, String>,
}

pub struct Ipam {
    dir: PathBuf,
    pools: Mutex<HashMap<String, Pool>>,
}

impl Ipam {
    pub fn new(dir: &Path) -> Ipam {
        Ipam { dir: dir.to_owned(), pools: Mutex::new(HashMap::new()) }
    }

    fn pool_dir(&self, pool: &str) -> PathBuf {
        self.dir.join(pool)
    }

    /// Reads a pool's files once per process.
    fn load<'a>(&self, pools: &'a mut HashMap<String, Pool>, pool: &str) -> &'a mut Pool {
        let p = pools.entry(pool.to_owned()).or_default();
        if !p.loaded {
            p.loaded = true;
            if let Ok(entries) = std::fs::read_dir(self.pool_dir(pool)) {
                for e in entries.flatten() {
                    let Some(ip) = e.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else { continue };
                    let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
                    p.by_ip.insert(ip, owner.trim().to_owned());
                }
            }
        }
        p
    }

    /// The address `owner` holds in `pool` within `range`, or the lowest free one, recorded.
    pub fn allocate(&self, pool: &str, range: Range, owner: &str) -> Result<Ipv4Addr, NetError> {
        let mut pools = self.pools.lock().unwrap();
        let p = self.load(&mut pools, pool);
        let (first, last) = range.bounds();
        if let Some((ip, _)) =
            p.by_ip.range(Ipv4Addr::from(first)..=Ipv4Addr::from(last)).find(|(_, o)| o.as_str() == owner)
        {
            return Ok(*ip);
        }
        let dir = self.pool_dir(pool);
        std::fs::create_dir_all(&dir).map_err(|e| NetError::io(format!("creating {}", dir.display()), e))?;
        let mut candidate = first;
        while candidate <= last {
            let ip = Ipv4Addr::from(candidate);
            if p.by_ip.contains_key(&ip) {
                candidate += 1;
                continue;
            }
            match std::fs::OpenOptions::new().write(true).create_new(true).open(dir.join(ip.to_string())) {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes()).map_err(|e| NetError::io(format!("recording {ip}"), e))?;
                    p.by_ip.insert(ip, owner.to_owned());
                    return Ok(ip);
                }
                // Taken by a file this process has not seen (another process): skip it.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(dir.join(ip.to_string())).unwrap_or_default();
                    p.by_ip.insert(ip, owner.trim().to_owned());
                    candidate += 1;
                }
                Err(e) => return Err(NetError::io(format!("recording {ip}"), e)),
            }
        }
        Err(NetError::Exhausted(range.net.to_string()))
    }

    /// Whether `range` has an address nobody in `pool` holds (as far as this process knows).
    pub fn has_free(&self, pool: &str, range: Range) -> bool {
        let mut pools = self.pools.lock().unwrap();
        let p = self.load(&mut pools, pool);
        let (first, last) = range.bounds();
        let used = p.by_ip.range(Ipv4Addr::from(first)..=Ipv4Addr::from(last)).count() as u64;
        (last as u64 + 1).saturating_sub(first as u64) > used
    }

    /// The address `owner` holds in `pool` within `net`, if any (a task set up again after a
    /// restart keeps its address, whichever block of the subnet it came from).
    pub fn held(&self, pool: &str, net: Ipv4Net, owner: &str) -> Option<Ipv4Addr> {
        let mut pools = self.pools.lock().unwrap();
        let p = self.load(&mut pools, pool);
        p.by_ip.range(net.network()..=net.broadcast()).find(|(_, o)| o.as_str() == owner).map(|(ip, _)| *ip)
    }

    /// Releases every address `owner` holds, in every pool this process has loaded and on
    /// disk.
    pub fn release(&self, owner: &str) {
        for (pool, ip, o) in self.leases() {
            if o == owner {
                self.release_one(&pool, ip);
            }
        }
    }

    fn release_one(&self, pool: &str, ip: Ipv4Addr) {
        let mut pools = self.pools.lock().unwrap();
        let p = self.load(&mut pools, pool);
        let _ = std::fs::remove_file(self.pool_dir(pool).join(ip.to_string()));
        p.by_ip.remove(&ip);
    }

    /// Every address handed out: (pool, address, owner).
    pub fn leases(&self) -> Vec<(String, Ipv4Addr, String)> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let mut pools = self.pools.lock().unwrap();
        names.extend(pools.keys().cloned());
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            let p = self.load(&mut pools, &name);
            out.extend(p.by_ip.iter().map(|(ip, o)| (name.clone(), *ip, o.clone())));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str, head: u32) -> Range {
        Range { net: s.parse().unwrap(), reserved_head: head, reserved_tail: 0 }
    }

    #[test]
    fn lowest_free_first_same_owner_same_address_and_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path());
        let r = range("10.0.0.0/29", 4); // .4, .5, .6 usable (.7 is the broadcast)
        assert_eq!(ipam.allocate("vpc", r, "a").unwrap(), Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(ipam.allocate("vpc", r, "b").unwrap(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(ipam.allocate("vpc", r, "a").unwrap(), Ipv4Addr::new(10, 0, 0, 4), "an owner keeps its address");
        assert_eq!(ipam.allocate("vpc", r, "c").unwrap(), Ipv4Addr::new(10, 0, 0, 6));
        assert!(matches!(ipam.allocate("vpc", r, "d"), Err(NetError::Exhausted(_))));
        ipam.release("b");
        assert_eq!(ipam.allocate("vpc", r, "d").unwrap(), Ipv4Addr::new(10, 0, 0, 5), "released addresses are reused");
    }

    #[test]
    fn survives_a_restart_and_never_hands_out_twice() {
        let dir = tempfile::tempdir().unwrap();
        let r = range("10.0.0.0/24", 2);
        {
            let ipam = Ipam::new(dir.path());
            assert_eq!(ipam.allocate("br", r, "a").unwrap(), Ipv4Addr::new(10, 0, 0, 2));
            assert_eq!(ipam.allocate("br", r, "b").unwrap(), Ipv4Addr::new(10, 0, 0, 3));
        }
        let ipam = Ipam::new(dir.path());
        assert_eq!(ipam.allocate("br", r, "b").unwrap(), Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(ipam.allocate("br", r, "c").unwrap(), Ipv4Addr::new(10, 0, 0, 4));
        // Another process took .5 behind this one's back: the file says so.
        std::fs::write(dir.path().join("br/10.0.0.5"), "other").unwrap();
        assert_eq!(ipam.allocate("br", r, "d").unwrap(), Ipv4Addr::new(10, 0, 0, 6));
        let mut leases: Vec<_> = ipam.leases().into_iter().map(|(_, ip, o)| (ip.octets()[3], o)).collect();
        leases.sort();
        assert_eq!(
            leases,
            vec![(2, "a".into()), (3, "b".into()), (4, "c".into()), (5, "other".into()), (6, "d".into())]
        );
        ipam.release("a");
        ipam.release("other");
        assert_eq!(std::fs::read_dir(dir.path().join("br")).unwrap().count(), 3);
    }

    #[test]
    fn ranges_of_one_pool_share_its_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path());
        let a = range("172.31.0.0/20", 4);
        let b = range("172.31.16.0/20", 4);
        assert_eq!(ipam.allocate("vpc", a, "t1").unwrap(), Ipv4Addr::new(172, 31, 0, 4));
        assert_eq!(ipam.allocate("vpc", b, "t2").unwrap(), Ipv4Addr::new(172, 31, 16, 4));
        assert_eq!(ipam.allocate("vpc", a, "t3").unwrap(), Ipv4Addr::new(172, 31, 0, 5));
        assert_eq!(ipam.held("vpc", "172.31.16.0/20".parse().unwrap(), "t2"), Some(Ipv4Addr::new(172, 31, 16, 4)));
        assert_eq!(ipam.held("vpc", "172.31.0.0/20".parse().unwrap(), "t2"), None);
    }
}

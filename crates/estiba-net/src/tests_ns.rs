//! Tests with real namespaces, bridges and veths. They need root; each runs on a thread that
//! has entered a network namespace of its own (namespaces belong to threads, and threads a
//! thread starts inherit its namespaces), so nothing they make is seen outside and no
//! packet can leave the machine.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;

use crate::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `f` on a thread inside a new, empty network namespace with loopback up; skips it
/// (saying so) when not root. One at a time: the tests pin namespaces with bind mounts,
/// which every thread of the process sees, and one counts the mounts.
fn isolated(f: impl FnOnce() + Send + 'static) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        nl::Netlink::open().unwrap().set_up(1).unwrap();
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

fn net() -> Network {
    Network { name: "test".into(), bridge: "estest0".into(), cidr: "10.99.0.0/24".parse().unwrap() }
}

/// Serves one connection inside the namespace at `ns`: answers with `reply`.
fn serve_once(ns: &Path, port: u16, reply: &'static [u8]) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_owned();
    let h = std::thread::spawn(move || {
        netns::run_in(&ns, move || {
            let l = TcpListener::bind(("0.0.0.0", port)).map_err(|e| e.to_string())?;
            tx.send(()).unwrap();
            let (mut c, _) = l.accept().map_err(|e| e.to_string())?;
            c.write_all(reply).map_err(|e| e.to_string())
        })
        .unwrap()
    });
    rx.recv().unwrap();
    h
}

fn fetch(addr: SocketAddrV4) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn two_namespaces_on_a_bridge_reach_each_other_and_published_ports_answer() {
    isolated(|| {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let range = Range { net: "10.99.0.0/24".parse().unwrap(), reserved_head: 2, reserved_tail: 0 };
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let inside_a = netns::create(&a).unwrap();
        netns::create(&b).unwrap();
        let ea = host.attach(&net(), range, "aaaaaaaaaaaaaaaa", &a, Some(inside_a)).unwrap();
        // Without a socket of the namespace, a thread enters it.
        let eb = host.attach(&net(), range, "bbbbbbbbbbbbbbbb", &b, None).unwrap();
        assert_eq!((ea.ip, eb.ip), (Ipv4Addr::new(10, 99, 0, 2), Ipv4Addr::new(10, 99, 0, 3)));
        // Attaching again keeps the address and replaces the veth.
        assert_eq!(host.attach(&net(), range, "aaaaaaaaaaaaaaaa", &a, None).unwrap(), ea);

        // a → b by private address.
        let srv = serve_once(&b, 8080, b"from b");
        let got = netns::run_in(&a, move || Ok(fetch(SocketAddrV4::new(eb.ip, 8080)))).unwrap();
        srv.join().unwrap();
        assert_eq!(got, "from b");

        // The host's loopback → a published port → b.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let srv = serve_once(&b, 8081, b"published");
        let bindings = rt.block_on(async {
            host.ports.publish(
                "bbbbbbbbbbbbbbbb",
                &[Mapping {
                    protocol: Protocol::Tcp,
                    host_port: 0,
                    target: SocketAddrV4::new(eb.ip, 8081),
                    or_any: false,
                }],
            )
        });
        let port = bindings.unwrap()[0].host_port;
        assert_ne!(port, 0);
        let got = rt.block_on(async move {
            tokio::task::spawn_blocking(move || fetch(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))).await.unwrap()
        });
        srv.join().unwrap();
        assert_eq!(got, "published");
        // A port already bound makes the whole publication fail, unless `or_any`.
        let taken = TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let tport = taken.local_addr().unwrap().port();
        let m =
            |or_any| Mapping { protocol: Protocol::Tcp, host_port: tport, target: SocketAddrV4::new(eb.ip, 1), or_any };
        rt.block_on(async {
            assert!(matches!(host.ports.publish("x", &[m(false)]), Err(NetError::Port { .. })));
            let b = host.ports.publish("x", &[m(true)]).unwrap();
            assert_ne!(b[0].host_port, tport);
        });

        // Tear down: a detach, and a sweep for what b left.
        host.detach("aaaaaaaaaaaaaaaa");
        netns::remove(&a);
        netns::remove(&b);
        host.sweep(&HashSet::new());
        assert!(host.ipam.leases().is_empty());
        assert!(host.ports.owners().is_empty());
        let names: Vec<String> = nl::Netlink::open().unwrap().links().unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["lo", "estest0"], "only the bridge is left");
        rt.block_on(async {
            assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the published port is closed");
        });
    });
}

#[test]
fn spare_namespaces_are_taken_fresh_and_refilled() {
    isolated(|| {
        let dir = tempfile::tempdir().unwrap();
        let mounts = || std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
        let before = mounts();
        let spares = netns::Spares::new(2);
        assert!(spares.take(&dir.path().join("none")).is_none(), "nothing made yet");
        spares.refill();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while spares.len() < 2 {
            assert!(std::time::Instant::now() < deadline, "spares not made");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(mounts(), before, "spares are held by descriptors, not pinned on disk");

        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut inside = spares.take(&a).expect("a spare");
        spares.take(&b).expect("another spare");
        assert!(netns::is_pinned(&a) && netns::is_pinned(&b));
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        assert_ne!(ino(&a), ino(&b), "two namespaces");
        // The socket acts in the namespace now pinned at `a`: loopback is up there, and a
        // link made through it shows up inside, not here.
        inside.add_bridge("spare0").unwrap();
        let names = netns::run_in(&a, || {
            // Loopback answers (it is down in a bare namespace).
            let l = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| e.to_string())?;
            TcpStream::connect(l.local_addr().unwrap()).map_err(|e| format!("loopback: {e}"))?;
            let links = nl::Netlink::open().map_err(|e| e.to_string())?.links().map_err(|e| e.to_string())?;
            Ok(links.into_iter().map(|l| l.name).collect::<Vec<_>>())
        })
        .unwrap();
        assert!(names.iter().any(|n| n == "spare0"), "{names:?}");
        assert!(nl::Netlink::open().unwrap().link_index("spare0").unwrap().is_none());

        // Taken spares are replaced.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while spares.len() < 2 {
            assert!(std::time::Instant::now() < deadline, "spares not refilled");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(spares);
        netns::remove(&a);
        netns::remove(&b);
        assert_eq!(mounts(), before, "nothing left mounted");
    });
}

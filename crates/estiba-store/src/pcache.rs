//! A thin layer over SQLite's own page cache (`pcache1`) that spares every commit a scan of
//! the whole cache.
//!
//! When a B-tree node splits and the new pages are out of order, SQLite swaps their page
//! numbers through a temporary one, the locking page (`PENDING_BYTE / page_size + 1`: page
//! 131,073 with 8 KiB pages). `pcache1` remembers the largest page number it has seen
//! (`iMaxKey`), so after such a swap it believes a page lies beyond the end of the file, and
//! the truncation that ends every transaction (`pager_end_transaction`, dropping pages past
//! the file's size) walks every hash slot and every cached page: with the writer's 64 MiB
//! cache, 8,192 slots and as many pages, each a cache miss, a quarter of the writer thread's
//! time under `bench placement`. SQLite offers no setting for this; its page-cache interface
//! (`SQLITE_CONFIG_PCACHE2`) is the supported way to change it, so this module wraps the
//! default cache and forwards every call, keeping per cache an upper bound of the page numbers
//! it holds (every page fetched or moved there, the temporary page apart, which is tracked
//! exactly) and skipping a truncation that has nothing to drop. No crate does this.
//!
//! The wrapper changes no page: a truncation is only skipped when no page at or past its limit
//! can be in the cache. It must be installed before SQLite's first use in the process
//! ([`install`], from the store's `open`); when it comes too late SQLite refuses and the
//! default cache stays, slower but the same.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// SQLite's default `PENDING_BYTE` (only its test hooks move it).
const PENDING_BYTE: u32 = 0x4000_0000;

/// The default cache's methods, which every wrapper call forwards to.
static INNER: OnceLock<Methods> = OnceLock::new();

/// The methods as SQLite gives them: function pointers and `pArg`, which the default cache
/// does not use (null) and which SQLite shares between threads itself.
struct Methods(ffi::sqlite3_pcache_methods2);
// SAFETY: plain function pointers and an argument SQLite passes to them from any thread.
unsafe impl Send for Methods {}
// SAFETY: as `Send`; never written after it is set.
unsafe impl Sync for Methods {}

/// One cache: the default one's handle and what the wrapper knows of its page numbers. SQLite
/// calls one cache from one thread at a time (a connection's, and estiba gives each thread its
/// own connection, no shared cache), which the plain load-then-store of `max` relies on; the
/// atomics only make the fields shareable.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// The locking page's number for this cache's page size: the temporary of a swap.
    pending: u32,
    /// No page numbered above this is in the cache (the temporary page apart).
    max: AtomicU32,
    /// A page is at the temporary number right now.
    at_pending: AtomicBool,
}

fn inner() -> &'static ffi::sqlite3_pcache_methods2 {
    &INNER.get().expect("pcache wrapper installed without the default methods").0
}

/// # Safety
/// `p` is a handle this module's `create` returned, not yet destroyed.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a Cache {
    // SAFETY: by the caller's contract `p` is a live `Box<Cache>` turned into a raw pointer.
    unsafe { &*(p as *const Cache) }
}

// SQLite hands `xInit` and `xShutdown` the `pArg` of the methods installed (ours, null); the
// default cache gets its own.
unsafe extern "C" fn init(_ours: *mut c_void) -> c_int {
    // SAFETY: forwarded as SQLite calls it, with the default cache's own argument.
    unsafe { inner().xInit.map_or(ffi::SQLITE_OK, |f| f(inner().pArg)) }
}

unsafe extern "C" fn shutdown(_ours: *mut c_void) {
    if let Some(f) = inner().xShutdown {
        // SAFETY: as `init`.
        unsafe { f(inner().pArg) }
    }
}

unsafe extern "C" fn create(sz_page: c_int, sz_extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    let Some(f) = inner().xCreate else { return std::ptr::null_mut() };
    // SAFETY: forwarded with SQLite's own arguments.
    let p = unsafe { f(sz_page, sz_extra, purgeable) };
    if p.is_null() {
        return p;
    }
    let pending = if sz_page > 0 { PENDING_BYTE / sz_page as u32 + 1 } else { u32::MAX };
    let c = Box::new(Cache { inner: p, pending, max: AtomicU32::new(0), at_pending: AtomicBool::new(false) });
    Box::into_raw(c) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    if let Some(f) = inner().xCachesize {
        // SAFETY: `p` is ours (SQLite passes back what `create` returned); the inner handle is live.
        unsafe { f(cache(p).inner, n) }
    }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: as `cachesize`.
    unsafe { inner().xPagecount.map_or(0, |f| f(cache(p).inner)) }
}

unsafe extern "C" fn fetch(p: *mut ffi::sqlite3_pcache, key: c_uint, create: c_int) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: as `cachesize`.
    let c = unsafe { cache(p) };
    if key != c.pending && key > c.max.load(Ordering::Relaxed) {
        c.max.store(key, Ordering::Relaxed);
    }
    // SAFETY: forwarded with the inner handle.
    unsafe { inner().xFetch.map_or(std::ptr::null_mut(), |f| f(c.inner, key, create)) }
}

unsafe extern "C" fn unpin(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    if let Some(f) = inner().xUnpin {
        // SAFETY: as `cachesize`; `page` came from the inner cache's `xFetch`.
        unsafe { f(cache(p).inner, page, discard) }
    }
}

unsafe extern "C" fn rekey(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, old: c_uint, new: c_uint) {
    // SAFETY: as `cachesize`.
    let c = unsafe { cache(p) };
    if old == c.pending {
        c.at_pending.store(false, Ordering::Relaxed);
    }
    if new == c.pending {
        c.at_pending.store(true, Ordering::Relaxed);
        #[cfg(test)]
        tests::SWAPS.with(|n| n.set(n.get() + 1));
    } else if new > c.max.load(Ordering::Relaxed) {
        c.max.store(new, Ordering::Relaxed);
    }
    if let Some(f) = inner().xRekey {
        // SAFETY: as `unpin`.
        unsafe { f(c.inner, page, old, new) }
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    // SAFETY: as `cachesize`.
    let c = unsafe { cache(p) };
    // Pages numbered `limit` and up go. None can be there when every page ever fetched or
    // moved in is below `limit` and none sits at the temporary number.
    let max = c.max.load(Ordering::Relaxed);
    if limit > max && !c.at_pending.load(Ordering::Relaxed) {
        #[cfg(test)]
        tests::SKIPPED.with(|n| n.set(n.get() + 1));
        return;
    }
    if let Some(f) = inner().xTruncate {
        // SAFETY: as `cachesize`.
        unsafe { f(c.inner, limit) }
    }
    c.max.store(max.min(limit.saturating_sub(1)), Ordering::Relaxed);
    if limit <= c.pending {
        c.at_pending.store(false, Ordering::Relaxed);
    }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` is ours and SQLite never uses it again after this call.
    let c = unsafe { Box::from_raw(p as *mut Cache) };
    if let Some(f) = inner().xDestroy {
        // SAFETY: the inner handle, destroyed once, with ours.
        unsafe { f(c.inner) }
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = inner().xShrink {
        // SAFETY: as `cachesize`.
        unsafe { f(cache(p).inner) }
    }
}

/// Installs the wrapper, once per process, before SQLite is first used; `false` when SQLite
/// refused (it was initialized already) and keeps its default cache.
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: `sqlite3_config` with the documented argument types; it fails (returning
        // an error, changing nothing) once SQLite is initialized.
        unsafe {
            let mut default: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
            if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut default as *mut _) != ffi::SQLITE_OK
                || default.xCreate.is_none()
            {
                tracing::debug!("sqlite page cache wrapper not installed: no default cache to wrap");
                return false;
            }
            let _ = INNER.set(Methods(default));
            let ours = ffi::sqlite3_pcache_methods2 {
                iVersion: default.iVersion,
                pArg: std::ptr::null_mut(),
                xInit: Some(init),
                xShutdown: Some(shutdown),
                xCreate: Some(create),
                xCachesize: Some(cachesize),
                xPagecount: Some(pagecount),
                xFetch: Some(fetch),
                xUnpin: Some(unpin),
                xRekey: Some(rekey),
                xTruncate: Some(truncate),
                xDestroy: Some(destroy),
                xShrink: Some(shrink),
            };
            // SQLite copies the methods.
            let rc = ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &ours as *const _);
            if rc != ffi::SQLITE_OK {
                tracing::debug!(rc, "sqlite page cache wrapper not installed: sqlite already in use");
            }
            rc == ffi::SQLITE_OK
        }
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use rusqlite::{params, Connection};

    thread_local! {
        /// Truncations the wrapper skipped on this thread (each test's connection is its own
        /// thread's; other tests' stores write from theirs).
        pub(super) static SKIPPED: Cell<u64> = const { Cell::new(0) };
        /// Pages moved to the locking page's number on this thread (node splits' swaps).
        pub(super) static SWAPS: Cell<u64> = const { Cell::new(0) };
    }

    fn skipped() -> u64 {
        SKIPPED.with(Cell::get)
    }

    fn check(conn: &Connection, rows: i64, sum: i64) {
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
        let (n, s): (i64, i64) =
            conn.query_row("SELECT count(*), coalesce(sum(n), 0) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((n, s), (rows, sum));
    }

    /// Inserts at scattered keys (node splits whose pages SQLite swaps through the locking
    /// page, after which commits skip the truncation), a transaction that grows the file and is
    /// rolled back (with a rollback journal, its pages stay cached past the restored end until
    /// the truncation that must drop them; WAL mode drops them before), and a reopen: the file
    /// stays sound and holds exactly what was committed, in both journal modes. (Pages left
    /// cached past the end would not show here, SQLite re-initializes the pages it allocates:
    /// the next test checks the truncations themselves.)
    #[test]
    fn the_wrapped_cache_keeps_every_page_right() {
        let installed = super::install();
        for mode in ["WAL", "DELETE"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "PRAGMA page_size = 8192; PRAGMA journal_mode = {mode}; PRAGMA cache_size = -65536;
                 CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB, n INTEGER) WITHOUT ROWID;"
            ))
            .unwrap();
            let (mut rows, mut sum) = (0i64, 0i64);
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut key = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            };
            let (skipped_before, swaps_before) = (skipped(), SWAPS.with(Cell::get));
            for _ in 0..100 {
                let tx = conn.unchecked_transaction().unwrap();
                for i in 0..100i64 {
                    tx.execute("INSERT INTO t VALUES (?1, zeroblob(300), ?2)", params![key(), i]).unwrap();
                    rows += 1;
                    sum += i;
                }
                tx.commit().unwrap();
            }
            check(&conn, rows, sum);
            if installed {
                assert!(SWAPS.with(Cell::get) > swaps_before, "{mode}: node splits swapped pages");
                assert!(skipped() > skipped_before, "{mode}: commits after the swaps skip the scan");
            }
            // A transaction that grows the file by thousands of pages, rolled back.
            let tx = conn.unchecked_transaction().unwrap();
            for _ in 0..5_000 {
                tx.execute("INSERT INTO t VALUES (?1, zeroblob(3000), 1000)", params![key()]).unwrap();
            }
            tx.rollback().unwrap();
            check(&conn, rows, sum);
            for i in 0..2_000i64 {
                conn.execute("INSERT INTO t VALUES (?1, zeroblob(500), ?2)", params![key(), i]).unwrap();
                rows += 1;
                sum += i;
            }
            check(&conn, rows, sum);
            drop(conn);
            check(&Connection::open(&path).unwrap(), rows, sum);
        }
    }

    /// The wrapper's bookkeeping on a cache of its own, method by method: a truncation with
    /// nothing at or past its limit is skipped (the inner cache keeps its pages), one with
    /// pages to drop, or with a page parked at the locking page's number, is done.
    #[test]
    fn truncation_is_skipped_only_when_nothing_is_past_the_limit() {
        if !super::install() && super::INNER.get().is_none() {
            eprintln!("sqlite was initialized before the wrapper: nothing to check");
            return;
        }
        // SAFETY: SQLite initialized (which initializes the wrapped cache), then the wrapper's
        // own methods called as SQLite's pager calls them: pages fetched with create, moved
        // while held, unpinned, then the cache destroyed.
        unsafe {
            assert_eq!(rusqlite::ffi::sqlite3_initialize(), rusqlite::ffi::SQLITE_OK);
            let c = super::create(8192, 64, 0);
            assert!(!c.is_null());
            let pending = super::cache(c).pending;
            assert_eq!(pending, 131_073);
            let mut pages = Vec::new();
            for key in 1..=10 {
                pages.push(super::fetch(c, key, 2));
            }
            let count = || super::pagecount(c);
            assert_eq!(count(), 10);
            // A swap of pages 5 and 7 through the locking page, as balance_nonroot does.
            super::rekey(c, pages[4], 5, pending);
            super::rekey(c, pages[6], 7, 5);
            super::rekey(c, pages[4], pending, 7);
            for p in &pages {
                super::unpin(c, *p, 0);
            }
            let before = skipped();
            super::truncate(c, 11);
            assert_eq!(skipped(), before + 1, "nothing past page 10");
            assert_eq!(count(), 10);
            // Pages past the limit: dropped.
            for key in [12, 13] {
                let p = super::fetch(c, key, 2);
                super::unpin(c, p, 0);
            }
            super::truncate(c, 11);
            assert_eq!(count(), 10);
            assert!(super::fetch(c, 12, 0).is_null());
            // A page left at the locking page's number: dropped too.
            let p = super::fetch(c, 3, 0);
            super::rekey(c, p, 3, pending);
            super::unpin(c, p, 0);
            // (The look-up of page 12 above counts as a fetch: a limit past it.)
            super::truncate(c, 13);
            assert_eq!(count(), 9);
            assert!(super::fetch(c, pending, 0).is_null());
            super::destroy(c);
        }
    }
}

//! A simulated store for tests: databases in memory, shared through an `Arc`
//! "filesystem" keyed by path so a spool can be dropped and reopened on what survived.
//! Each database keeps three views: what its handle sees, what was handed to the OS
//! (`flush`: survives reopening and a process crash) and what is on disk (`sync`:
//! survives a power loss). Faults: a power cut at a chosen operation, a full disk whose
//! ENOSPC sticks to the handle that saw it until it is reopened (like sled), an I/O error
//! (a failed fsync drops the writes it was syncing, as Linux does). Every mutating call
//! (writes, flushes, syncs, opens, removals) is numbered so a test can place a fault at
//! each step of an operation.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    Database, KvIter, KvPair, Store, StoreError, StoreResult, Tree, WriteBatch, DEFAULT_TREE,
};

type Trees = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A fault placed at a numbered operation (see [`SimStore::fail_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFault {
    /// The power goes out at this operation: it and every later one fail (nothing more
    /// reaches the disk) until [`SimStore::power_loss`].
    PowerCut,
    /// The disk fills up at this operation: it and every later write, flush, sync or open
    /// fail with ENOSPC until [`SimStore::set_disk_full`]`(false)`; a handle that saw the
    /// error keeps failing until it is reopened.
    DiskFull,
    /// This operation fails with EIO and its handle keeps failing until reopened. At a
    /// `sync` the writes being synced are dropped from the OS (lost on reopen too).
    IoError,
}

/// What survives a power loss besides what was synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerLoss {
    /// Nothing: every write not synced is lost.
    LoseUnsynced,
    /// A prefix of each database's unsynced writes, chosen from the seed (the engine may
    /// have written some of them on its own; a torn write keeps a prefix).
    KeepPrefix(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String, Vec<u8>, Vec<u8>),
    Remove(String, Vec<u8>),
    Batch(String, WriteBatch),
    Clear(String),
    CreateTree(String),
    DropTree(String),
}

fn apply(trees: &mut Trees, op: &Op) {
    match op {
        Op::Insert(t, k, v) => {
            trees
                .entry(t.clone())
                .or_default()
                .insert(k.clone(), v.clone());
        }
        Op::Remove(t, k) => {
            if let Some(tree) = trees.get_mut(t) {
                tree.remove(k);
            }
        }
        Op::Batch(t, b) => {
            let tree = trees.entry(t.clone()).or_default();
            for (k, v) in b.ops() {
                match v {
                    Some(v) => tree.insert(k.clone(), v.clone()),
                    None => tree.remove(k),
                };
            }
        }
        Op::Clear(t) => {
            if let Some(tree) = trees.get_mut(t) {
                tree.clear();
            }
        }
        Op::CreateTree(t) => {
            trees.entry(t.clone()).or_default();
        }
        Op::DropTree(t) => {
            trees.remove(t);
        }
    }
}

fn fresh_trees() -> Trees {
    let mut t = Trees::new();
    t.insert(DEFAULT_TREE.to_string(), BTreeMap::new());
    t
}

#[derive(Debug)]
struct SimDb {
    /// The database's directory entry is durable (it was synced once).
    durable_exists: bool,
    /// Synced contents.
    disk: Trees,
    /// What the open handle sees.
    live: Trees,
    /// Writes since the last sync, in order; `log[..flushed]` was handed to the OS.
    log: Vec<Op>,
    flushed: usize,
    /// The open handle, if any.
    handle: Option<u64>,
    /// The error the open handle keeps returning.
    sticky: Option<Sticky>,
}

#[derive(Debug, Clone, Copy)]
enum Sticky {
    DiskFull,
    Io,
}

impl SimDb {
    fn new() -> Self {
        SimDb {
            durable_exists: false,
            disk: fresh_trees(),
            live: fresh_trees(),
            log: Vec::new(),
            flushed: 0,
            handle: None,
            sticky: None,
        }
    }

    /// Contents as the OS holds them (for a new handle).
    fn reload_from_os(&mut self) {
        self.log.truncate(self.flushed);
        let mut live = self.disk.clone();
        for op in &self.log {
            apply(&mut live, op);
        }
        self.live = live;
        self.sticky = None;
    }

    fn bytes(&self) -> u64 {
        self.live
            .values()
            .flat_map(|t| t.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }
}

#[derive(Debug, Default)]
struct SimFs {
    dbs: BTreeMap<PathBuf, SimDb>,
    dirs: BTreeSet<PathBuf>,
    ops: u64,
    faults: BTreeMap<u64, SimFault>,
    full: bool,
    power_cut: bool,
    next_handle: u64,
    enospc_errors: u64,
    syncs: u64,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn power_off() -> StoreError {
    StoreError::Io(io::Error::other("simulated power cut: the machine is off"))
}

fn stale(path: &Path) -> StoreError {
    StoreError::Io(io::Error::other(format!(
        "stale handle of {} (the database was reopened, removed or lost)",
        path.display()
    )))
}

/// What kind of mutating call is being made.
#[derive(PartialEq, Eq)]
enum Kind {
    Write,
    Flush,
    Sync,
}

impl SimFs {
    /// Numbers a mutating call and applies the faults placed at it.
    fn next_op(&mut self) -> Option<SimFault> {
        self.ops += 1;
        let fault = self.faults.remove(&self.ops);
        match fault {
            Some(SimFault::PowerCut) => self.power_cut = true,
            Some(SimFault::DiskFull) => self.full = true,
            _ => {}
        }
        fault
    }

    fn db(&mut self, path: &Path, id: u64) -> StoreResult<&mut SimDb> {
        if self.power_cut {
            return Err(power_off());
        }
        match self.dbs.get_mut(path) {
            Some(db) if db.handle == Some(id) => Ok(db),
            _ => Err(stale(path)),
        }
    }

    /// Checks a mutating call on handle `id`; `Ok` when it may go ahead.
    fn begin(&mut self, path: &Path, id: u64, kind: Kind) -> StoreResult<&mut SimDb> {
        let fault = self.next_op();
        let full = self.full;
        let mut counted_enospc = false;
        let db = self.db(path, id)?;
        match db.sticky {
            Some(Sticky::DiskFull) => return Err(StoreError::DiskFull(enospc())),
            Some(Sticky::Io) => {
                return Err(StoreError::Io(io::Error::from_raw_os_error(libc::EIO)))
            }
            None => {}
        }
        if full {
            db.sticky = Some(Sticky::DiskFull);
            counted_enospc = true;
        } else if fault == Some(SimFault::IoError) {
            db.sticky = Some(Sticky::Io);
            if kind == Kind::Sync {
                // The kernel marks the pages clean after a failed writeback: the writes
                // are neither on disk nor will a new handle see them.
                db.log.clear();
                db.flushed = 0;
            }
            return Err(StoreError::Io(io::Error::from_raw_os_error(libc::EIO)));
        }
        if counted_enospc {
            self.enospc_errors += 1;
            return Err(StoreError::DiskFull(enospc()));
        }
        self.db(path, id)
    }
}

/// The simulated store. Clones share one "filesystem".
#[derive(Clone, Default)]
pub struct SimStore {
    fs: Arc<Mutex<SimFs>>,
}

impl std::fmt::Debug for SimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fs = self.lock();
        f.debug_struct("SimStore")
            .field("databases", &fs.dbs.len())
            .field("ops", &fs.ops)
            .field("full", &fs.full)
            .field("power_cut", &fs.power_cut)
            .finish()
    }
}

fn lock_fs(m: &Mutex<SimFs>) -> MutexGuard<'_, SimFs> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// splitmix64, for reproducible prefixes without a dependency.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SimStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimFs> {
        lock_fs(&self.fs)
    }

    /// Mutating calls made so far (the next one is number `ops() + 1`).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Places `fault` at mutating call number `op` (see [`SimStore::ops`]).
    pub fn fail_at(&self, op: u64, fault: SimFault) {
        self.lock().faults.insert(op, fault);
    }

    /// Removes every fault not yet reached.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The disk is full (`true`) or has space again (`false`). Handles that saw ENOSPC
    /// keep failing until they are reopened.
    pub fn set_disk_full(&self, full: bool) {
        self.lock().full = full;
    }

    pub fn is_disk_full(&self) -> bool {
        self.lock().full
    }

    /// ENOSPC errors returned so far.
    pub fn enospc_errors(&self) -> u64 {
        self.lock().enospc_errors
    }

    /// Successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// A power cut was injected and [`SimStore::power_loss`] was not called since.
    pub fn is_power_cut(&self) -> bool {
        self.lock().power_cut
    }

    /// The power goes out now and comes back: every handle is dead, every database
    /// holds what was synced (plus, with `KeepPrefix`, a prefix of the rest), databases
    /// never synced are gone. Faults not yet reached are removed; a full disk stays full.
    pub fn power_loss(&self, mode: PowerLoss) {
        let mut fs = self.lock();
        fs.power_cut = false;
        fs.faults.clear();
        let mut n = 0u64;
        fs.dbs.retain(|_, db| {
            n += 1;
            let keep = match mode {
                PowerLoss::LoseUnsynced => 0,
                PowerLoss::KeepPrefix(seed) => {
                    (mix(seed ^ n.wrapping_mul(0x1000_0001)) % (db.log.len() as u64 + 1)) as usize
                }
            };
            if !db.durable_exists && keep == 0 {
                return false;
            }
            for op in db.log.iter().take(keep) {
                apply(&mut db.disk, op);
            }
            db.durable_exists = true;
            db.log.clear();
            db.flushed = 0;
            db.live = db.disk.clone();
            db.handle = None;
            db.sticky = None;
            true
        });
    }

    /// The process dies (the machine stays up): every handle is dead, writes handed to
    /// the OS survive, the rest is lost.
    pub fn crash(&self) {
        let mut fs = self.lock();
        fs.power_cut = false;
        for db in fs.dbs.values_mut() {
            db.handle = None;
            db.reload_from_os();
        }
    }

    /// Keys of tree `tree` of the database at `path` as the OS holds them (what a new
    /// handle would see), for assertions.
    pub fn os_keys(&self, path: &Path, tree: &str) -> Vec<Vec<u8>> {
        let fs = self.lock();
        let Some(db) = fs.dbs.get(path) else {
            return Vec::new();
        };
        let mut trees = db.disk.clone();
        for op in &db.log[..db.flushed] {
            apply(&mut trees, op);
        }
        trees
            .get(tree)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl Store for SimStore {
    fn create_dir_all(&self, dir: &Path) -> StoreResult<()> {
        let mut fs = self.lock();
        if fs.power_cut {
            return Err(power_off());
        }
        fs.dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn list(&self, dir: &Path) -> StoreResult<Vec<String>> {
        let fs = self.lock();
        if fs.power_cut {
            return Err(power_off());
        }
        Ok(fs
            .dbs
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let fs = self.lock();
        fs.dbs.contains_key(path)
            || fs.dirs.contains(path)
            || fs.dbs.keys().any(|p| p.starts_with(path))
    }

    fn open(&self, path: &Path, _cache_bytes: u64) -> StoreResult<Box<dyn Database>> {
        let mut fs = self.lock();
        let fault = fs.next_op();
        if fs.power_cut {
            return Err(power_off());
        }
        if fault == Some(SimFault::IoError) {
            return Err(StoreError::Io(io::Error::from_raw_os_error(libc::EIO)));
        }
        if fs.dbs.get(path).is_some_and(|db| db.handle.is_some()) {
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
            });
        }
        if fs.full {
            fs.enospc_errors += 1;
            return Err(StoreError::DiskFull(enospc()));
        }
        fs.next_handle += 1;
        let id = fs.next_handle;
        let db = fs.dbs.entry(path.to_path_buf()).or_insert_with(SimDb::new);
        db.reload_from_os();
        db.handle = Some(id);
        Ok(Box::new(SimDbHandle(Arc::new(HandleInner {
            fs: self.fs.clone(),
            path: path.to_path_buf(),
            id,
        }))))
    }

    fn remove(&self, path: &Path) -> StoreResult<()> {
        let mut fs = self.lock();
        let fault = fs.next_op();
        if fs.power_cut {
            return Err(power_off());
        }
        if fault == Some(SimFault::IoError) {
            return Err(StoreError::Io(io::Error::from_raw_os_error(libc::EIO)));
        }
        fs.dbs.remove(path);
        let inner: Vec<PathBuf> = fs
            .dbs
            .keys()
            .filter(|p| p.starts_with(path))
            .cloned()
            .collect();
        for p in inner {
            fs.dbs.remove(&p);
        }
        fs.dirs.remove(path);
        Ok(())
    }

    fn disk_bytes(&self, dir: &Path) -> u64 {
        let fs = self.lock();
        fs.dbs
            .iter()
            .filter(|(p, _)| p.starts_with(dir))
            .map(|(_, db)| db.bytes())
            .sum()
    }
}

struct HandleInner {
    fs: Arc<Mutex<SimFs>>,
    path: PathBuf,
    id: u64,
}

impl Drop for HandleInner {
    /// Closing a healthy handle hands its writes to the OS (sled flushes on drop).
    fn drop(&mut self) {
        let mut fs = lock_fs(&self.fs);
        let (cut, full) = (fs.power_cut, fs.full);
        if let Some(db) = fs.dbs.get_mut(&self.path) {
            if db.handle == Some(self.id) {
                if !cut && !full && db.sticky.is_none() {
                    db.flushed = db.log.len();
                }
                db.handle = None;
            }
        }
    }
}

impl HandleInner {
    fn write(&self, op: Op) -> StoreResult<()> {
        let mut fs = lock_fs(&self.fs);
        let db = fs.begin(&self.path, self.id, Kind::Write)?;
        apply(&mut db.live, &op);
        db.log.push(op);
        Ok(())
    }

    fn read<T>(&self, f: impl FnOnce(&Trees) -> T) -> StoreResult<T> {
        let mut fs = lock_fs(&self.fs);
        let db = fs.db(&self.path, self.id)?;
        Ok(f(&db.live))
    }
}

struct SimDbHandle(Arc<HandleInner>);

impl Database for SimDbHandle {
    fn tree(&self, name: &str) -> StoreResult<Box<dyn Tree>> {
        let exists = self.0.read(|t| t.contains_key(name))?;
        if !exists {
            self.0.write(Op::CreateTree(name.to_string()))?;
        }
        Ok(Box::new(SimTree {
            h: self.0.clone(),
            name: name.to_string(),
        }))
    }

    fn drop_tree(&self, name: &str) -> StoreResult<()> {
        self.0.write(Op::DropTree(name.to_string()))
    }

    fn tree_names(&self) -> StoreResult<Vec<String>> {
        self.0.read(|t| {
            t.keys()
                .filter(|n| n.as_str() != DEFAULT_TREE)
                .cloned()
                .collect()
        })
    }

    fn flush(&self) -> StoreResult<()> {
        let mut fs = lock_fs(&self.0.fs);
        let db = fs.begin(&self.0.path, self.0.id, Kind::Flush)?;
        db.flushed = db.log.len();
        Ok(())
    }

    fn sync(&self) -> StoreResult<()> {
        let mut fs = lock_fs(&self.0.fs);
        let db = fs.begin(&self.0.path, self.0.id, Kind::Sync)?;
        let log = std::mem::take(&mut db.log);
        for op in &log {
            apply(&mut db.disk, op);
        }
        db.flushed = 0;
        db.durable_exists = true;
        fs.syncs += 1;
        Ok(())
    }
}

struct SimTree {
    h: Arc<HandleInner>,
    name: String,
}

fn owned(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// BTreeMap::range panics on an empty or inverted range; those are just empty here.
fn valid(from: &Bound<Vec<u8>>, to: &Bound<Vec<u8>>) -> bool {
    use Bound::*;
    match (from, to) {
        (Included(a), Included(b)) => a <= b,
        (Included(a), Excluded(b)) | (Excluded(a), Included(b)) => a <= b,
        (Excluded(a), Excluded(b)) => a < b,
        _ => true,
    }
}

const ITER_CHUNK: usize = 256;

struct SimIter<'a> {
    tree: &'a SimTree,
    next: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    buf: VecDeque<KvPair>,
    done: bool,
}

impl Iterator for SimIter<'_> {
    type Item = StoreResult<KvPair>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            if !valid(&self.next, &self.to) {
                self.done = true;
                return None;
            }
            let (from, to) = (self.next.clone(), self.to.clone());
            let name = &self.tree.name;
            let chunk = self.tree.h.read(|t| {
                t.get(name)
                    .map(|tree| {
                        tree.range((from, to))
                            .take(ITER_CHUNK)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            });
            match chunk {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(chunk) => {
                    if chunk.len() < ITER_CHUNK {
                        self.done = true;
                    }
                    if let Some((k, _)) = chunk.last() {
                        self.next = Bound::Excluded(k.clone());
                    }
                    self.buf.extend(chunk);
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

impl Tree for SimTree {
    fn insert(&self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.h
            .write(Op::Insert(self.name.clone(), key.to_vec(), value.to_vec()))
    }

    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.h
            .read(|t| t.get(&self.name).and_then(|tree| tree.get(key).cloned()))
    }

    fn remove(&self, key: &[u8]) -> StoreResult<()> {
        self.h.write(Op::Remove(self.name.clone(), key.to_vec()))
    }

    fn apply_batch(&self, batch: &WriteBatch) -> StoreResult<()> {
        self.h.write(Op::Batch(self.name.clone(), batch.clone()))
    }

    fn range<'a>(&'a self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> KvIter<'a> {
        Box::new(SimIter {
            tree: self,
            next: owned(from),
            to: owned(to),
            buf: VecDeque::new(),
            done: false,
        })
    }

    fn last(&self) -> StoreResult<Option<KvPair>> {
        self.h.read(|t| {
            t.get(&self.name)
                .and_then(|tree| tree.iter().next_back())
                .map(|(k, v)| (k.clone(), v.clone()))
        })
    }

    fn floor(&self, key: &[u8]) -> StoreResult<Option<KvPair>> {
        self.h.read(|t| {
            t.get(&self.name)
                .and_then(|tree| tree.range(..=key.to_vec()).next_back())
                .map(|(k, v)| (k.clone(), v.clone()))
        })
    }

    fn clear(&self) -> StoreResult<()> {
        self.h.write(Op::Clear(self.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(s: &SimStore, p: &str) -> Box<dyn Database> {
        s.open(Path::new(p), 0).unwrap()
    }

    #[test]
    fn power_loss_keeps_only_synced_writes() {
        let s = SimStore::new();
        {
            let d = db(&s, "/x/a");
            let t = d.tree("t").unwrap();
            t.insert(b"1", b"one").unwrap();
            d.sync().unwrap();
            t.insert(b"2", b"two").unwrap();
            d.flush().unwrap();
            s.power_loss(PowerLoss::LoseUnsynced);
            assert!(t.get(b"1").is_err(), "handles die with the power");
        }
        let d = db(&s, "/x/a");
        let t = d.tree("t").unwrap();
        assert_eq!(t.get(b"1").unwrap(), Some(b"one".to_vec()));
        assert_eq!(t.get(b"2").unwrap(), None, "flushed is not synced");
    }

    #[test]
    fn never_synced_databases_vanish_and_crash_keeps_flushed() {
        let s = SimStore::new();
        {
            let d = db(&s, "/x/new");
            d.tree("t").unwrap().insert(b"k", b"v").unwrap();
            d.flush().unwrap();
            s.crash();
        }
        assert!(s.exists(Path::new("/x/new")));
        assert_eq!(s.os_keys(Path::new("/x/new"), "t"), vec![b"k".to_vec()]);
        s.power_loss(PowerLoss::LoseUnsynced);
        assert!(!s.exists(Path::new("/x/new")));
    }

    #[test]
    fn enospc_sticks_to_the_handle_until_reopened() {
        let s = SimStore::new();
        let d = db(&s, "/x/a");
        let t = d.tree("t").unwrap();
        s.set_disk_full(true);
        assert!(matches!(t.insert(b"1", b"v"), Err(StoreError::DiskFull(_))));
        s.set_disk_full(false);
        assert!(matches!(t.insert(b"1", b"v"), Err(StoreError::DiskFull(_))));
        assert!(matches!(d.flush(), Err(StoreError::DiskFull(_))));
        assert!(
            matches!(s.open(Path::new("/x/a"), 0), Err(StoreError::Locked { .. })),
            "the failed handle still holds the lock"
        );
        drop(t);
        drop(d);
        let d = db(&s, "/x/a");
        d.tree("t").unwrap().insert(b"1", b"v").unwrap();
        d.sync().unwrap();
    }

    #[test]
    fn faults_land_on_numbered_operations() {
        let s = SimStore::new();
        let d = db(&s, "/x/a");
        let t = d.tree("t").unwrap();
        let n = s.ops();
        s.fail_at(n + 2, SimFault::PowerCut);
        t.insert(b"1", b"v").unwrap();
        assert!(t.insert(b"2", b"v").is_err());
        assert!(d.sync().is_err());
        assert!(s.is_power_cut());
        s.power_loss(PowerLoss::LoseUnsynced);
        assert!(!s.exists(Path::new("/x/a")));
    }

    #[test]
    fn a_failed_sync_loses_what_it_was_syncing() {
        let s = SimStore::new();
        let d = db(&s, "/x/a");
        let t = d.tree("t").unwrap();
        t.insert(b"0", b"v").unwrap();
        d.sync().unwrap();
        t.insert(b"1", b"v").unwrap();
        d.flush().unwrap();
        s.fail_at(s.ops() + 1, SimFault::IoError);
        assert!(matches!(d.sync(), Err(StoreError::Io(_))));
        drop(t);
        drop(d);
        let d = db(&s, "/x/a");
        let t = d.tree("t").unwrap();
        assert_eq!(t.get(b"1").unwrap(), None);
        assert_eq!(t.get(b"0").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn ranges_iterate_in_chunks_in_order() {
        let s = SimStore::new();
        let d = db(&s, "/x/a");
        let t = d.tree("t").unwrap();
        for i in 0u32..1000 {
            t.insert(&i.to_be_bytes(), b"v").unwrap();
        }
        let keys: Vec<u32> = t
            .range(
                Bound::Included(&10u32.to_be_bytes()[..]),
                Bound::Excluded(&900u32.to_be_bytes()[..]),
            )
            .map(|kv| u32::from_be_bytes(kv.unwrap().0.try_into().unwrap()))
            .collect();
        assert_eq!(keys, (10..900).collect::<Vec<_>>());
        let empty = t
            .range(
                Bound::Included(&5u32.to_be_bytes()[..]),
                Bound::Included(&4u32.to_be_bytes()[..]),
            )
            .count();
        assert_eq!(empty, 0);
        let f = t.floor(&2000u32.to_be_bytes()).unwrap().unwrap();
        assert_eq!(f.0, 999u32.to_be_bytes().to_vec());
    }
}

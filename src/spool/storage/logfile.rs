//! Append-only log databases: one file per database, used for the spool's log segments
//! and streamed-transaction chunks (write once, read back, removed whole). sled keeps
//! every value written to an open database in memory, rewrites a node with all of its
//! values whenever one is added, and copies each 128 KiB block three times on its way to
//! disk: about 40% of the daemon's CPU on a catch-up (docs/performance.md). Here a write is
//! one `pwrite` of one frame, a read one `pread`, and memory is an index of positions.
//!
//! File: `DBMZLOG1`, then frames. A frame is one atomic group of writes:
//! `header_len u32 | crc32(header) u32 | header | values`, the header being
//! `op_count u16` and per op `kind u8 | tree_len u8 | tree | key_len u32 | key`
//! (+ `value_len u32` for an insert); the values follow in op order. The header's CRC
//! covers every length and key; values are not checksummed here: what the spool stores
//! carries its own CRC (blocks, framed index entries), so a damaged value is reported with
//! the sequence it holds instead of hiding the rest of the file.
//!
//! Opening scans the headers and rebuilds the index in memory. A frame that is cut short
//! or fails its CRC ends the scan: that is a write a crash interrupted (nothing after it
//! was acknowledged as durable, since frames are appended in order and only `sync` makes
//! them durable); the first write of this handle cuts the file there, so a stale frame
//! behind it cannot come back. Contract of the seam (`storage/mod.rs`): writes reach the
//! OS at once (`flush` has nothing left to do), `sync` is `fdatasync` (plus the parent
//! directory for a new file), removal is durable.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::info;

use super::{
    io_err, Database, KvIter, KvPair, StoreError, StoreResult, Tree, WriteBatch, DEFAULT_TREE,
};

const MAGIC: &[u8; 8] = b"DBMZLOG1";
/// A header longer than this is not one (garbage at the tail).
const MAX_HEADER: u32 = 16 << 20;
const KIND_REMOVE: u8 = 0;
const KIND_INSERT: u8 = 1;
const KIND_CLEAR: u8 = 2;
const KIND_DROP_TREE: u8 = 3;
/// How long an open waits for another handle of this process to be dropped.
const LOCK_WAIT: Duration = Duration::from_millis(500);

/// One write of a frame.
enum Op<'a> {
    Insert(&'a str, &'a [u8], &'a [u8]),
    Remove(&'a str, &'a [u8]),
    Clear(&'a str),
    DropTree(&'a str),
}

/// Where a value lies in the file.
#[derive(Debug, Clone, Copy)]
struct Loc {
    offset: u64,
    len: u32,
}

type Index = BTreeMap<Vec<u8>, Loc>;

struct State {
    /// End of the last whole frame: where the next one goes.
    len: u64,
    /// The file goes on past `len` (an interrupted write): cut it before the first new
    /// frame.
    stale_tail: bool,
    trees: HashMap<String, Index>,
}

struct Inner {
    path: PathBuf,
    file: fs::File,
    state: Mutex<State>,
    /// The file's directory entry is known to be durable.
    entry_synced: AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io(&self, what: &str, e: std::io::Error) -> StoreError {
        io_err(what, &self.path, e)
    }

    fn read(&self, loc: Loc) -> StoreResult<Vec<u8>> {
        let mut buf = vec![0u8; loc.len as usize];
        self.file
            .read_exact_at(&mut buf, loc.offset)
            .map_err(|e| self.io("reading", e))?;
        Ok(buf)
    }

    /// Appends one frame holding `ops` and applies them to the index.
    fn append(&self, ops: &[Op<'_>]) -> StoreResult<()> {
        super::sled_store::injected_disk_full()?;
        let (frame, header_len) = encode(ops)?;
        let mut st = self.lock();
        if st.stale_tail {
            self.file
                .set_len(st.len)
                .map_err(|e| self.io("cutting an interrupted write at the end of", e))?;
            st.stale_tail = false;
        }
        let start = st.len;
        self.file
            .write_all_at(&frame, start)
            .map_err(|e| self.io("appending to", e))?;
        let mut value_at = start + 8 + u64::from(header_len);
        for op in ops {
            let (kind, tree, key, len) = match op {
                Op::Insert(t, k, v) => (KIND_INSERT, *t, *k, v.len() as u32),
                Op::Remove(t, k) => (KIND_REMOVE, *t, *k, 0),
                Op::Clear(t) => (KIND_CLEAR, *t, &[][..], 0),
                Op::DropTree(t) => (KIND_DROP_TREE, *t, &[][..], 0),
            };
            index_op(&mut st.trees, kind, tree, key, value_at, len);
            value_at += u64::from(len);
        }
        st.len = start + frame.len() as u64;
        Ok(())
    }
}

/// Encodes a frame; returns it and its header's length.
fn encode(ops: &[Op<'_>]) -> StoreResult<(Vec<u8>, u32)> {
    let too_big = |what: &str| StoreError::Other(format!("{what} too large for a log frame"));
    let mut header = Vec::with_capacity(64);
    let count = u16::try_from(ops.len()).map_err(|_| too_big("batch"))?;
    header.extend_from_slice(&count.to_le_bytes());
    let mut values = 0usize;
    for op in ops {
        let (kind, tree, key, value) = match op {
            Op::Insert(t, k, v) => (KIND_INSERT, *t, *k, Some(*v)),
            Op::Remove(t, k) => (KIND_REMOVE, *t, *k, None),
            Op::Clear(t) => (KIND_CLEAR, *t, &[][..], None),
            Op::DropTree(t) => (KIND_DROP_TREE, *t, &[][..], None),
        };
        header.push(kind);
        header.push(u8::try_from(tree.len()).map_err(|_| too_big("tree name"))?);
        header.extend_from_slice(tree.as_bytes());
        let klen = u32::try_from(key.len()).map_err(|_| too_big("key"))?;
        header.extend_from_slice(&klen.to_le_bytes());
        header.extend_from_slice(key);
        if let Some(v) = value {
            let vlen = u32::try_from(v.len()).map_err(|_| too_big("value"))?;
            header.extend_from_slice(&vlen.to_le_bytes());
            values += v.len();
        }
    }
    let header_len = u32::try_from(header.len()).map_err(|_| too_big("header"))?;
    if header_len > MAX_HEADER {
        return Err(too_big("header"));
    }
    let mut frame = Vec::with_capacity(8 + header.len() + values);
    frame.extend_from_slice(&header_len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
    frame.extend_from_slice(&header);
    for op in ops {
        if let Op::Insert(_, _, v) = op {
            frame.extend_from_slice(v);
        }
    }
    Ok((frame, header_len))
}

/// Applies one op of a frame to the index: written now (`append`) or read back at open
/// (`scan`). An insert's value lies at `value_at`, `len` bytes.
fn index_op(
    trees: &mut HashMap<String, Index>,
    kind: u8,
    tree: &str,
    key: &[u8],
    value_at: u64,
    len: u32,
) {
    match kind {
        KIND_INSERT => {
            let loc = Loc {
                offset: value_at,
                len,
            };
            // No new String per insert when the tree exists (every block but the first).
            match trees.get_mut(tree) {
                Some(t) => t.insert(key.to_vec(), loc),
                None => trees
                    .entry(tree.to_string())
                    .or_default()
                    .insert(key.to_vec(), loc),
            };
        }
        KIND_REMOVE => {
            if let Some(t) = trees.get_mut(tree) {
                t.remove(key);
            }
        }
        KIND_CLEAR => trees.entry(tree.to_string()).or_default().clear(),
        _ => {
            trees.remove(tree);
        }
    }
}

/// A decoded header op: kind, tree, key, value length.
type HeaderOp = (u8, String, Vec<u8>, u32);

fn decode_header(h: &[u8]) -> Option<Vec<HeaderOp>> {
    let mut p = 0usize;
    let take = |p: &mut usize, n: usize| -> Option<&[u8]> {
        let s = h.get(*p..p.checked_add(n)?)?;
        *p += n;
        Some(s)
    };
    let u32_at = |p: &mut usize| -> Option<u32> {
        take(p, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let count = take(&mut p, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))?;
    let mut ops = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let kind = *take(&mut p, 1)?.first()?;
        let tlen = *take(&mut p, 1)?.first()? as usize;
        let tree = String::from_utf8(take(&mut p, tlen)?.to_vec()).ok()?;
        let klen = u32_at(&mut p)? as usize;
        let key = take(&mut p, klen)?.to_vec();
        let vlen = match kind {
            KIND_INSERT => u32_at(&mut p)?,
            KIND_REMOVE | KIND_CLEAR | KIND_DROP_TREE => 0,
            _ => return None,
        };
        ops.push((kind, tree, key, vlen));
    }
    (p == h.len()).then_some(ops)
}

/// Scans the frames of an open file: the index and the end of the last whole frame.
fn scan(file: &fs::File, file_len: u64) -> std::io::Result<(HashMap<String, Index>, u64)> {
    let mut trees: HashMap<String, Index> = HashMap::new();
    let mut at = MAGIC.len() as u64;
    loop {
        if at + 8 > file_len {
            break;
        }
        let mut prefix = [0u8; 8];
        file.read_exact_at(&mut prefix, at)?;
        let header_len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let crc = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        if header_len > MAX_HEADER || at + 8 + u64::from(header_len) > file_len {
            break;
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact_at(&mut header, at + 8)?;
        if crc32fast::hash(&header) != crc {
            break;
        }
        let Some(ops) = decode_header(&header) else {
            break;
        };
        let values: u64 = ops.iter().map(|o| u64::from(o.3)).sum();
        let end = at + 8 + u64::from(header_len) + values;
        if end > file_len {
            break;
        }
        let mut value_at = at + 8 + u64::from(header_len);
        for (kind, tree, key, vlen) in ops {
            index_op(&mut trees, kind, &tree, &key, value_at, vlen);
            value_at += u64::from(vlen);
        }
        at = end;
    }
    Ok((trees, at))
}

fn try_lock(file: &fs::File) -> bool {
    // SAFETY: flock on a descriptor this function's caller owns.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// An open log database.
pub(super) struct LogFileDb(Arc<Inner>);

impl LogFileDb {
    /// Opens (creating if missing) the log file at `path`.
    pub(super) fn open(path: &Path) -> StoreResult<LogFileDb> {
        let io = |what: &str, e: std::io::Error| io_err(what, path, e);
        let existed = path.exists();
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io("opening", e))?;
        let started = Instant::now();
        while !try_lock(&file) {
            if started.elapsed() > LOCK_WAIT {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let file_len = file
            .metadata()
            .map_err(|e| io("reading the size of", e))?
            .len();
        let (trees, len, stale_tail) = if file_len < MAGIC.len() as u64 {
            // New, or created by a run that crashed before writing anything.
            file.set_len(0).map_err(|e| io("initialising", e))?;
            file.write_all_at(MAGIC, 0)
                .map_err(|e| io("initialising", e))?;
            (HashMap::new(), MAGIC.len() as u64, false)
        } else {
            let mut magic = [0u8; 8];
            file.read_exact_at(&mut magic, 0)
                .map_err(|e| io("reading", e))?;
            if &magic != MAGIC {
                return Err(StoreError::Other(format!(
                    "{} is not a dbmazz log file (it starts with {:02x?})",
                    path.display(),
                    magic
                )));
            }
            let (trees, len) = scan(&file, file_len).map_err(|e| io("reading", e))?;
            if len < file_len {
                info!(
                    file = %path.display(),
                    bytes = file_len - len,
                    "an interrupted write at the end of a log file is ignored"
                );
            }
            (trees, len, len < file_len)
        };
        Ok(LogFileDb(Arc::new(Inner {
            path: path.to_path_buf(),
            file,
            state: Mutex::new(State {
                len,
                stale_tail,
                trees,
            }),
            // A file that existed was synced by the run that created it (the spool removes,
            // at open, a segment a crashed run never synced: it lies past the durable mark).
            entry_synced: AtomicBool::new(existed),
        })))
    }
}

impl Database for LogFileDb {
    fn tree(&self, name: &str) -> StoreResult<Box<dyn Tree>> {
        Ok(Box::new(LogTree {
            db: self.0.clone(),
            name: name.to_string(),
        }))
    }

    fn drop_tree(&self, name: &str) -> StoreResult<()> {
        self.0.append(&[Op::DropTree(name)])
    }

    fn tree_names(&self) -> StoreResult<Vec<String>> {
        let st = self.0.lock();
        let mut names: Vec<String> = st
            .trees
            .keys()
            .filter(|n| n.as_str() != DEFAULT_TREE)
            .cloned()
            .collect();
        names.sort();
        Ok(names)
    }

    fn flush(&self) -> StoreResult<()> {
        // Every write went to the OS when it was made.
        Ok(())
    }

    fn sync(&self) -> StoreResult<()> {
        super::sled_store::injected_disk_full()?;
        self.0
            .file
            .sync_data()
            .map_err(|e| self.0.io("fdatasync of", e))?;
        if !self.0.entry_synced.load(Ordering::Acquire) {
            if let Some(parent) = self.0.path.parent() {
                if !parent.as_os_str().is_empty() {
                    super::sled_store::sync_dir(parent)?;
                }
            }
            self.0.entry_synced.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// Whether the bounds hold no key (`BTreeMap::range` panics on those; a store answers
/// nothing, as sled does).
fn is_empty_range(from: Bound<&[u8]>, to: Bound<&[u8]>) -> bool {
    use Bound::{Excluded, Included};
    match (from, to) {
        (Included(a), Included(b)) => a > b,
        (Included(a), Excluded(b)) | (Excluded(a), Included(b)) | (Excluded(a), Excluded(b)) => {
            a >= b
        }
        _ => false,
    }
}

struct LogTree {
    db: Arc<Inner>,
    name: String,
}

impl LogTree {
    /// Positions of the entries between the bounds, in key order (read afterwards,
    /// outside the lock).
    fn locs(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Vec<(Vec<u8>, Loc)> {
        if is_empty_range(from, to) {
            return Vec::new();
        }
        let st = self.db.lock();
        match st.trees.get(&self.name) {
            Some(t) => t
                .range::<[u8], _>((from, to))
                .map(|(k, l)| (k.clone(), *l))
                .collect(),
            None => Vec::new(),
        }
    }

    fn one(&self, found: Option<(Vec<u8>, Loc)>) -> StoreResult<Option<KvPair>> {
        match found {
            Some((k, l)) => Ok(Some((k, self.db.read(l)?))),
            None => Ok(None),
        }
    }
}

impl Tree for LogTree {
    fn insert(&self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.db.append(&[Op::Insert(&self.name, key, value)])
    }

    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let loc = self
            .db
            .lock()
            .trees
            .get(&self.name)
            .and_then(|t| t.get(key).copied());
        loc.map(|l| self.db.read(l)).transpose()
    }

    fn remove(&self, key: &[u8]) -> StoreResult<()> {
        let present = self
            .db
            .lock()
            .trees
            .get(&self.name)
            .is_some_and(|t| t.contains_key(key));
        if !present {
            return Ok(());
        }
        self.db.append(&[Op::Remove(&self.name, key)])
    }

    fn apply_batch(&self, batch: &WriteBatch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let ops: Vec<Op<'_>> = batch
            .ops()
            .iter()
            .map(|(k, v)| match v {
                Some(v) => Op::Insert(&self.name, k, v),
                None => Op::Remove(&self.name, k),
            })
            .collect();
        self.db.append(&ops)
    }

    fn range<'a>(&'a self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> KvIter<'a> {
        let locs = self.locs(from, to);
        Box::new(
            locs.into_iter()
                .map(move |(k, l)| self.db.read(l).map(|v| (k, v))),
        )
    }

    fn last(&self) -> StoreResult<Option<KvPair>> {
        let found = {
            let st = self.db.lock();
            st.trees
                .get(&self.name)
                .and_then(|t| t.iter().next_back().map(|(k, l)| (k.clone(), *l)))
        };
        self.one(found)
    }

    fn floor(&self, key: &[u8]) -> StoreResult<Option<KvPair>> {
        let found = {
            let st = self.db.lock();
            st.trees.get(&self.name).and_then(|t| {
                t.range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
                    .next_back()
                    .map(|(k, l)| (k.clone(), *l))
            })
        };
        self.one(found)
    }

    fn clear(&self) -> StoreResult<()> {
        self.db.append(&[Op::Clear(&self.name)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> LogFileDb {
        LogFileDb::open(path).unwrap()
    }

    #[test]
    fn writes_read_back_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        {
            let db = open(&path);
            let log = db.tree("log").unwrap();
            let idx = db.tree("txns").unwrap();
            log.insert(b"\x00\x01", b"one").unwrap();
            log.insert(b"\x00\x03", b"three").unwrap();
            idx.insert(b"\x00\x01", b"i1").unwrap();
            log.insert(b"\x00\x03", b"THREE").unwrap();
            let mut b = WriteBatch::new();
            b.insert(b"\x00\x05".to_vec(), b"five".to_vec());
            b.remove(b"\x00\x01".to_vec());
            log.apply_batch(&b).unwrap();
            db.sync().unwrap();
        }
        let db = open(&path);
        let log = db.tree("log").unwrap();
        assert_eq!(log.get(b"\x00\x01").unwrap(), None);
        assert_eq!(log.get(b"\x00\x03").unwrap().unwrap(), b"THREE");
        assert_eq!(
            log.floor(b"\x00\x04").unwrap().unwrap(),
            (b"\x00\x03".to_vec(), b"THREE".to_vec())
        );
        assert_eq!(log.last().unwrap().unwrap().1, b"five");
        let all: Vec<KvPair> = log
            .range(Bound::Unbounded, Bound::Unbounded)
            .collect::<StoreResult<_>>()
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(db.tree_names().unwrap(), vec!["log", "txns"]);
        db.drop_tree("txns").unwrap();
        assert_eq!(db.tree_names().unwrap(), vec!["log"]);
    }

    #[test]
    fn an_interrupted_write_is_ignored_and_cut_before_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        {
            let db = open(&path);
            let log = db.tree("log").unwrap();
            log.insert(b"a", b"kept").unwrap();
            log.insert(b"b", &[7u8; 1000]).unwrap();
            log.insert(b"c", b"after").unwrap();
        }
        // A crash in the middle of the second frame's value: the third never made it.
        let bytes = std::fs::read(&path).unwrap();
        let cut = bytes.windows(4).position(|w| w == [7, 7, 7, 7]).unwrap() + 10;
        std::fs::write(&path, &bytes[..cut]).unwrap();
        {
            let db = open(&path);
            let log = db.tree("log").unwrap();
            assert_eq!(log.get(b"a").unwrap().unwrap(), b"kept");
            assert_eq!(log.get(b"b").unwrap(), None);
            assert_eq!(log.get(b"c").unwrap(), None);
            // The next write goes where the cut frame began, and the file ends after it.
            log.insert(b"d", b"new").unwrap();
            db.sync().unwrap();
        }
        let db = open(&path);
        let log = db.tree("log").unwrap();
        assert_eq!(log.get(b"d").unwrap().unwrap(), b"new");
        assert_eq!(log.get(b"b").unwrap(), None);
        let keys: Vec<Vec<u8>> = log
            .range(Bound::Unbounded, Bound::Unbounded)
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"d".to_vec()]);
    }

    #[test]
    fn a_stale_frame_behind_an_interrupted_one_does_not_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        {
            let db = open(&path);
            let log = db.tree("log").unwrap();
            log.insert(b"a", b"kept").unwrap();
            log.insert(b"b", &[9u8; 100]).unwrap();
            log.insert(b"c", b"stale").unwrap();
        }
        // Damage the second frame's header (as a power loss that wrote the third frame's
        // page but not the second's would): the scan stops there.
        let mut bytes = std::fs::read(&path).unwrap();
        // `kind insert | tree length 3` of the second frame's op.
        let b_at = bytes
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == b"\x01\x03")
            .map(|(i, _)| i)
            .nth(1)
            .unwrap();
        bytes[b_at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        {
            let db = open(&path);
            let log = db.tree("log").unwrap();
            assert_eq!(
                log.get(b"c").unwrap(),
                None,
                "a frame after the cut is not read"
            );
            log.insert(b"x", b"y").unwrap();
            db.sync().unwrap();
        }
        let db = open(&path);
        let log = db.tree("log").unwrap();
        assert_eq!(log.get(b"c").unwrap(), None, "the stale frame came back");
        assert_eq!(log.get(b"x").unwrap().unwrap(), b"y");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// A power loss keeps the synced frames and any prefix of the unsynced bytes, or
        /// the unsynced length with some of its pages never written (zeros): reopening
        /// shows every synced write, nothing torn, and writes after it read back after
        /// another reopen.
        #[test]
        fn a_power_loss_keeps_every_synced_write_and_nothing_torn(
            synced in 1usize..6,
            unsynced in 0usize..6,
            cut in 0.0f64..1.0,
            zeros in proptest::option::of((0.0f64..1.0, 1usize..5000)),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("seg");
            let value = |i: usize| vec![(i % 251) as u8; 100 + 997 * i % 3000];
            let durable_len;
            {
                let db = open(&path);
                let log = db.tree("log").unwrap();
                for i in 0..synced {
                    log.insert(&(i as u64).to_be_bytes(), &value(i)).unwrap();
                }
                db.sync().unwrap();
                durable_len = std::fs::metadata(&path).unwrap().len();
                for i in synced..synced + unsynced {
                    log.insert(&(i as u64).to_be_bytes(), &value(i)).unwrap();
                }
            }
            let full = std::fs::read(&path).unwrap();
            let keep = durable_len as usize
                + ((full.len() - durable_len as usize) as f64 * cut) as usize;
            let mut bytes = full[..keep].to_vec();
            if let Some((at, n)) = zeros {
                let tail = bytes.len() - durable_len as usize;
                let from = durable_len as usize + (tail as f64 * at) as usize;
                let to = (from + n).min(bytes.len());
                bytes[from..to].iter_mut().for_each(|b| *b = 0);
            }
            std::fs::write(&path, &bytes).unwrap();
            {
                let db = open(&path);
                let log = db.tree("log").unwrap();
                for i in 0..synced {
                    proptest::prop_assert_eq!(
                        log.get(&(i as u64).to_be_bytes()).unwrap(),
                        Some(value(i))
                    );
                }
                for i in synced..synced + unsynced {
                    if let Some(v) = log.get(&(i as u64).to_be_bytes()).unwrap() {
                        // A frame is whole or absent; zeros in its value are the
                        // spool's CRCs' business, not a torn frame.
                        proptest::prop_assert_eq!(v.len(), value(i).len());
                    }
                }
                log.insert(b"after", b"the power came back").unwrap();
                db.sync().unwrap();
            }
            let db = open(&path);
            let log = db.tree("log").unwrap();
            proptest::prop_assert_eq!(
                log.get(b"after").unwrap(),
                Some(b"the power came back".to_vec())
            );
            for i in 0..synced {
                proptest::prop_assert_eq!(
                    log.get(&(i as u64).to_be_bytes()).unwrap(),
                    Some(value(i))
                );
            }
        }
    }

    #[test]
    fn an_empty_or_inverted_range_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("seg"));
        let t = db.tree("t").unwrap();
        for k in [b"a", b"b", b"c"] {
            t.insert(k, k).unwrap();
        }
        let n = |from: Bound<&[u8]>, to: Bound<&[u8]>| t.range(from, to).count();
        assert_eq!(n(Bound::Included(b"c"), Bound::Included(b"a")), 0);
        assert_eq!(n(Bound::Included(b"b"), Bound::Excluded(b"b")), 0);
        assert_eq!(n(Bound::Excluded(b"b"), Bound::Excluded(b"b")), 0);
        assert_eq!(n(Bound::Excluded(b"c"), Bound::Included(b"a")), 0);
        assert_eq!(n(Bound::Included(b"b"), Bound::Included(b"b")), 1);
        assert_eq!(n(Bound::Excluded(b"a"), Bound::Unbounded), 2);
    }

    #[test]
    fn a_second_handle_is_refused_and_a_foreign_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let db = open(&path);
        assert!(matches!(
            LogFileDb::open(&path),
            Err(StoreError::Locked { .. })
        ));
        drop(db);
        assert!(LogFileDb::open(&path).is_ok());
        let other = dir.path().join("other");
        std::fs::write(&other, b"not a log file at all").unwrap();
        let e = LogFileDb::open(&other).err().unwrap().to_string();
        assert!(e.contains("not a dbmazz log file"), "{e}");
    }
}

//! The durable spool between the reader and the loader (sled). See docs/spool.md.
//!
//! Owns invariants 3 (durable before visible: the loader never reads past the durable
//! mark, which only lands on commits after the records and then the ledger were synced),
//! 4 (whole transactions; streamed ones visible at Stream Commit only), 8 (restart
//! resumes at the durable mark; anything past it is discarded on open), 9 (corruption
//! names the sequence), 10 (memory bounded: sled caches are capped, transactions are
//! never held in memory), 12 (the ledger records the source) and 13 (a full disk is
//! waited out in-process). sled stays behind the storage seam (`storage`): no sled type
//! appears in the public API.

mod error;
pub mod identity;
pub mod inspect;
mod meta;
mod reader;
mod record;
mod segment;
mod stats;
pub mod storage;
mod stream;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{info, warn};

pub use error::{Result, SpoolError};
pub use identity::{
    check_source, Gap, RefusedSpool, SlotFinding, SourceDecision, SourceIdentity, SpoolPosition,
};
pub use meta::{Counters, DurableMark, LoadedMark, PendingTxn};
pub use record::{
    decode_record, encode_record, frame, unframe, Block, CommitRecord, SpoolRecord, BLOCK_BYTES,
    FORMAT_VERSION,
};
pub use segment::dir_bytes;
pub use stats::{SpoolStats, TableCount};
pub use writer::GroupCommit;

use crate::core::{Relation, RelationId};
use meta::{Ledger, MetaState};
use record::BlockBuilder;
use segment::Segment;
use storage::{SledStore, Store};
use stream::{StreamSnapshot, StreamStore};

/// Default `SPOOL_MAX_BYTES`: 10 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;

/// How a spool is opened.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Bytes of sled cache, shared out between the open databases (keeps RSS small).
    pub cache_capacity: u64,
    /// `SPOOL_MAX_BYTES`: pending bytes (durable + unflushed + open streamed
    /// transactions) at which the spool reports full and the writer stops consuming.
    pub max_bytes: u64,
    /// Payload bytes after which the log moves on to a new segment (a whole sled
    /// database, deleted once fully loaded).
    pub segment_bytes: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            cache_capacity: 32 << 20,
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: 8 << 20,
        }
    }
}

/// Most segments kept open besides the writer's (older ones are reopened on demand).
const MAX_OPEN_SEGMENTS: usize = 1;

/// Closes the least recently used open segments nobody else holds, beyond
/// [`MAX_OPEN_SEGMENTS`]. sled keeps every value written to an open database in memory,
/// whatever its cache capacity, so a segment left open holds up to `segment_bytes`.
fn close_idle_segments(sh: &mut Shared) {
    let mut open: Vec<(u64, u64)> = sh
        .segments
        .iter()
        .filter(|(_, s)| s.open.as_ref().is_some_and(|a| Arc::strong_count(a) == 1))
        .map(|(f, s)| (s.last_use, *f))
        .collect();
    if open.len() > MAX_OPEN_SEGMENTS {
        open.sort();
        let excess = open.len() - MAX_OPEN_SEGMENTS;
        for (_, f) in open.into_iter().take(excess) {
            if let Some(s) = sh.segments.get_mut(&f) {
                s.open = None;
            }
        }
    }
}

/// A handle on an open spool. Cheap to clone; one writer task appends and flushes, any
/// number of readers (the loader, inspection) read.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    opts: SpoolOptions,
    store: Arc<dyn Store>,
    ledger: Ledger,
    /// Serialises every ledger write: "build the new state, store it, sync it" (flush,
    /// mark_loaded, identity, journal), relation versions, and reopening the ledger.
    meta_lock: Mutex<()>,
    shared: Mutex<Shared>,
    writer: Mutex<WriterState>,
    /// The last block read (the loader reads sequentially, a block at a time).
    last_block: Mutex<Option<Arc<Block>>>,
}

struct SegSlot {
    path: PathBuf,
    /// Highest sequence written to this segment (durable or not); 0 when empty.
    last_seq: u64,
    open: Option<Arc<Segment>>,
    last_use: u64,
}

struct Shared {
    /// The state as stored in meta (durable view).
    state: MetaState,
    segments: BTreeMap<u64, SegSlot>,
    relations: BTreeMap<(RelationId, u32), Relation>,
    latest: HashMap<RelationId, u32>,
    /// Last log sequence written (durable or not) using each relation version.
    rel_live: BTreeMap<(RelationId, u32), u64>,
    /// Bytes appended but not yet durable (open and committed-unflushed transactions).
    unflushed_bytes: u64,
    /// Bytes of open streamed transactions.
    stream_bytes: u64,
    stream_txns: usize,
    use_clock: u64,
    disk_bytes: Option<(std::time::Instant, u64)>,
    /// The source this spool belongs to, as stored in the ledger.
    source: Option<SourceIdentity>,
    /// The loader's journal, as stored in the ledger.
    journal: Option<Vec<u8>>,
    /// The writer hit a full disk and has not recovered yet.
    disk_full: bool,
}

#[derive(Clone)]
struct OpenTxn {
    first_seq: u64,
    changes: u64,
    bytes: u64,
    tables: BTreeMap<RelationId, u64>,
}

#[derive(Default)]
struct PendingFlush {
    mark: Option<DurableMark>,
    counters: Counters,
    dirty: Vec<Arc<Segment>>,
}

/// The writer's state at its last checkpoint (the end of its last successful flush):
/// after a storage error the spool rolls back to it, and the caller appends again every
/// event it appended since (see `Spool::recover_writer`).
#[derive(Clone)]
struct Checkpoint {
    next_seq: u64,
    last_commit_seq: u64,
    /// First sequence of the writer's segment.
    current: Option<u64>,
    current_bytes: u64,
    txn: Option<OpenTxn>,
    in_stream: Option<crate::core::Xid>,
    streams: StreamSnapshot,
    unflushed_bytes: u64,
}

struct WriterState {
    /// Something was appended since the last checkpoint.
    touched: bool,
    checkpoint: Checkpoint,
    next_seq: u64,
    /// Sequence of the last commit record written (durable or not).
    last_commit_seq: u64,
    current: Option<Arc<Segment>>,
    current_bytes: u64,
    /// The block being filled (records from `block.first_seq` to `next_seq - 1`); it
    /// goes to the current segment when full and at every flush.
    block: BlockBuilder,
    /// The commit records in `block`, for the segment's commit index.
    block_commits: Vec<(u64, CommitRecord)>,
    txn: Option<OpenTxn>,
    in_stream: Option<crate::core::Xid>,
    streams: StreamStore,
    pending: PendingFlush,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`. After a crash, everything past the durable
    /// mark (an unfinished transaction, in-progress streamed transactions, unflushed
    /// commits) is discarded: PostgreSQL sends it again from the durable mark's end LSN.
    pub fn open(dir: impl AsRef<Path>, opts: SpoolOptions) -> Result<Spool> {
        Self::open_with_store(Arc::new(SledStore), dir, opts)
    }

    /// [`Spool::open`] on another storage (tests use `storage::SimStore`).
    pub fn open_with_store(
        store: Arc<dyn Store>,
        dir: impl AsRef<Path>,
        opts: SpoolOptions,
    ) -> Result<Spool> {
        let dir = dir.as_ref().to_path_buf();
        store
            .create_dir_all(&dir)
            .map_err(|e| SpoolError::store(format!("creating {}", dir.display()), e))?;
        let ledger = Ledger::open(store.clone(), dir.join("meta"))?;
        let segs = segment::list(store.as_ref(), &dir)?;
        let state = match ledger.format_version()? {
            None => {
                if !segs.is_empty() {
                    return Err(SpoolError::CorruptMeta {
                        key: "format_version".into(),
                        reason: format!("{} holds log segments but no spool meta", dir.display()),
                    });
                }
                let state = MetaState {
                    spool_id: rand::random::<u64>(),
                    ..MetaState::default()
                };
                ledger.init(FORMAT_VERSION, &state)?;
                info!(spool_id = %format!("{:016x}", state.spool_id), dir = %dir.display(), "created a new spool");
                state
            }
            Some(v) if v != FORMAT_VERSION => {
                return Err(SpoolError::UnsupportedFormat {
                    dir,
                    found: v,
                    supported: FORMAT_VERSION,
                })
            }
            Some(_) => ledger.load_state()?,
        };
        let relations = ledger.relations()?;
        let source: Option<SourceIdentity> = ledger.get_framed(meta::KEY_SOURCE, "source")?;
        let journal: Option<Vec<u8>> = ledger.get_framed(meta::KEY_JOURNAL, "loader_journal")?;
        let mut latest: HashMap<RelationId, u32> = HashMap::new();
        for (id, v) in relations.keys() {
            let e = latest.entry(*id).or_default();
            *e = (*e).max(*v);
        }
        let seg_cache = (opts.cache_capacity / 4).max(1 << 20);
        let streams = StreamStore::open(store.clone(), &dir, seg_cache, opts.segment_bytes)?;

        // Recovery: drop segments past the durable mark and fully loaded ones; cut the
        // tail of the last one back to the durable mark.
        let durable = state.durable.seq;
        let loaded = state.loaded.seq;
        let segments = rebuild_segments(store.as_ref(), &dir, seg_cache, durable, loaded)?;
        if durable > loaded {
            let covered = segments
                .range(..=loaded + 1)
                .next_back()
                .map(|(f, s)| *f <= loaded + 1 && s.last_seq > loaded)
                .unwrap_or(false);
            if !covered {
                return Err(SpoolError::Corrupt {
                    seq: loaded + 1,
                    reason: "the log segment holding this durable record is missing".into(),
                });
            }
        }
        info!(
            dir = %dir.display(),
            durable_seq = durable,
            loaded_seq = loaded,
            end_lsn = %state.durable.end_lsn,
            "spool opened"
        );
        let shared = Shared {
            state: state.clone(),
            segments,
            relations,
            latest,
            rel_live: state.rel_last_used.clone(),
            unflushed_bytes: 0,
            stream_bytes: 0,
            stream_txns: 0,
            use_clock: 0,
            disk_bytes: None,
            source,
            journal,
            disk_full: false,
        };
        let checkpoint = Checkpoint {
            next_seq: durable + 1,
            last_commit_seq: durable,
            current: None,
            current_bytes: 0,
            txn: None,
            in_stream: None,
            streams: streams.snapshot(),
            unflushed_bytes: 0,
        };
        let writer = WriterState {
            touched: false,
            checkpoint,
            next_seq: durable + 1,
            last_commit_seq: durable,
            current: None,
            current_bytes: 0,
            block: BlockBuilder::new(durable + 1),
            block_commits: Vec::new(),
            txn: None,
            in_stream: None,
            streams,
            pending: PendingFlush::default(),
        };
        Ok(Spool {
            inner: Arc::new(Inner {
                dir,
                opts,
                store,
                ledger,
                meta_lock: Mutex::new(()),
                shared: Mutex::new(shared),
                writer: Mutex::new(writer),
                last_block: Mutex::new(None),
            }),
        })
    }

    /// The spool's random id (16 hex digits), part of every Stream Load label.
    pub fn id(&self) -> String {
        format!("{:016x}", lock(&self.inner.shared).state.spool_id)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn options(&self) -> &SpoolOptions {
        &self.inner.opts
    }

    /// The last durable commit: the loader reads up to `seq`, replication resumes at
    /// `end_lsn`.
    pub fn durable_mark(&self) -> DurableMark {
        lock(&self.inner.shared).state.durable
    }

    pub fn loaded_mark(&self) -> LoadedMark {
        lock(&self.inner.shared).state.loaded
    }

    /// Reopens the ledger if a write failed on it (the engine's handle may keep failing,
    /// as sled does after ENOSPC). The caller holds `meta_lock`.
    fn heal_ledger_locked(&self) -> Result<()> {
        if !self.inner.ledger.is_poisoned() {
            return Ok(());
        }
        let relations = lock(&self.inner.shared).relations.clone();
        self.inner.ledger.reopen(&relations)?;
        info!("spool ledger reopened after a storage error");
        Ok(())
    }

    fn seg_cache(&self) -> u64 {
        (self.inner.opts.cache_capacity / 4).max(1 << 20)
    }

    /// The open segment whose first sequence is `first`, opening it if needed.
    fn segment(&self, first: u64) -> Result<Arc<Segment>> {
        let mut sh = lock(&self.inner.shared);
        sh.use_clock += 1;
        let clock = sh.use_clock;
        let slot = sh
            .segments
            .get_mut(&first)
            .ok_or_else(|| SpoolError::Corrupt {
                seq: first,
                reason: "log segment missing".into(),
            })?;
        slot.last_use = clock;
        if let Some(s) = &slot.open {
            return Ok(s.clone());
        }
        let seg = Arc::new(Segment::open(
            self.inner.store.as_ref(),
            &self.inner.dir,
            first,
            self.seg_cache(),
        )?);
        slot.open = Some(seg.clone());
        close_idle_segments(&mut sh);
        Ok(seg)
    }

    /// First sequence of the segment holding `seq`.
    fn segment_of(&self, seq: u64) -> Option<u64> {
        let sh = lock(&self.inner.shared);
        sh.segments
            .range(..=seq)
            .next_back()
            .filter(|(_, s)| s.last_seq >= seq)
            .map(|(f, _)| *f)
    }
}

/// The log segments as storage holds them, for a writer that resumes after `keep_up_to`:
/// segments starting past it are removed, the last one is cut back to it (and synced),
/// fully loaded ones before the last are removed.
fn rebuild_segments(
    store: &dyn Store,
    dir: &Path,
    seg_cache: u64,
    keep_up_to: u64,
    loaded: u64,
) -> Result<BTreeMap<u64, SegSlot>> {
    let mut kept: Vec<(u64, PathBuf)> = Vec::new();
    for (first, path) in segment::list(store, dir)? {
        if first > keep_up_to {
            warn!(
                first_seq = first,
                keep_up_to, "discarding a log segment past the durable mark"
            );
            segment::remove(store, &path)?;
        } else {
            kept.push((first, path));
        }
    }
    let mut segments = BTreeMap::new();
    let n = kept.len();
    for (i, (first, path)) in kept.iter().enumerate() {
        let last_seq = if i + 1 < n {
            kept[i + 1].0 - 1
        } else {
            let seg = Segment::open(store, dir, *first, seg_cache)?;
            let removed = seg.truncate_after(keep_up_to)?;
            if removed > 0 {
                warn!(
                    entries = removed,
                    keep_up_to, "discarded log entries past the durable mark"
                );
            }
            // Synced even when nothing was left to cut: the previous run may have cut
            // records past the mark (a discarded open transaction) in the OS's cache
            // only. The writer reuses those sequences next, in new blocks; if a power
            // loss then brought the old block back whole, its discarded records would be
            // read in place of the new ones.
            seg.sync()?;
            match seg.last_seq() {
                Ok(last) => last.unwrap_or(0),
                // A damaged last block: its records are read (and fail) up to the mark.
                Err(SpoolError::Corrupt { .. }) => keep_up_to,
                Err(e) => return Err(e),
            }
        };
        if last_seq <= loaded && i + 1 < n {
            segment::remove(store, path)?;
            continue;
        }
        segments.insert(
            *first,
            SegSlot {
                path: path.clone(),
                last_seq,
                open: None,
                last_use: 0,
            },
        );
    }
    Ok(segments)
}

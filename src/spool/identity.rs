//! Which source a spool belongs to (invariant 12). The ledger records the source's
//! identity (system identifier, database, slot, timeline); [`check_source`] is the pure
//! decision the daemon takes at start from what the ledger says, what the server and its
//! slot show, and whether the operator accepted a gap. Nothing here does I/O except the
//! two ledger calls at the end.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::Result;
use super::meta::KEY_SOURCE;
use super::record::frame;
use super::storage::WriteBatch;
use super::{lock, Spool};
use crate::core::Lsn;

/// The setting an operator turns on to accept a gap (named in refusal messages).
pub const ACCEPT_GAP_SETTING: &str = "ACCEPT_SLOT_GAP=true";

/// The identity of a replication source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIdentity {
    /// `system_identifier` of the cluster (`IDENTIFY_SYSTEM` / `pg_control_system()`).
    pub system_identifier: u64,
    pub database: String,
    pub slot: String,
    /// The server's timeline (`IDENTIFY_SYSTEM`); it grows at each promotion.
    pub timeline: u32,
}

impl fmt::Display for SourceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "system {}/db {}/slot {}/timeline {}",
            self.system_identifier, self.database, self.slot, self.timeline
        )
    }
}

/// What the server shows of the configured slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotFinding {
    Missing,
    Present { confirmed_flush: Lsn },
}

/// Where the spool stands, from its ledger (see [`Spool::position`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolPosition {
    /// The LSN the loader confirmed (the ledger's confirmed LSN).
    pub confirmed: Lsn,
    /// Where replication resumes: the end of the last durable transaction. With
    /// `ACK_POLICY=spooled` this is also the furthest LSN confirmed to PostgreSQL.
    pub resume: Lsn,
    /// The ledger recorded at least one transaction from a slot (anything durable,
    /// loaded or confirmed, even if all of it is loaded and gone since).
    pub has_data: bool,
    /// The furthest LSN the daemon acknowledged to PostgreSQL under its ack policy
    /// (`confirmed` with `ACK_POLICY=loaded`, `resume` with `spooled`). Once everything
    /// up to `resume` is acknowledged, an idle source lets the slot follow the server
    /// past `resume` (the reader's one exception to invariant 1), so a slot ahead of
    /// `resume` is a gap only while something durable was not acknowledged yet.
    /// [`Spool::position`] fills in `confirmed` (the `loaded` policy); the daemon
    /// raises it for `spooled`.
    pub acknowledged: Lsn,
}

/// A gap: changes the source no longer has and the spool never received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// The slot is gone: everything after `resume` until a new slot is created is lost.
    SlotMissing { resume: Lsn },
    /// The slot confirmed past the spool's resume point while the spool held changes
    /// it had not acknowledged (so the slot was advanced or recreated by someone):
    /// changes between `resume` and `slot_confirmed` will not be sent.
    SlotAhead { resume: Lsn, slot_confirmed: Lsn },
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gap::SlotMissing { resume } => write!(
                f,
                "the slot is missing: changes after {resume} are no longer in PostgreSQL"
            ),
            Gap::SlotAhead {
                resume,
                slot_confirmed,
            } => write!(
                f,
                "the slot confirmed up to {slot_confirmed}, past the spool's resume point \
                 {resume}: changes between them will not be sent"
            ),
        }
    }
}

/// What the daemon does with this spool and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceDecision {
    /// A new spool with nothing recorded: record the source (`bind_source`) and go on
    /// (creating the slot if it is missing, as on any first start).
    Bind,
    /// A spool written before identities were recorded, whose data lines up with the
    /// slot: record the source (`bind_source`) and go on.
    Adopt,
    /// The same source: go on.
    Proceed,
    /// Same system, database and slot on a later timeline (a failover or promotion whose
    /// slot survived): record the new timeline (`bind_source`), log it, go on.
    Failover { from: u32, to: u32 },
    /// A gap the operator accepted: log it loudly, create the slot if it is missing,
    /// record the source (`bind_source`) and go on. The gap's changes are not in the
    /// target.
    AcceptGap(Gap),
}

impl SourceDecision {
    /// The daemon must call `Spool::bind_source(observed)` before going on.
    pub fn needs_bind(&self) -> bool {
        !matches!(self, SourceDecision::Proceed)
    }
}

fn owner(recorded: &Option<SourceIdentity>) -> String {
    match recorded {
        Some(r) => r.to_string(),
        None => "an unrecorded source (written by a dbmazz version that did not record it)".into(),
    }
}

/// Why a spool is refused. Each message says whose spool it is, what was found and what
/// the operator can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusedSpool {
    #[error(
        "the spool belongs to another source: it holds data of {recorded}, but the configured \
         source is {observed} (the {differs} differs). Point SPOOL_DIR at this source's own \
         spool (or an empty directory for a new job); to reuse this directory for the new \
         source, drain the spool with the old source's configuration first, then remove it"
    )]
    OtherSource {
        recorded: SourceIdentity,
        observed: SourceIdentity,
        differs: &'static str,
    },
    #[error(
        "the spool holds data of {recorded}, but the server is on an earlier timeline \
         ({observed}): it is not the server this spool followed (an old primary after a \
         failover?). Point the source at the current primary; if this server really is the \
         source now, re-snapshot: drain and remove the spool, then start a new job"
    )]
    TimelineBehind {
        recorded: SourceIdentity,
        observed: SourceIdentity,
    },
    #[error(
        "the spool of {} already received data up to {resume} (confirmed {confirmed}), but \
         slot {:?} is missing on {observed}: changes after {resume} are no longer in \
         PostgreSQL and would be silently skipped. Either re-snapshot (drain and remove the \
         spool, then start a new job with an initial snapshot), or accept the gap once with \
         {ACCEPT_GAP_SETTING} (the slot is created anew; the skipped changes will be missing \
         in the target)",
        owner(recorded), observed.slot
    )]
    SlotMissing {
        recorded: Option<SourceIdentity>,
        observed: SourceIdentity,
        resume: Lsn,
        confirmed: Lsn,
    },
    #[error(
        "slot {:?} on {observed} has confirmed up to {slot_confirmed}, past where the spool of \
         {} resumes ({resume}): someone advanced or recreated the slot, and changes between \
         {resume} and {slot_confirmed} would be silently skipped. Either re-snapshot (drain and \
         remove the spool, then start a new job with an initial snapshot), or accept the gap \
         once with {ACCEPT_GAP_SETTING}",
        observed.slot, owner(recorded)
    )]
    SlotAhead {
        recorded: Option<SourceIdentity>,
        observed: SourceIdentity,
        resume: Lsn,
        slot_confirmed: Lsn,
    },
}

/// Decides whether the daemon may use this spool with the observed source.
///
/// - another system identifier, database or slot than recorded: refused (a gap flag does
///   not help: the data is another source's);
/// - an earlier timeline than recorded: refused (not the server the spool followed);
/// - nothing recorded and no data (a new spool): `Bind`;
/// - nothing recorded but data (a spool of an older version): treated like a recorded
///   identity that matches, so it is adopted only when the slot lines up (present, not
///   past the resume point);
/// - the slot missing while the spool has data, or the slot confirmed past the spool's
///   resume point while not everything up to it was acknowledged: refused as a gap
///   unless `accept_gap`. A slot past the resume point of a fully acknowledged spool is
///   what an idle source does (the reader lets the slot follow the server): not a gap.
// Called once at start: the size of the refusal (two identities) does not matter.
#[allow(clippy::result_large_err)]
pub fn check_source(
    recorded: Option<&SourceIdentity>,
    spool: SpoolPosition,
    observed: &SourceIdentity,
    slot: SlotFinding,
    accept_gap: bool,
) -> std::result::Result<SourceDecision, RefusedSpool> {
    if let Some(r) = recorded {
        let differs = if r.system_identifier != observed.system_identifier {
            Some("system identifier")
        } else if r.database != observed.database {
            Some("database")
        } else if r.slot != observed.slot {
            Some("slot")
        } else {
            None
        };
        if let Some(differs) = differs {
            return Err(RefusedSpool::OtherSource {
                recorded: r.clone(),
                observed: observed.clone(),
                differs,
            });
        }
        if observed.timeline < r.timeline {
            return Err(RefusedSpool::TimelineBehind {
                recorded: r.clone(),
                observed: observed.clone(),
            });
        }
    } else if !spool.has_data {
        return Ok(SourceDecision::Bind);
    }
    let gap = if !spool.has_data {
        None
    } else {
        match slot {
            SlotFinding::Missing => Some(Gap::SlotMissing {
                resume: spool.resume,
            }),
            SlotFinding::Present { confirmed_flush }
                if confirmed_flush > spool.resume && spool.acknowledged < spool.resume =>
            {
                Some(Gap::SlotAhead {
                    resume: spool.resume,
                    slot_confirmed: confirmed_flush,
                })
            }
            SlotFinding::Present { .. } => None,
        }
    };
    if let Some(gap) = gap {
        if accept_gap {
            return Ok(SourceDecision::AcceptGap(gap));
        }
        let recorded = recorded.cloned();
        return Err(match gap {
            Gap::SlotMissing { resume } => RefusedSpool::SlotMissing {
                recorded,
                observed: observed.clone(),
                resume,
                confirmed: spool.confirmed,
            },
            Gap::SlotAhead {
                resume,
                slot_confirmed,
            } => RefusedSpool::SlotAhead {
                recorded,
                observed: observed.clone(),
                resume,
                slot_confirmed,
            },
        });
    }
    Ok(match recorded {
        None => SourceDecision::Adopt,
        Some(r) if r.timeline < observed.timeline => SourceDecision::Failover {
            from: r.timeline,
            to: observed.timeline,
        },
        Some(_) => SourceDecision::Proceed,
    })
}

impl Spool {
    /// The source this spool belongs to, as recorded in the ledger (`None` for a new
    /// spool, or one written by a version that did not record it).
    pub fn source_identity(&self) -> Option<SourceIdentity> {
        lock(&self.inner.shared).source.clone()
    }

    /// Records the source this spool belongs to; durable (synced) when it returns.
    pub fn bind_source(&self, id: &SourceIdentity) -> Result<()> {
        let _m = lock(&self.inner.meta_lock);
        self.heal_ledger_locked()?;
        let mut batch = WriteBatch::new();
        batch.insert(KEY_SOURCE, frame(id)?);
        self.inner
            .ledger
            .commit_batch("recording the source identity", &batch)?;
        lock(&self.inner.shared).source = Some(id.clone());
        Ok(())
    }

    /// Where the spool stands, for [`check_source`].
    pub fn position(&self) -> SpoolPosition {
        let st = &lock(&self.inner.shared).state;
        SpoolPosition {
            confirmed: st.loaded.confirmed_lsn,
            resume: st.durable.end_lsn,
            has_data: st.durable.seq > 0
                || st.durable.end_lsn > Lsn::ZERO
                || st.loaded.confirmed_lsn > Lsn::ZERO,
            acknowledged: st.loaded.confirmed_lsn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SourceIdentity {
        SourceIdentity {
            system_identifier: 7_291_000_000_000_000_001,
            database: "app".into(),
            slot: "dbmazz_slot".into(),
            timeline: 1,
        }
    }

    fn pos(resume: u64) -> SpoolPosition {
        SpoolPosition {
            confirmed: Lsn(resume / 2),
            resume: Lsn(resume),
            has_data: true,
            acknowledged: Lsn(resume / 2),
        }
    }

    const EMPTY: SpoolPosition = SpoolPosition {
        confirmed: Lsn(0),
        resume: Lsn(0),
        has_data: false,
        acknowledged: Lsn(0),
    };

    fn present(lsn: u64) -> SlotFinding {
        SlotFinding::Present {
            confirmed_flush: Lsn(lsn),
        }
    }

    #[test]
    fn display_names_every_part() {
        assert_eq!(
            id().to_string(),
            "system 7291000000000000001/db app/slot dbmazz_slot/timeline 1"
        );
    }

    #[test]
    fn a_new_spool_is_bound_whatever_the_slot() {
        for slot in [SlotFinding::Missing, present(0x500)] {
            for gap in [false, true] {
                assert_eq!(
                    check_source(None, EMPTY, &id(), slot, gap),
                    Ok(SourceDecision::Bind)
                );
            }
        }
        assert!(SourceDecision::Bind.needs_bind());
    }

    #[test]
    fn the_same_source_proceeds() {
        let d = check_source(Some(&id()), pos(0x1000), &id(), present(0x800), false);
        assert_eq!(d, Ok(SourceDecision::Proceed));
        assert!(!SourceDecision::Proceed.needs_bind());
        // The slot exactly at the resume point (ACK_POLICY=spooled) is fine too.
        let d = check_source(Some(&id()), pos(0x1000), &id(), present(0x1000), false);
        assert_eq!(d, Ok(SourceDecision::Proceed));
        // A bound spool with nothing in it yet, slot missing: nothing to lose.
        let d = check_source(Some(&id()), EMPTY, &id(), SlotFinding::Missing, false);
        assert_eq!(d, Ok(SourceDecision::Proceed));
    }

    #[test]
    fn another_system_database_or_slot_is_refused_even_accepting_gaps() {
        let mut sys = id();
        sys.system_identifier += 1;
        let mut db = id();
        db.database = "other".into();
        let mut slot = id();
        slot.slot = "other_slot".into();
        for (observed, what) in [(sys, "system identifier"), (db, "database"), (slot, "slot")] {
            for gap in [false, true] {
                let e = check_source(Some(&id()), pos(0x1000), &observed, present(0x800), gap)
                    .unwrap_err();
                assert_eq!(
                    e,
                    RefusedSpool::OtherSource {
                        recorded: id(),
                        observed: observed.clone(),
                        differs: what,
                    }
                );
                let msg = e.to_string();
                assert!(msg.contains(&id().to_string()), "says whose: {msg}");
                assert!(msg.contains(&observed.to_string()), "says what: {msg}");
                assert!(msg.contains("SPOOL_DIR"), "says what to do: {msg}");
            }
        }
    }

    #[test]
    fn a_later_timeline_is_a_failover_an_earlier_one_is_refused() {
        let mut later = id();
        later.timeline = 3;
        let d = check_source(Some(&id()), pos(0x1000), &later, present(0x900), false);
        assert_eq!(d, Ok(SourceDecision::Failover { from: 1, to: 3 }));
        assert!(d.unwrap().needs_bind());
        let mut rec = id();
        rec.timeline = 4;
        let e = check_source(Some(&rec), pos(0x1000), &later, present(0x900), true).unwrap_err();
        assert!(matches!(e, RefusedSpool::TimelineBehind { .. }));
        assert!(e.to_string().contains("earlier timeline"));
        // A failover that lost the slot is a gap.
        let e = check_source(
            Some(&id()),
            pos(0x1000),
            &later,
            SlotFinding::Missing,
            false,
        )
        .unwrap_err();
        assert!(matches!(e, RefusedSpool::SlotMissing { .. }));
    }

    #[test]
    fn a_missing_slot_with_data_is_a_gap_refused_unless_accepted() {
        let e =
            check_source(Some(&id()), pos(0x1000), &id(), SlotFinding::Missing, false).unwrap_err();
        assert_eq!(
            e,
            RefusedSpool::SlotMissing {
                recorded: Some(id()),
                observed: id(),
                resume: Lsn(0x1000),
                confirmed: Lsn(0x800),
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("0/1000"), "names the resume point: {msg}");
        assert!(msg.contains("re-snapshot"), "{msg}");
        assert!(msg.contains(ACCEPT_GAP_SETTING), "{msg}");
        let d = check_source(Some(&id()), pos(0x1000), &id(), SlotFinding::Missing, true);
        assert_eq!(
            d,
            Ok(SourceDecision::AcceptGap(Gap::SlotMissing {
                resume: Lsn(0x1000)
            }))
        );
    }

    #[test]
    fn a_slot_beyond_the_resume_point_is_a_gap_refused_unless_accepted() {
        let e = check_source(Some(&id()), pos(0x1000), &id(), present(0x1001), false).unwrap_err();
        assert_eq!(
            e,
            RefusedSpool::SlotAhead {
                recorded: Some(id()),
                observed: id(),
                resume: Lsn(0x1000),
                slot_confirmed: Lsn(0x1001),
            }
        );
        assert!(e.to_string().contains("advanced or recreated"));
        let d = check_source(Some(&id()), pos(0x1000), &id(), present(0x1001), true);
        assert_eq!(
            d,
            Ok(SourceDecision::AcceptGap(Gap::SlotAhead {
                resume: Lsn(0x1000),
                slot_confirmed: Lsn(0x1001)
            }))
        );
    }

    #[test]
    fn a_slot_that_followed_an_idle_source_past_a_fully_acknowledged_spool_is_no_gap() {
        // Everything loaded and confirmed (ACK_POLICY=loaded), or everything durable
        // acknowledged (spooled): the reader let the slot follow the server.
        for confirmed in [0x1000, 0x800] {
            let spool = SpoolPosition {
                confirmed: Lsn(confirmed),
                resume: Lsn(0x1000),
                has_data: true,
                acknowledged: Lsn(0x1000),
            };
            let d = check_source(Some(&id()), spool, &id(), present(0x5000), false);
            assert_eq!(d, Ok(SourceDecision::Proceed));
        }
        // Something durable not acknowledged yet: nobody but an operator moves the slot.
        let spool = SpoolPosition {
            acknowledged: Lsn(0xfff),
            ..pos(0x1000)
        };
        let e = check_source(Some(&id()), spool, &id(), present(0x5000), false).unwrap_err();
        assert!(matches!(e, RefusedSpool::SlotAhead { .. }), "{e}");
        // A missing slot is a gap however much was acknowledged.
        let spool = SpoolPosition {
            acknowledged: Lsn(0x1000),
            ..pos(0x1000)
        };
        let e = check_source(Some(&id()), spool, &id(), SlotFinding::Missing, false).unwrap_err();
        assert!(matches!(e, RefusedSpool::SlotMissing { .. }), "{e}");
    }

    #[test]
    fn a_spool_of_an_older_version_is_adopted_only_when_the_slot_lines_up() {
        let d = check_source(None, pos(0x1000), &id(), present(0x900), false);
        assert_eq!(d, Ok(SourceDecision::Adopt));
        assert!(d.unwrap().needs_bind());
        let e = check_source(None, pos(0x1000), &id(), present(0x2000), false).unwrap_err();
        assert!(matches!(e, RefusedSpool::SlotAhead { recorded: None, .. }));
        assert!(e.to_string().contains("unrecorded source"));
        let e = check_source(None, pos(0x1000), &id(), SlotFinding::Missing, false).unwrap_err();
        assert!(matches!(
            e,
            RefusedSpool::SlotMissing { recorded: None, .. }
        ));
        let d = check_source(None, pos(0x1000), &id(), SlotFinding::Missing, true);
        assert!(matches!(d, Ok(SourceDecision::AcceptGap(_))));
    }
}

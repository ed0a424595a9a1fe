//! TEMPORARY (replaced by the spool's real ledger API at merge): the loader journal.

use super::error::{Result, SpoolError};
use super::Spool;
use crate::core::Lsn;

const KEY: &[u8] = b"loader_journal";

impl Spool {
    pub fn loader_journal(&self) -> Option<Vec<u8>> {
        self.inner
            .ledger
            .db()
            .get(KEY)
            .ok()
            .flatten()
            .map(|v| v.to_vec())
    }

    pub fn set_loader_journal(&self, journal: Option<&[u8]>) -> Result<()> {
        let db = self.inner.ledger.db();
        match journal {
            Some(j) => db.insert(KEY, j).map(|_| ()),
            None => db.remove(KEY).map(|_| ()),
        }
        .map_err(|e| SpoolError::sled("writing the loader journal", e))?;
        db.flush()
            .map_err(|e| SpoolError::sled("flushing the loader journal", e))?;
        Ok(())
    }

    pub fn mark_loaded_with_journal(
        &self,
        up_to_seq: u64,
        confirmed_lsn: Lsn,
        journal: Option<&[u8]>,
    ) -> Result<()> {
        self.mark_loaded(up_to_seq, confirmed_lsn)?;
        self.set_loader_journal(journal)
    }
}

//! Optional persistence: the catalog (tables, rows, labels, id counters) is saved as one JSON
//! file in the data directory (write to a temp file, then rename) whenever it changed, and
//! loaded at start. Meant for demos, not for durability guarantees.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::error::DoubleError;
use crate::state::{Catalog, Shared};

const FILE: &str = "starrocks-double-state.json";

fn file(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Loads the catalog from `dir` (an empty catalog if there is no file yet).
pub fn load(dir: &Path) -> Result<Catalog, DoubleError> {
    let path = file(dir);
    std::fs::create_dir_all(dir).map_err(|e| DoubleError::Persist {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DoubleError::Persist {
            path,
            message: format!("cannot parse: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog::default()),
        Err(e) => Err(DoubleError::Persist {
            path,
            message: e.to_string(),
        }),
    }
}

/// Saves the catalog now.
pub fn save(shared: &Shared, dir: &Path) -> Result<(), DoubleError> {
    let path = file(dir);
    shared.dirty.store(false, Ordering::Release);
    let bytes = {
        let st = shared.lock();
        serde_json::to_vec(&st.catalog)
    }
    .map_err(|e| DoubleError::Persist {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, &bytes)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| DoubleError::Persist {
            path,
            message: e.to_string(),
        })
}

/// Saves every 100 ms when dirty, and once more at shutdown.
pub async fn run(shared: Arc<Shared>, dir: PathBuf) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.changed() => {}
        }
        let stopping = *shutdown.borrow();
        if shared.dirty.load(Ordering::Acquire) || stopping {
            if let Err(e) = save(&shared, &dir) {
                tracing::error!(error = %e, "persisting state failed");
            }
        }
        if stopping {
            break;
        }
    }
}

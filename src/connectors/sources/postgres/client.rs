//! Ordinary (non-replication) connections through tokio-postgres, with the same TLS
//! settings as the replication connection.

use tokio_postgres::Client;
use tracing::warn;

use super::conninfo::PgConnInfo;
use super::error::SourceError;
use super::tls;

/// Opens a client; the connection task is spawned and logs how it ends.
pub async fn connect(info: &PgConnInfo) -> Result<Client, SourceError> {
    let cfg = info.tokio_config();
    let failed = |source| SourceError::ClientConnect {
        target: info.describe(),
        source,
    };
    match tls::make_connector(info)? {
        Some(tls) => {
            let (client, conn) = cfg.connect(tls).await.map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    warn!(error = %e, "PostgreSQL connection ended with an error");
                }
            });
            Ok(client)
        }
        None => {
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    warn!(error = %e, "PostgreSQL connection ended with an error");
                }
            });
            Ok(client)
        }
    }
}

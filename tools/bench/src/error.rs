//! The harness's one error type: what failed, with the cause, said once per layer.

/// A failed step of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {}", pg_message(source))]
    Postgres {
        what: String,
        source: tokio_postgres::Error,
    },
    #[error("scratch PostgreSQL: {0}")]
    Cluster(#[from] pg_scratch::Error),
    #[error("StarRocks double: {0}")]
    Double(#[from] starrocks_double::DoubleError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, BenchError>;

/// tokio-postgres displays a server error as just "db error": say what the server said.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Adds what was being done to an I/O or PostgreSQL error.
pub trait Context<T> {
    fn ctx(self, what: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| BenchError::Io {
            what: what.into(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, tokio_postgres::Error> {
    fn ctx(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| BenchError::Postgres {
            what: what.into(),
            source,
        })
    }
}

//! The FE's MySQL protocol port (opensrv-mysql): native-password authentication against the
//! configured user, and the SQL subset of `sql.rs` over the text protocol and prepared
//! statements. Every unsupported statement is a MySQL error packet.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use opensrv_mysql::{
    AsyncMysqlIntermediary, AsyncMysqlShim, Column, ColumnFlags, ColumnType as MyType, ErrorKind,
    InitWriter, OkResponse, ParamParser, QueryResultWriter, StatementMetaWriter, ValueInner,
};
use sha1::{Digest, Sha1};
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;

use crate::faults::Node;
use crate::sql::{self, Session, SqlOutput};
use crate::state::Shared;

static CONN_IDS: AtomicU32 = AtomicU32::new(1);

struct Backend {
    shared: Arc<Shared>,
    session: Session,
    statements: HashMap<u32, String>,
    next_stmt: u32,
}

/// `mysql_native_password` check: client sends SHA1(pw) XOR SHA1(salt + SHA1(SHA1(pw))).
pub fn native_password_ok(password: &str, salt: &[u8], auth: &[u8]) -> bool {
    if password.is_empty() {
        return auth.is_empty();
    }
    let h1 = Sha1::digest(password.as_bytes());
    let h2 = Sha1::digest(h1);
    let mut hasher = Sha1::new();
    hasher.update(salt);
    hasher.update(h2);
    let h3 = hasher.finalize();
    let expected: Vec<u8> = h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect();
    expected == auth
}

fn placeholders(sql: &str) -> u16 {
    let mut n = 0;
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' || c == '`' => quote = Some(c),
            None if c == '?' => n += 1,
            None => {}
        }
    }
    n
}

fn literal(v: ValueInner<'_>) -> String {
    match v {
        ValueInner::NULL => "NULL".into(),
        ValueInner::Int(i) => i.to_string(),
        ValueInner::UInt(u) => u.to_string(),
        ValueInner::Double(d) => d.to_string(),
        ValueInner::Bytes(b) => format!(
            "'{}'",
            String::from_utf8_lossy(b)
                .replace('\\', "\\\\")
                .replace('\'', "''")
        ),
        other => format!("'{other:?}'"),
    }
}

fn substitute(sql: &str, params: Vec<String>) -> String {
    let mut out = String::new();
    let mut it = params.into_iter();
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                out.push(c);
            }
            Some(_) => out.push(c),
            None if c == '\'' || c == '"' || c == '`' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => out.push_str(&it.next().unwrap_or_else(|| "NULL".into())),
            None => out.push(c),
        }
    }
    out
}

async fn write_output<W: AsyncWrite + Send + Unpin>(
    out: Result<SqlOutput, sql::SqlError>,
    results: QueryResultWriter<'_, W>,
    binary: bool,
) -> io::Result<()> {
    match out {
        Err(e) => {
            results
                .error(ErrorKind::from(e.code), e.message.as_bytes())
                .await
        }
        Ok(SqlOutput::Ok { affected }) => {
            results
                .completed(OkResponse {
                    affected_rows: affected,
                    ..Default::default()
                })
                .await
        }
        Ok(SqlOutput::Rows { columns, rows }) => {
            let cols: Vec<Column> = columns
                .iter()
                .map(|(n, t)| Column {
                    table: String::new(),
                    column: n.clone(),
                    coltype: if binary {
                        MyType::MYSQL_TYPE_VAR_STRING
                    } else {
                        t.mysql_type()
                    },
                    colflags: ColumnFlags::empty(),
                })
                .collect();
            let mut w = results.start(&cols).await?;
            for r in rows {
                for c in r {
                    w.write_col(c)?;
                }
                w.end_row().await?;
            }
            w.finish().await
        }
    }
}

#[async_trait::async_trait]
impl<W: AsyncWrite + Send + Unpin> AsyncMysqlShim<W> for Backend {
    type Error = io::Error;

    fn version(&self) -> String {
        "8.0.33".to_string()
    }

    fn connect_id(&self) -> u32 {
        self.session.connection_id
    }

    async fn authenticate(&self, _plugin: &str, username: &[u8], salt: &[u8], auth: &[u8]) -> bool {
        let user = String::from_utf8_lossy(username);
        let user = user.split('@').next().unwrap_or("");
        let salt = salt.strip_suffix(&[0]).unwrap_or(salt);
        user == self.shared.config.user
            && native_password_ok(&self.shared.config.password, salt, auth)
    }

    async fn on_prepare<'a>(
        &'a mut self,
        query: &'a str,
        info: StatementMetaWriter<'a, W>,
    ) -> io::Result<()> {
        self.next_stmt += 1;
        let id = self.next_stmt;
        self.statements.insert(id, query.to_string());
        let params: Vec<Column> = (0..placeholders(query))
            .map(|_| Column {
                table: String::new(),
                column: "?".into(),
                coltype: MyType::MYSQL_TYPE_VAR_STRING,
                colflags: ColumnFlags::empty(),
            })
            .collect();
        info.reply(id, &params, &[]).await
    }

    async fn on_execute<'a>(
        &'a mut self,
        id: u32,
        params: ParamParser<'a>,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        let Some(q) = self.statements.get(&id).cloned() else {
            return results
                .error(
                    ErrorKind::ER_UNKNOWN_STMT_HANDLER,
                    b"Unknown prepared statement handler",
                )
                .await;
        };
        let values: Vec<String> = params
            .into_iter()
            .map(|p| literal(p.value.into_inner()))
            .collect();
        let sql = substitute(&q, values);
        self.shared
            .mysql_statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = sql::execute(&self.shared, &mut self.session, &sql);
        write_output(out, results, true).await
    }

    async fn on_close<'a>(&'a mut self, stmt: u32)
    where
        W: 'async_trait,
    {
        self.statements.remove(&stmt);
    }

    async fn on_query<'a>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        tracing::debug!(query, "mysql query");
        self.shared
            .mysql_statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = sql::execute(&self.shared, &mut self.session, query);
        write_output(out, results, false).await
    }

    async fn on_init<'a>(&'a mut self, db: &'a str, writer: InitWriter<'a, W>) -> io::Result<()> {
        if self.shared.lock().catalog.dbs.contains_key(db) {
            self.session.db = Some(db.to_string());
            writer.ok().await
        } else {
            writer
                .error(
                    ErrorKind::ER_BAD_DB_ERROR,
                    format!("Unknown database '{db}'").as_bytes(),
                )
                .await
        }
    }
}

/// Serves the MySQL port until shutdown (closing and rebinding the port for `Down`).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut listener = Some(listener);
    let mut faults_rx = shared.faults.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let (epoch_tx, _) = tokio::sync::watch::channel(0u64);
    loop {
        if *shutdown.borrow() {
            break;
        }
        if shared.faults.down_until(Node::Mysql).is_some() {
            drop(listener.take());
            epoch_tx.send_modify(|e| *e += 1);
            while shared.faults.down_until(Node::Mysql).is_some() && !*shutdown.borrow() {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
                    _ = faults_rx.changed() => {}
                    _ = shutdown.changed() => {}
                }
            }
            if *shutdown.borrow() {
                break;
            }
            listener = loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break Some(l),
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
            };
            continue;
        }
        let Some(l) = listener.as_ref() else { break };
        tokio::select! {
            r = l.accept() => {
                let Ok((stream, _)) = r else { continue };
                if shared.faults.take_down_count(Node::Mysql) {
                    drop(stream);
                    continue;
                }
                let backend = Backend {
                    shared: shared.clone(),
                    session: Session { db: None, connection_id: CONN_IDS.fetch_add(1, Ordering::Relaxed) },
                    statements: HashMap::new(),
                    next_stmt: 0,
                };
                let mut epoch_rx = epoch_tx.subscribe();
                let mut sd = shared.shutdown.subscribe();
                tokio::spawn(async move {
                    let (r, w) = stream.into_split();
                    tokio::select! {
                        res = AsyncMysqlIntermediary::run_on(backend, r, w) => {
                            if let Err(e) = res {
                                tracing::debug!(error = %e, "mysql connection ended");
                            }
                        }
                        _ = epoch_rx.changed() => {}
                        _ = sd.changed() => {}
                    }
                });
            }
            _ = faults_rx.changed() => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_password() {
        let salt = b"12345678901234567890";
        let h1 = Sha1::digest(b"secret");
        let h2 = Sha1::digest(h1);
        let mut h = Sha1::new();
        h.update(salt);
        h.update(h2);
        let h3 = h.finalize();
        let auth: Vec<u8> = h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect();
        assert!(native_password_ok("secret", salt, &auth));
        assert!(!native_password_ok("other", salt, &auth));
        assert!(native_password_ok("", salt, b""));
        assert!(!native_password_ok("", salt, &auth));
    }

    #[test]
    fn prepared_substitution() {
        assert_eq!(placeholders("SELECT * FROM t WHERE a = ? AND b = '?'"), 1);
        assert_eq!(
            substitute("SELECT ? , '?'", vec!["'x''y'".into()]),
            "SELECT 'x''y' , '?'"
        );
    }
}

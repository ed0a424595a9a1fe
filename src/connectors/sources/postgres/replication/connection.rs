//! A PostgreSQL connection in replication mode, built on `postgres-protocol`
//! (upstream tokio-postgres has no replication mode).
//!
//! Startup with `replication=database`, authentication (trust, cleartext, md5,
//! SCRAM-SHA-256), TLS per `sslmode`, the simple query protocol for replication commands,
//! and the CopyBoth stream of START_REPLICATION. Reads are cancel-safe (bytes are only
//! appended to the read buffer), so `next_message` can sit in a `tokio::select!`.

use std::collections::HashMap;
use std::pin::Pin;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::protocol::{self, ReplicationMessage};
use crate::connectors::sources::postgres::conninfo::{Host, PgConnInfo, SslMode};
use crate::connectors::sources::postgres::error::{ServerError, SourceError};
use crate::connectors::sources::postgres::tls;
use crate::core::Lsn;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Result of IDENTIFY_SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's `system_identifier` (the same as `pg_control_system()`'s; a
    /// physical standby shares its primary's).
    pub system_id: u64,
    /// The server's current timeline (it grows at each promotion).
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database connected to (`None` for a physical replication connection).
    pub dbname: Option<String>,
}

impl SystemInfo {
    /// Parses IDENTIFY_SYSTEM's reply: one row of `systemid`, `timeline`, `xlogpos`,
    /// `dbname`. Every field is checked: the identity decides whether a spool may be
    /// used (invariant 12), so a field that does not parse is an error, not a default.
    pub fn parse(rows: &[Vec<Option<String>>]) -> Result<SystemInfo, SourceError> {
        let bad = |what: &str, v: Option<&str>| {
            SourceError::Protocol(format!("IDENTIFY_SYSTEM returned a bad {what}: {v:?}"))
        };
        let [row] = rows else {
            return Err(SourceError::Protocol(format!(
                "IDENTIFY_SYSTEM returned {} rows, expected 1",
                rows.len()
            )));
        };
        let col = |i: usize| row.get(i).and_then(|c| c.as_deref());
        let field = |i: usize, what: &str| col(i).ok_or_else(|| bad(what, None));
        let system_id = field(0, "systemid")?;
        let timeline = field(1, "timeline")?;
        let xlogpos = field(2, "xlogpos")?;
        Ok(SystemInfo {
            system_id: system_id
                .parse()
                .map_err(|_| bad("systemid", Some(system_id)))?,
            timeline: timeline
                .parse()
                .map_err(|_| bad("timeline", Some(timeline)))?,
            xlogpos: xlogpos.parse().map_err(|_| bad("xlogpos", Some(xlogpos)))?,
            dbname: col(3).map(str::to_string),
        })
    }
}

/// Rows of a simple query, as text.
pub type TextRows = Vec<Vec<Option<String>>>;

/// An open replication-mode connection.
pub struct ReplicationConnection {
    stream: Pin<Box<dyn Stream>>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    params: HashMap<String, String>,
    target: String,
    in_copy: bool,
    /// How the server ended the replication stream, once it did.
    stream_end: Option<&'static str>,
}

impl ReplicationConnection {
    /// Connects to the first reachable host of `info`, as libpq would.
    pub async fn connect(info: &PgConnInfo) -> Result<Self, SourceError> {
        let mut last_err = None;
        for (host, port) in info.targets() {
            match Self::connect_one(info, &host, port).await {
                Ok(c) => return Ok(c),
                Err(e) if e.is_transient() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| SourceError::Protocol("no host to connect to".into())))
    }

    async fn connect_one(info: &PgConnInfo, host: &Host, port: u16) -> Result<Self, SourceError> {
        let target = match host {
            Host::Tcp(h) => format!("{h}:{port}"),
            Host::Unix(p) => format!("{}/.s.PGSQL.{port}", p.display()),
        };
        let connect_err = |source| SourceError::Connect {
            target: target.clone(),
            source,
        };
        let timeout = info.connect_timeout;
        let stream: Pin<Box<dyn Stream>> = match host {
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                let s = tokio::time::timeout(timeout, UnixStream::connect(&path))
                    .await
                    .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
                    .map_err(connect_err)?;
                // libpq never uses TLS over Unix sockets.
                Box::pin(s)
            }
            Host::Tcp(h) => {
                let mut s = tokio::time::timeout(timeout, TcpStream::connect((h.as_str(), port)))
                    .await
                    .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
                    .map_err(connect_err)?;
                s.set_nodelay(true).map_err(connect_err)?;
                match tls::client_config(info)? {
                    None => Box::pin(s),
                    Some(cfg) => {
                        let mut req = BytesMut::new();
                        frontend::ssl_request(&mut req);
                        s.write_all(&req).await.map_err(connect_err)?;
                        let answer = s.read_u8().await.map_err(connect_err)?;
                        match answer {
                            b'S' => {
                                let name = tls::server_name(h)?;
                                let tls = tokio_rustls::TlsConnector::from(cfg)
                                    .connect(name, s)
                                    .await
                                    .map_err(|source| SourceError::TlsHandshake {
                                        target: target.clone(),
                                        source,
                                    })?;
                                Box::pin(tls)
                            }
                            b'N' if info.sslmode == SslMode::Prefer => Box::pin(s),
                            b'N' => return Err(SourceError::TlsRefused(target)),
                            other => {
                                return Err(SourceError::Protocol(format!(
                                    "unexpected answer {other:#x} to SSLRequest"
                                )))
                            }
                        }
                    }
                }
            }
        };
        let mut conn = ReplicationConnection {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::new(),
            params: HashMap::new(),
            target,
            in_copy: false,
            stream_end: None,
        };
        conn.startup(info).await?;
        Ok(conn)
    }

    async fn startup(&mut self, info: &PgConnInfo) -> Result<(), SourceError> {
        let params = [
            ("user", info.user.as_str()),
            ("database", info.dbname.as_str()),
            ("replication", "database"),
            ("application_name", info.application_name.as_str()),
            ("client_encoding", "UTF8"),
            // pgoutput writes values with the walsender's settings: fix the text forms the
            // loader parses (ISO dates, UTC timestamptz, exact floats, ISO-ish intervals).
            ("DateStyle", "ISO, YMD"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "postgres"),
            ("extra_float_digits", "3"),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.write_buf)?;
        self.flush().await?;
        let password = || {
            info.password
                .as_ref()
                .map(|p| p.expose_secret().as_bytes().to_vec())
                .ok_or_else(|| {
                    SourceError::Auth(
                        "the server asks for a password but none was given; put it in the connection string or set SOURCE_PASSWORD".into(),
                    )
                })
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.read_message().await? {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(&password()?, &mut self.write_buf)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        info.user.as_bytes(),
                        &password()?,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechs = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = mechs.next()? {
                        has_scram |= m == SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(SourceError::Auth(
                            "the server offers no SASL mechanism we support (SCRAM-SHA-256)".into(),
                        ));
                    }
                    let s = ScramSha256::new(&password()?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.write_buf)?;
                    self.flush().await?;
                    scram = Some(s);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| SourceError::Protocol("SASL continue without start".into()))?;
                    s.update(body.data())
                        .map_err(|e| SourceError::Auth(format!("SCRAM: {e}")))?;
                    frontend::sasl_response(s.message(), &mut self.write_buf)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| SourceError::Protocol("SASL final without start".into()))?;
                    s.finish(body.data())
                        .map_err(|e| SourceError::Auth(format!("SCRAM server signature: {e}")))?;
                }
                backend::Message::AuthenticationGss
                | backend::Message::AuthenticationKerberosV5
                | backend::Message::AuthenticationSspi
                | backend::Message::AuthenticationScmCredential
                | backend::Message::AuthenticationGssContinue(_) => {
                    return Err(SourceError::Auth(
                        "the server asks for GSS/SSPI/Kerberos authentication, which dbmazz does not support; use scram-sha-256, md5 or password in pg_hba.conf".into(),
                    ))
                }
                backend::Message::ParameterStatus(p) => {
                    self.params.insert(p.name()?.to_string(), p.value()?.to_string());
                }
                backend::Message::BackendKeyData(_) | backend::Message::NoticeResponse(_) => {}
                backend::Message::ReadyForQuery(_) => return Ok(()),
                backend::Message::ErrorResponse(body) => {
                    let err = server_error(&body)?;
                    // 28xxx = invalid authorization: permanent, say so plainly.
                    return Err(if err.code.starts_with("28") {
                        SourceError::Auth(format!(
                            "{err}; check the user and password (SOURCE_URL, SOURCE_PASSWORD) and the server's pg_hba.conf"
                        ))
                    } else {
                        SourceError::Server(err)
                    });
                }
                other => {
                    return Err(SourceError::Protocol(format!(
                        "unexpected message during startup: {}",
                        message_name(&other)
                    )))
                }
            }
        }
    }

    /// A server parameter reported at startup (e.g. `server_version`).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// How the server ended the replication stream (`CopyDone`, `CommandComplete`, ...),
    /// after [`Self::next_message`] returned `None`.
    pub fn stream_end(&self) -> Option<&'static str> {
        self.stream_end
    }

    /// Where this connection goes (host:port or socket path), for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Major server version (e.g. 15), from the `server_version` parameter.
    pub fn server_major_version(&self) -> Option<u32> {
        self.parameter("server_version")
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse().ok())
    }

    /// Runs one statement with the simple query protocol and returns its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<TextRows, SourceError> {
        frontend::query(sql, &mut self.write_buf)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read_message().await? {
                backend::Message::DataRow(row) => {
                    let buf = row.buffer();
                    let mut ranges = row.ranges();
                    let mut cols = Vec::new();
                    while let Some(r) = ranges.next()? {
                        cols.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(cols);
                }
                backend::Message::ErrorResponse(body) => error = Some(server_error(&body)?),
                backend::Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(SourceError::Server(e)),
                        None => Ok(rows),
                    }
                }
                _ => {}
            }
        }
    }

    /// IDENTIFY_SYSTEM: the cluster's system identifier, timeline, WAL position and
    /// database.
    pub async fn identify_system(&mut self) -> Result<SystemInfo, SourceError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        SystemInfo::parse(&rows)
    }

    /// START_REPLICATION SLOT ... LOGICAL; on success the connection is in CopyBoth mode.
    pub async fn start_replication(
        &mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, String)],
    ) -> Result<(), SourceError> {
        let opts = options
            .iter()
            .map(|(k, v)| format!("\"{k}\" '{}'", v.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} ({opts})",
            crate::config::quote_ident(slot)
        );
        frontend::query(&sql, &mut self.write_buf)?;
        self.flush().await?;
        loop {
            let msg = match self.read_incoming().await? {
                Incoming::CopyBothResponse => {
                    self.in_copy = true;
                    return Ok(());
                }
                Incoming::Message(m) => m,
            };
            match msg {
                backend::Message::ErrorResponse(body) => {
                    let err = server_error(&body)?;
                    // Drain to ReadyForQuery so the connection stays usable.
                    while !matches!(
                        self.read_message().await?,
                        backend::Message::ReadyForQuery(_)
                    ) {}
                    return Err(SourceError::Server(err));
                }
                backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_) => {}
                other => {
                    return Err(SourceError::Protocol(format!(
                        "unexpected reply to START_REPLICATION: {}",
                        message_name(&other)
                    )))
                }
            }
        }
    }

    /// The next replication message; `None` when the server ended the stream on its own
    /// ([`Self::stream_end`] says how). Cancel-safe.
    ///
    /// A walsender that stops cleanly (fast shutdown, restart, switchover) ends the COPY
    /// with CopyDone, or with CommandComplete/ReadyForQuery and no CopyDone at all (what
    /// `WalSndDone` sends once the client has flushed everything): all of them mean "the
    /// stream is over", not a protocol violation.
    pub async fn next_message(&mut self) -> Result<Option<ReplicationMessage>, SourceError> {
        loop {
            match self.read_message().await? {
                backend::Message::CopyData(body) => {
                    let msg = protocol::parse(body.into_bytes())
                        .map_err(|e| SourceError::Protocol(e.to_string()))?;
                    return Ok(Some(msg));
                }
                end @ (backend::Message::CopyDone
                | backend::Message::CommandComplete(_)
                | backend::Message::ReadyForQuery(_)) => {
                    self.in_copy = false;
                    self.stream_end = Some(message_name(&end));
                    return Ok(None);
                }
                backend::Message::ErrorResponse(body) => {
                    return Err(SourceError::Server(server_error(&body)?))
                }
                backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_) => {}
                other => {
                    return Err(SourceError::Protocol(format!(
                        "unexpected message in replication stream: {}",
                        message_name(&other)
                    )))
                }
            }
        }
    }

    /// Sends a standby status update.
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        reply_requested: bool,
    ) -> Result<(), SourceError> {
        let msg = protocol::standby_status_update(
            write,
            flush,
            flush,
            protocol::pg_now(),
            reply_requested,
        );
        frontend::CopyData::new(msg)?.write(&mut self.write_buf);
        self.flush().await
    }

    /// Ends the replication stream cleanly (CopyDone) and waits for the server to finish;
    /// a last status update should be sent first by the caller.
    pub async fn stop_replication(&mut self) -> Result<(), SourceError> {
        if !self.in_copy {
            return Ok(());
        }
        frontend::copy_done(&mut self.write_buf);
        self.flush().await?;
        // The server may still send CopyData before its CopyDone; discard it.
        loop {
            match self.read_message().await? {
                backend::Message::ReadyForQuery(_) => {
                    self.in_copy = false;
                    return Ok(());
                }
                backend::Message::ErrorResponse(body) => {
                    return Err(SourceError::Server(server_error(&body)?))
                }
                _ => {}
            }
        }
    }

    /// Sends Terminate and closes the socket.
    pub async fn close(mut self) {
        frontend::terminate(&mut self.write_buf);
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }

    async fn flush(&mut self) -> Result<(), SourceError> {
        let buf = self.write_buf.split().freeze();
        self.stream.write_all(&buf).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads one backend message, CopyBothResponse excepted. Cancel-safe.
    async fn read_message(&mut self) -> Result<backend::Message, SourceError> {
        match self.read_incoming().await? {
            Incoming::Message(m) => Ok(m),
            Incoming::CopyBothResponse => {
                Err(SourceError::Protocol("unexpected CopyBothResponse".into()))
            }
        }
    }

    /// Reads one backend message. Cancel-safe: partial data stays in `read_buf`.
    /// postgres-protocol does not know CopyBothResponse (`W`), so it is framed here.
    async fn read_incoming(&mut self) -> Result<Incoming, SourceError> {
        loop {
            if self.read_buf.len() >= 5 && self.read_buf[0] == b'W' {
                let len = u32::from_be_bytes([
                    self.read_buf[1],
                    self.read_buf[2],
                    self.read_buf[3],
                    self.read_buf[4],
                ]) as usize;
                if self.read_buf.len() > len {
                    let _ = self.read_buf.split_to(len + 1);
                    return Ok(Incoming::CopyBothResponse);
                }
            } else if let Some(msg) = backend::Message::parse(&mut self.read_buf)? {
                return Ok(Incoming::Message(msg));
            }
            if self.read_buf.capacity() - self.read_buf.len() < 8192 {
                self.read_buf.reserve(64 * 1024);
            }
            let n = self.stream.read_buf(&mut self.read_buf).await?;
            if n == 0 {
                return Err(SourceError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )));
            }
        }
    }
}

/// Extracts the fields of an ErrorResponse.
pub fn server_error(body: &backend::ErrorResponseBody) -> Result<ServerError, SourceError> {
    let mut e = ServerError::default();
    let mut fields = body.fields();
    while let Some(f) = fields.next()? {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'S' | b'V' => e.severity = v,
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            _ => {}
        }
    }
    Ok(e)
}

fn message_name(m: &backend::Message) -> &'static str {
    match m {
        backend::Message::CommandComplete(_) => "CommandComplete",
        backend::Message::CopyDone => "CopyDone",
        backend::Message::CopyInResponse(_) => "CopyInResponse",
        backend::Message::CopyOutResponse(_) => "CopyOutResponse",
        backend::Message::DataRow(_) => "DataRow",
        backend::Message::RowDescription(_) => "RowDescription",
        backend::Message::ReadyForQuery(_) => "ReadyForQuery",
        backend::Message::EmptyQueryResponse => "EmptyQueryResponse",
        _ => "other",
    }
}

enum Incoming {
    Message(backend::Message),
    CopyBothResponse,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[Option<&str>]) -> Vec<Vec<Option<String>>> {
        vec![cols.iter().map(|c| c.map(str::to_string)).collect()]
    }

    #[test]
    fn identify_system_reply_is_parsed_field_by_field() {
        let info = SystemInfo::parse(&row(&[
            Some("7291000000000000001"),
            Some("3"),
            Some("0/16B6F48"),
            Some("app"),
        ]))
        .unwrap();
        assert_eq!(
            info,
            SystemInfo {
                system_id: 7_291_000_000_000_000_001,
                timeline: 3,
                xlogpos: "0/16B6F48".parse().unwrap(),
                dbname: Some("app".into()),
            }
        );
        // A physical replication connection has no database.
        let info = SystemInfo::parse(&row(&[Some("1"), Some("1"), Some("0/0"), None])).unwrap();
        assert_eq!(info.dbname, None);
    }

    #[test]
    fn a_bad_identify_system_reply_is_an_error_not_a_default() {
        for (cols, what) in [
            (
                vec![Some("x"), Some("1"), Some("0/1"), Some("d")],
                "systemid",
            ),
            (vec![Some("1"), None, Some("0/1"), Some("d")], "timeline"),
            (
                vec![Some("1"), Some("-1"), Some("0/1"), Some("d")],
                "timeline",
            ),
            (
                vec![Some("1"), Some("1"), Some("nope"), Some("d")],
                "xlogpos",
            ),
            (vec![Some("1"), Some("1")], "xlogpos"),
        ] {
            let e = SystemInfo::parse(&row(&cols)).unwrap_err().to_string();
            assert!(e.contains(what), "{cols:?}: {e}");
        }
        assert!(SystemInfo::parse(&[]).is_err());
        let two = [row(&[Some("1")]), row(&[Some("2")])].concat();
        assert!(SystemInfo::parse(&two)
            .unwrap_err()
            .to_string()
            .contains("2 rows"));
    }
}

//! PostgreSQL connection parameters parsed from a libpq-style string (URL or key=value).
//!
//! tokio-postgres parses most of it; the TLS modes it lacks (`verify-ca`, `verify-full`)
//! and `sslrootcert` are taken out first and handled here, with libpq's rules
//! (`sslrootcert=system` means the system's CAs and requires `verify-full`). The password
//! stays a [`SecretString`]; neither `Debug` nor any error shows it or the string.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

/// libpq-like TLS modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, without certificate checks (libpq's default).
    Prefer,
    /// TLS required, certificate not checked.
    Require,
    /// TLS required, certificate chain checked, host name not checked.
    VerifyCa,
    /// TLS required, certificate chain and host name checked.
    VerifyFull,
}

impl SslMode {
    /// The libpq name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "disable" => Some(Self::Disable),
            "allow" | "prefer" => Some(Self::Prefer),
            "require" => Some(Self::Require),
            "verify-ca" => Some(Self::VerifyCa),
            "verify-full" => Some(Self::VerifyFull),
            _ => None,
        }
    }
}

/// Where the CA certificates that verify the server come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file.
    File(PathBuf),
    /// `sslrootcert=system`: the system's trusted CAs (libpq 16+).
    System,
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    /// A directory holding the server's Unix socket (`.s.PGSQL.<port>`).
    Unix(PathBuf),
}

/// How a connection string is written, for error messages.
const FORMS: &str = "write it as postgres://user:password@host:port/dbname?sslmode=... or as key=value pairs (host=... port=... user=... dbname=...)";

/// Errors in the connection string. Never contains the string itself (it may hold a
/// password).
#[derive(Debug, thiserror::Error)]
pub enum ConnInfoError {
    /// The reason (an option name, never a value).
    #[error("invalid connection string: {0}; {FORMS}")]
    Invalid(String),
    #[error(
        "invalid sslmode {0:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
    )]
    SslMode(String),
    #[error("sslmode={0} may not be used with sslrootcert=system, which trusts every public CA: that is only safe when the host name is checked too; use sslmode=verify-full (or sslrootcert=FILE with your own CA)")]
    WeakWithSystemRoots(&'static str),
    #[error("no user given: add user=... (or postgres://user@host/dbname)")]
    NoUser,
}

/// Parsed connection parameters.
#[derive(Clone)]
pub struct PgConnInfo {
    pub hosts: Vec<Host>,
    pub ports: Vec<u16>,
    pub user: String,
    pub password: Option<SecretString>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<RootCert>,
    pub application_name: String,
    pub connect_timeout: std::time::Duration,
}

impl fmt::Debug for PgConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnInfo")
            .field("hosts", &self.hosts)
            .field("ports", &self.ports)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl PgConnInfo {
    /// Parses a libpq connection string or URL.
    pub fn parse(conn: &SecretString) -> Result<Self, ConnInfoError> {
        let (rest, sslmode, sslrootcert) = take_ssl_params(conn.expose_secret())?;
        let sslmode = match (sslmode, &sslrootcert) {
            // libpq 16+: sslrootcert=system defaults to verify-full and refuses weaker modes.
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (Some(m), Some(RootCert::System)) if m != SslMode::VerifyFull => {
                return Err(ConnInfoError::WeakWithSystemRoots(m.name()))
            }
            (m, _) => m.unwrap_or(SslMode::Prefer),
        };
        let cfg = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| ConnInfoError::Invalid(parse_reason(&e)))?;
        let mut hosts: Vec<Host> = cfg
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(s) => Host::Tcp(s.clone()),
                tokio_postgres::config::Host::Unix(p) => Host::Unix(p.clone()),
            })
            .collect();
        if hosts.is_empty() {
            hosts.push(Host::Tcp("localhost".into()));
        }
        let mut ports = cfg.get_ports().to_vec();
        if ports.is_empty() {
            ports.push(5432);
        }
        let user = cfg.get_user().ok_or(ConnInfoError::NoUser)?.to_string();
        let password = cfg
            .get_password()
            .map(|p| SecretString::from(String::from_utf8_lossy(p).into_owned()));
        let dbname = cfg.get_dbname().unwrap_or(&user).to_string();
        Ok(PgConnInfo {
            hosts,
            ports,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert,
            application_name: cfg.get_application_name().unwrap_or("dbmazz").to_string(),
            connect_timeout: cfg
                .get_connect_timeout()
                .copied()
                .unwrap_or(std::time::Duration::from_secs(10)),
        })
    }

    /// (host, port) pairs in the order libpq would try them.
    pub fn targets(&self) -> Vec<(Host, u16)> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = self
                    .ports
                    .get(i)
                    .or_else(|| self.ports.last())
                    .copied()
                    .unwrap_or(5432);
                (h.clone(), port)
            })
            .collect()
    }

    /// A tokio-postgres config for ordinary (non-replication) connections; TLS is
    /// applied by the connector, see `tls`.
    pub fn tokio_config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        for (host, port) in self.targets() {
            match host {
                Host::Tcp(h) => cfg.host(&h),
                Host::Unix(p) => cfg.host_path(p),
            };
            cfg.port(port);
        }
        cfg.user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout);
        if let Some(pw) = &self.password {
            cfg.password(pw.expose_secret());
        }
        cfg.ssl_mode(match self.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        cfg
    }

    /// Host and database for log lines (no user secrets).
    pub fn describe(&self) -> String {
        let (host, port) = self
            .targets()
            .into_iter()
            .next()
            .unwrap_or((Host::Tcp("localhost".into()), 5432));
        match host {
            Host::Tcp(h) => format!("{h}:{port}/{}", self.dbname),
            Host::Unix(p) => format!("{}:{port}/{}", p.display(), self.dbname),
        }
    }
}

/// Why tokio-postgres refused the string. Its own message is only "invalid connection
/// string"; the reason is the error's source (an option name, or a fixed text). The one
/// reason that quotes the input ("... but got `c`") is cut before the quote.
fn parse_reason(e: &tokio_postgres::Error) -> String {
    let reason = std::error::Error::source(e)
        .map(|c| c.to_string())
        .unwrap_or_else(|| "it could not be parsed".to_string());
    match reason.find(": expected `") {
        Some(i) => reason[..i].to_string(),
        None => reason,
    }
}

/// Removes `sslmode` and `sslrootcert` from a URL's query or a key=value string.
fn take_ssl_params(s: &str) -> Result<(String, Option<SslMode>, Option<RootCert>), ConnInfoError> {
    let mut sslmode = None;
    let mut rootcert = None;
    let mut take = |k: &str, v: &str| -> Result<bool, ConnInfoError> {
        match k {
            "sslmode" => {
                sslmode = Some(SslMode::parse(v).ok_or_else(|| ConnInfoError::SslMode(v.into()))?);
                Ok(true)
            }
            "sslrootcert" => {
                rootcert = Some(match v {
                    "system" => RootCert::System,
                    path => RootCert::File(PathBuf::from(path)),
                });
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        match s.split_once('?') {
            None => s.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let v = url::form_urlencoded::parse(v.as_bytes())
                        .next()
                        .map(|(a, b)| format!("{a}{b}"))
                        .unwrap_or_default();
                    if !take(k, &v)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for tok in kv_tokens(s) {
            match tok.split_once('=') {
                Some((k, v)) if take(k.trim(), v.trim().trim_matches('\''))? => {}
                _ => kept.push(tok),
            }
        }
        kept.join(" ")
    };
    Ok((rest, sslmode, rootcert))
}

/// Splits a key=value string on whitespace outside single quotes.
fn kv_tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                cur.push(c);
                escaped = true;
            }
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    // Re-join "key = value" written with spaces around '='.
    let mut joined: Vec<String> = Vec::new();
    for tok in out {
        match joined.last_mut() {
            Some(last) if last.ends_with('=') || tok.starts_with('=') => last.push_str(&tok),
            _ => joined.push(tok),
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> PgConnInfo {
        PgConnInfo::parse(&SecretString::from(s.to_string())).unwrap()
    }

    #[test]
    fn url_with_ssl_params() {
        let c = parse("postgres://u:s3cret@db.example:6543/app?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x");
        assert_eq!(c.hosts, vec![Host::Tcp("db.example".into())]);
        assert_eq!(c.ports, vec![6543]);
        assert_eq!(c.user, "u");
        assert_eq!(c.password.as_ref().unwrap().expose_secret(), "s3cret");
        assert_eq!(c.dbname, "app");
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(
            c.sslrootcert,
            Some(RootCert::File(PathBuf::from("/ca.pem")))
        );
        assert_eq!(c.application_name, "x");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }

    #[test]
    fn key_value_with_unix_socket() {
        let c =
            parse("host=/tmp/sock port=5999 user=postgres dbname=d sslmode=disable password='a b'");
        assert_eq!(c.hosts, vec![Host::Unix("/tmp/sock".into())]);
        assert_eq!(c.targets(), vec![(Host::Unix("/tmp/sock".into()), 5999)]);
        assert_eq!(c.sslmode, SslMode::Disable);
        assert_eq!(c.password.as_ref().unwrap().expose_secret(), "a b");
    }

    #[test]
    fn defaults_and_errors() {
        let c = parse("postgres://u@h/d");
        assert_eq!(c.sslmode, SslMode::Prefer);
        assert_eq!(c.ports, vec![5432]);
        let e = PgConnInfo::parse(&SecretString::from(
            "postgres://u:pw@h/d?sslmode=bogus".to_string(),
        ))
        .unwrap_err();
        assert!(e.to_string().contains("bogus"));
        assert!(!e.to_string().contains("pw"));
        assert!(matches!(
            PgConnInfo::parse(&SecretString::from("host=h dbname=d".to_string())),
            Err(ConnInfoError::NoUser)
        ));
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    fn err(s: &str) -> String {
        PgConnInfo::parse(&SecretString::from(s.to_string()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_bad_string_says_what_is_wrong_once_and_how_to_write_it() {
        assert_eq!(
            err("postgres://u:pw@h:notaport/db"),
            format!("invalid connection string: invalid value for option `port`; {FORMS}")
        );
        assert_eq!(
            err("postgres://u:pw@h/db?foo=bar"),
            format!("invalid connection string: unknown option `foo`; {FORMS}")
        );
        assert_eq!(
            err("nonsense"),
            format!("invalid connection string: unexpected EOF; {FORMS}")
        );
        let e = err("user=u password='s3cret");
        assert_eq!(
            e,
            format!(
                "invalid connection string: unterminated quoted connection parameter value; {FORMS}"
            )
        );
        // The one tokio-postgres reason that quotes the input is cut before the quote.
        let e = err("user=u password s3cret");
        assert_eq!(
            e,
            format!("invalid connection string: unexpected character at byte 16; {FORMS}")
        );
        for s in [
            "postgres://u:pw@h:notaport/db",
            "host=h user=u password=s3cret bogus=1",
        ] {
            let e = err(s);
            assert_eq!(e.matches("invalid connection string").count(), 1, "{e}");
            assert!(!e.contains("s3cret") && !e.contains(":pw@"), "{e}");
        }
    }

    #[test]
    fn sslrootcert_system_means_verify_full_as_in_libpq() {
        let c = PgConnInfo::parse(&SecretString::from(
            "postgres://u@h/d?sslrootcert=system".to_string(),
        ))
        .unwrap();
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(c.sslrootcert, Some(RootCert::System));
        for mode in ["verify-ca", "require", "prefer", "disable"] {
            let e = err(&format!("host=h user=u sslmode={mode} sslrootcert=system"));
            let want = SslMode::parse(mode).unwrap().name();
            assert!(
                e.starts_with(&format!(
                    "sslmode={want} may not be used with sslrootcert=system"
                )),
                "{e}"
            );
            assert!(e.contains("use sslmode=verify-full"), "{e}");
        }
    }
}

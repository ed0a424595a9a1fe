//! TLS for PostgreSQL connections (rustls), with libpq's `sslmode` semantics.
//!
//! `prefer`/`require` encrypt without checking the certificate (as libpq does);
//! `verify-ca` checks the chain; `verify-full` checks the chain and the host name. Roots
//! come from `sslrootcert` when given, else from libpq's default
//! `~/.postgresql/root.crt`, and a verify mode without either is refused (never "trust
//! every public CA"); `sslrootcert=system` (verify-full only) uses the system's CAs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::conninfo::{PgConnInfo, RootCert, SslMode};

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot use the root certificate file {path} (sslrootcert): {reason}; point sslrootcert at a readable PEM file holding the CA that signed the server's certificate")]
    RootCert { path: String, reason: String },
    #[error("sslmode={mode} needs the CA that signed the server's certificate, but sslrootcert is not set and the default {default} does not exist (like libpq, dbmazz does not fall back to trusting every public CA for any host): set sslrootcert=/path/to/ca.pem, or use sslrootcert=system with sslmode=verify-full for a certificate from a public CA, or sslmode=require to encrypt without verifying the server")]
    NoRootCert { mode: &'static str, default: String },
    #[error("sslrootcert=system: no trusted CA certificates found on this system; install the system's CA certificates (e.g. the ca-certificates package) or set sslrootcert=/path/to/ca.pem")]
    NoSystemRoots,
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `info.sslmode`; `None` for `disable`.
pub fn client_config(info: &PgConnInfo) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = match info.sslmode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(roots(info)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            if info.sslmode == SslMode::VerifyFull {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(Some(Arc::new(config)))
}

/// A tokio-postgres connector with the same TLS settings as the replication connection.
pub fn make_connector(
    info: &PgConnInfo,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, TlsError> {
    Ok(client_config(info)?.map(|c| tokio_postgres_rustls::MakeRustlsConnect::new((*c).clone())))
}

/// The server name to present and (for verify-full) check.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsError::Config(format!("host {host:?}: {e}")))
}

/// libpq's default root certificate file under `home`.
fn default_root_cert(home: Option<&Path>) -> Option<PathBuf> {
    home.map(|h| h.join(".postgresql").join("root.crt"))
}

/// Where a verify mode's CAs come from, as libpq decides: `sslrootcert` when given,
/// else `~/.postgresql/root.crt` when it exists, else a refusal.
pub fn root_source(
    mode: SslMode,
    sslrootcert: Option<&RootCert>,
    home: Option<&Path>,
) -> Result<RootCert, TlsError> {
    if let Some(r) = sslrootcert {
        return Ok(r.clone());
    }
    match default_root_cert(home) {
        Some(path) if path.is_file() => Ok(RootCert::File(path)),
        other => Err(TlsError::NoRootCert {
            mode: mode.name(),
            default: match other {
                Some(path) => path.display().to_string(),
                None => "~/.postgresql/root.crt (no home directory is set)".to_string(),
            },
        }),
    }
}

fn roots(info: &PgConnInfo) -> Result<RootCertStore, TlsError> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut store = RootCertStore::empty();
    match root_source(info.sslmode, info.sslrootcert.as_ref(), home.as_deref())? {
        RootCert::File(path) => {
            let err = |reason: String| TlsError::RootCert {
                path: path.display().to_string(),
                reason,
            };
            for cert in CertificateDer::pem_file_iter(&path).map_err(|e| err(e.to_string()))? {
                store
                    .add(cert.map_err(|e| err(e.to_string()))?)
                    .map_err(|e| err(e.to_string()))?;
            }
            if store.is_empty() {
                return Err(err("it holds no PEM certificate".into()));
            }
        }
        RootCert::System => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // Unusable system certificates are skipped, as libpq's OpenSSL does.
                let _ = store.add(cert);
            }
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if store.is_empty() {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    Ok(store)
}

/// `sslmode=require`/`prefer`: encryption without authentication, like libpq.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must verify, the name may differ.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn info(s: &str) -> PgConnInfo {
        PgConnInfo::parse(&SecretString::from(s.to_string())).unwrap()
    }

    #[test]
    fn verify_modes_without_sslrootcert_use_the_default_file_or_are_refused() {
        let home = tempfile::tempdir().unwrap();
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let e = root_source(mode, None, Some(home.path())).unwrap_err();
            let default = home.path().join(".postgresql/root.crt");
            assert_eq!(
                e.to_string(),
                format!(
                    "sslmode={} needs the CA that signed the server's certificate, but sslrootcert is not set and the default {} does not exist (like libpq, dbmazz does not fall back to trusting every public CA for any host): set sslrootcert=/path/to/ca.pem, or use sslrootcert=system with sslmode=verify-full for a certificate from a public CA, or sslmode=require to encrypt without verifying the server",
                    mode.name(),
                    default.display()
                )
            );
        }
        let e = root_source(SslMode::VerifyCa, None, None).unwrap_err();
        assert!(e.to_string().contains("no home directory is set"), "{e}");

        // The default file, once it exists, is what libpq would use.
        let dir = home.path().join(".postgresql");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("root.crt"), "").unwrap();
        assert_eq!(
            root_source(SslMode::VerifyCa, None, Some(home.path())).unwrap(),
            RootCert::File(dir.join("root.crt"))
        );
        // An explicit sslrootcert wins, and system stays system.
        let explicit = RootCert::File("/etc/ca.pem".into());
        assert_eq!(
            root_source(SslMode::VerifyFull, Some(&explicit), Some(home.path())).unwrap(),
            explicit
        );
        assert_eq!(
            root_source(SslMode::VerifyFull, Some(&RootCert::System), None).unwrap(),
            RootCert::System
        );
    }

    #[test]
    fn an_unusable_root_file_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        for (path, reason) in [
            (empty.clone(), "it holds no PEM certificate"),
            (dir.path().join("missing.pem"), "No such file"),
        ] {
            let i = info(&format!(
                "host=h user=u sslmode=verify-ca sslrootcert={}",
                path.display()
            ));
            let e = client_config(&i).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "cannot use the root certificate file {} (sslrootcert): ",
                    path.display()
                )),
                "{e}"
            );
            assert!(e.contains(reason), "{e}");
            assert!(
                e.contains("point sslrootcert at a readable PEM file"),
                "{e}"
            );
        }
    }

    #[test]
    fn modes_that_do_not_verify_need_no_roots() {
        for mode in ["disable", "prefer", "require"] {
            client_config(&info(&format!("host=h user=u sslmode={mode}"))).unwrap();
        }
    }
}

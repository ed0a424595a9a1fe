//! The replication connection against a real PostgreSQL: every authentication method,
//! wrong credentials, and TLS per sslmode.

mod support;

use dbmazz::connectors::sources::postgres::replication::ReplicationConnection;
use dbmazz::connectors::sources::postgres::SourceError;
use pg_scratch::{Options, PgCluster};
use support::*;

fn setup_users(pg: &PgCluster) {
    pg.psql(
        "postgres",
        "SET password_encryption = 'md5';
         CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'md5-pw';
         SET password_encryption = 'scram-sha-256';
         CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'scram-pw';
         CREATE ROLE clear_user LOGIN REPLICATION PASSWORD 'clear-pw';",
    )
    .unwrap();
    prepend_hba(
        pg,
        &[
            "host all,replication md5_user 127.0.0.1/32 md5",
            "host all,replication clear_user 127.0.0.1/32 password",
            "host all,replication scram_user 127.0.0.1/32 scram-sha-256",
        ],
    );
}

#[tokio::test]
async fn authenticates_with_trust_md5_cleartext_and_scram() {
    let pg = PgCluster::start().unwrap();
    setup_users(&pg);

    let mut c = ReplicationConnection::connect(&socket_conninfo(&pg, "postgres"))
        .await
        .expect("trust over the unix socket");
    let sys = c.identify_system().await.unwrap();
    assert!(sys.xlogpos.0 > 0);
    assert_eq!(sys.dbname.as_deref(), Some("postgres"));
    assert_eq!(c.server_major_version(), Some(15));

    for (user, pw) in [
        ("md5_user", "md5-pw"),
        ("clear_user", "clear-pw"),
        ("scram_user", "scram-pw"),
    ] {
        let info = conninfo(&pg.tcp_url(user, pw, "postgres"));
        let mut c = ReplicationConnection::connect(&info)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        c.identify_system().await.unwrap();
        c.close().await;
    }
}

#[tokio::test]
async fn wrong_password_is_a_permanent_auth_error_without_the_secret() {
    let pg = PgCluster::start().unwrap();
    setup_users(&pg);
    for user in ["md5_user", "clear_user", "scram_user"] {
        let info = conninfo(&pg.tcp_url(user, "not-the-password", "postgres"));
        let err = match ReplicationConnection::connect(&info).await {
            Ok(_) => panic!("{user}: wrong password accepted"),
            Err(e) => e,
        };
        assert!(matches!(err, SourceError::Auth(_)), "{user}: {err:?}");
        assert!(!err.is_transient());
        assert!(!err.to_string().contains("not-the-password"));
    }
}

#[tokio::test]
async fn unreachable_server_is_transient() {
    let info = conninfo("postgres://u:p@127.0.0.1:1/db?sslmode=disable");
    let err = match ReplicationConnection::connect(&info).await {
        Ok(_) => panic!("connected to port 1"),
        Err(e) => e,
    };
    assert!(err.is_transient(), "{err:?}");
}

fn tls_cluster() -> (PgCluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dbmazz test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let pg_dir = tempfile::tempdir().unwrap();
    let crt = pg_dir.path().join("server.crt");
    let keyf = pg_dir.path().join("server.key");
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&keyf, key.serialize_pem()).unwrap();
    // The server must own the key and keep it private.
    let pg_owner = std::process::Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    if pg_owner.status.success() && is_root() {
        let uid: u32 = String::from_utf8_lossy(&pg_owner.stdout)
            .trim()
            .parse()
            .unwrap();
        for f in [&crt, &keyf] {
            std::os::unix::fs::chown(f, Some(uid), None).unwrap();
        }
        std::os::unix::fs::chown(pg_dir.path(), Some(uid), None).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keyf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pg = PgCluster::start_with(
        Options::default()
            .setting("ssl", "on")
            .setting("ssl_cert_file", crt.to_str().unwrap())
            .setting("ssl_key_file", keyf.to_str().unwrap()),
    )
    .unwrap();
    pg.psql(
        "postgres",
        "CREATE ROLE tls_user LOGIN REPLICATION PASSWORD 'tls-pw'",
    )
    .unwrap();
    prepend_hba(
        &pg,
        &[
            "hostssl all,replication tls_user 127.0.0.1/32 scram-sha-256",
            "hostnossl all,replication tls_user 127.0.0.1/32 reject",
        ],
    );
    // Keep pg_dir alive as long as the cluster: leak it into the CA dir's lifetime.
    std::mem::forget(pg_dir);
    (pg, dir)
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test]
async fn tls_modes_behave_like_libpq() {
    let (pg, ca_dir) = tls_cluster();
    let ca = ca_dir.path().join("ca.pem");
    let url = |host: &str, mode: &str, root: bool| {
        let mut u = format!(
            "postgres://tls_user:tls-pw@{host}:{}/postgres?sslmode={mode}",
            pg.port()
        );
        if root {
            u.push_str(&format!("&sslrootcert={}", ca.display()));
        }
        u
    };
    // hostnossl rejects: only TLS gets in. The certificate names only `localhost`, so
    // verify-ca accepts 127.0.0.1 and verify-full needs the name.
    for (host, mode, root) in [
        ("127.0.0.1", "prefer", false),
        ("127.0.0.1", "require", false),
        ("127.0.0.1", "verify-ca", true),
        ("localhost", "verify-full", true),
    ] {
        let mut c = ReplicationConnection::connect(&conninfo(&url(host, mode, root)))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        c.identify_system().await.unwrap();
    }
    // disable: the server rejects the plain connection.
    assert!(
        ReplicationConnection::connect(&conninfo(&url("127.0.0.1", "disable", false)))
            .await
            .is_err()
    );
    // verify-full: a name not in the certificate fails, permanently, saying why.
    let err =
        match ReplicationConnection::connect(&conninfo(&url("127.0.0.1", "verify-full", true)))
            .await
        {
            Ok(_) => panic!("verify-full accepted a host name not in the certificate"),
            Err(e) => e,
        };
    assert!(matches!(err, SourceError::TlsHandshake { .. }), "{err:?}");
    assert!(!err.is_transient(), "{err:?}");
    assert!(
        err.to_string()
            .contains("the host name must also be in the certificate"),
        "{err}"
    );
    // A CA the server's certificate does not chain to.
    let other_ca = ca_dir.path().join("other.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other_ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let u = format!(
        "postgres://tls_user:tls-pw@localhost:{}/postgres?sslmode=verify-ca&sslrootcert={}",
        pg.port(),
        other_ca.display()
    );
    let err = match ReplicationConnection::connect(&conninfo(&u)).await {
        Ok(_) => panic!("verify-ca accepted a certificate from another CA"),
        Err(e) => e,
    };
    assert!(matches!(err, SourceError::TlsHandshake { .. }), "{err:?}");
    assert!(!err.is_transient(), "{err:?}");
}

/// `dbmazz check` with `HOME` pointing at `home`, for sslrootcert's libpq default.
fn check_with_home(url: &str, home: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dbmazz"))
        .arg("check")
        .env_clear()
        .env("HOME", home)
        .env("SOURCE_URL", url)
        .env("TABLES", "no_such_table")
        .output()
        .unwrap()
}

#[test]
fn verify_modes_without_sslrootcert_use_root_crt_or_are_refused_like_libpq() {
    let (pg, ca_dir) = tls_cluster();
    let home = tempfile::tempdir().unwrap();
    for mode in ["verify-ca", "verify-full"] {
        let url = format!(
            "postgres://tls_user:tls-pw@localhost:{}/postgres?sslmode={mode}",
            pg.port()
        );
        // No sslrootcert and no ~/.postgresql/root.crt: refused before connecting, not
        // "any public CA for any host".
        let out = check_with_home(&url, home.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let want = format!(
            "sslmode={mode} needs the CA that signed the server's certificate, but sslrootcert is not set and the default {} does not exist",
            home.path().join(".postgresql/root.crt").display()
        );
        assert!(err.contains(&want), "{err}");
        assert!(err.contains("set sslrootcert=/path/to/ca.pem"), "{err}");
        assert!(!err.contains("tls-pw"), "{err}");
    }
    // With the CA at libpq's default place, both modes connect (the report then names
    // the missing table: exit 2, not a connection error).
    std::fs::create_dir(home.path().join(".postgresql")).unwrap();
    std::fs::copy(
        ca_dir.path().join("ca.pem"),
        home.path().join(".postgresql/root.crt"),
    )
    .unwrap();
    for mode in ["verify-ca", "verify-full"] {
        let url = format!(
            "postgres://tls_user:tls-pw@localhost:{}/postgres?sslmode={mode}",
            pg.port()
        );
        let out = check_with_home(&url, home.path());
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("public.no_such_table does not exist"),
            "{text}"
        );
    }
}

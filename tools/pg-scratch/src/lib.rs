//! A private, throw-away PostgreSQL cluster for tests and the demo.
//!
//! `initdb` runs once per process into a template directory that each cluster copies
//! (or, with [`Options::own_initdb`], once for the cluster: its own system identifier);
//! every cluster gets its own data directory, a free loopback port and a Unix socket
//! inside its temp dir. As root, the server runs as the `postgres` user. Dropping the
//! cluster stops the server and removes its directory, also when a test panics; the
//! server also dies with the thread that started it (PR_SET_PDEATHSIG), so a killed test
//! process leaves nothing behind.

use std::ffi::CString;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Errors while preparing or running the scratch cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PostgreSQL binaries not found (looked in {0}); install the postgresql package (e.g. apt-get install postgresql) or set PG_BIN")]
    NoBinaries(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{what} failed: {output}")]
    Command { what: String, output: String },
    #[error("PostgreSQL did not become ready within {0:?}; log:\n{1}")]
    NotReady(Duration, String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Options for a cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Extra `postgresql.conf` settings, e.g. `("wal_sender_timeout", "2s")`.
    pub settings: Vec<(String, String)>,
    /// `wal_level` (logical by default).
    pub wal_level: String,
    /// Run `initdb` for this cluster instead of copying the per-process template: the
    /// cluster gets its own `system_identifier` (copies of the template share one, like
    /// clusters restored from one base backup). Slower (an initdb per cluster).
    pub own_initdb: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settings: Vec::new(),
            wal_level: "logical".into(),
            own_initdb: false,
        }
    }
}

impl Options {
    pub fn setting(mut self, k: &str, v: &str) -> Self {
        self.settings.push((k.into(), v.into()));
        self
    }

    pub fn wal_level(mut self, level: &str) -> Self {
        self.wal_level = level.into();
        self
    }

    /// See [`Options::own_initdb`]: a cluster with a system identifier of its own.
    pub fn own_initdb(mut self) -> Self {
        self.own_initdb = true;
        self
    }
}

/// A running scratch cluster. The superuser is `postgres` with password `postgres`
/// (TCP uses scram-sha-256, the Unix socket trusts).
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    options: Options,
    child: Option<Child>,
}

/// The directory holding `initdb`, `postgres`, `pg_ctl`.
pub fn bin_dir() -> Result<PathBuf, Error> {
    if let Ok(p) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(base)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("postgres").exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    // Prefer 15 (what the project targets), else the newest present.
    versions.sort();
    versions
        .iter()
        .find(|(v, _)| *v == 15)
        .or(versions.last())
        .map(|(_, p)| p.clone())
        .ok_or_else(|| Error::NoBinaries(base.display().to_string()))
}

/// uid/gid to run the server as: `postgres` when we are root, else ourselves.
fn server_identity() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new("postgres").ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy the fields
    // out immediately and do not keep the pointer.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points to a valid passwd struct.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some((uid, gid))
}

fn as_server_user(cmd: &mut Command) {
    if let Some((uid, gid)) = server_identity() {
        cmd.uid(uid).gid(gid);
    }
}

fn chown_to_server(path: &Path) -> Result<(), Error> {
    if let Some((uid, gid)) = server_identity() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(io_err(format!("chown {}", path.display())))?;
    }
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), Error> {
    let out = cmd.output().map_err(io_err(what))?;
    if !out.status.success() {
        return Err(Error::Command {
            what: what.into(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// The per-process template data directory (initdb runs once).
fn template() -> Result<&'static Path, Error> {
    static TEMPLATE: OnceLock<Result<tempfile::TempDir, String>> = OnceLock::new();
    let t = TEMPLATE.get_or_init(|| make_template().map_err(|e| e.to_string()));
    match t {
        Ok(dir) => Ok(dir.path()),
        Err(e) => Err(Error::Command {
            what: "initdb (template)".into(),
            output: e.clone(),
        }),
    }
}

fn make_template() -> Result<tempfile::TempDir, Error> {
    let dir = tempfile::Builder::new()
        .prefix("pg-scratch-template-")
        .tempdir()
        .map_err(io_err("create template dir"))?;
    chown_to_server(dir.path())?;
    initdb(dir.path())?;
    Ok(dir)
}

/// Runs `initdb` into `<dir>/data` (`dir` owned by the server user).
fn initdb(dir: &Path) -> Result<(), Error> {
    let bin = bin_dir()?;
    let data = dir.join("data");
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, "postgres\n").map_err(io_err("write pwfile"))?;
    chown_to_server(&pwfile)?;
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"])
        .args([
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    as_server_user(&mut cmd);
    run(&mut cmd, "initdb")?;
    // Allow replication connections over TCP (initdb's default hba only has them for
    // local/loopback; keep it explicit).
    let hba = data.join("pg_hba.conf");
    let mut text = std::fs::read_to_string(&hba).map_err(io_err("read pg_hba.conf"))?;
    text.push_str("host replication all 127.0.0.1/32 scram-sha-256\n");
    std::fs::write(&hba, text).map_err(io_err("write pg_hba.conf"))?;
    Ok(())
}

fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind a free port"))?;
    Ok(l.local_addr().map_err(io_err("local_addr"))?.port())
}

impl PgCluster {
    /// Starts a cluster with `wal_level=logical`.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("pg-scratch-")
            .tempdir()
            .map_err(io_err("create cluster dir"))?;
        chown_to_server(dir.path())?;
        if options.own_initdb {
            initdb(dir.path())?;
        } else {
            // cp -a keeps ownership and the 0700 mode PostgreSQL insists on.
            run(
                Command::new("cp")
                    .arg("-a")
                    .arg(template()?.join("data"))
                    .arg(dir.path().join("data")),
                "copy template cluster",
            )?;
        }
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).map_err(io_err("create socket dir"))?;
        chown_to_server(&sock)?;
        let mut cluster = PgCluster {
            dir,
            port: free_port()?,
            options,
            child: None,
        };
        cluster.launch()?;
        Ok(cluster)
    }

    fn launch(&mut self) -> Result<(), Error> {
        let bin = bin_dir()?;
        let log_path = self.dir.path().join("postgres.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("open server log"))?;
        chown_to_server(&log_path)?;
        let log2 = log.try_clone().map_err(io_err("dup log"))?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.socket_dir())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("wal_level={}", self.options.wal_level)])
            .args(["-c", "max_wal_senders=10", "-c", "max_replication_slots=10"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "logical_decoding_work_mem=64kB"])
            .args(["-c", "log_min_messages=warning"]);
        for (k, v) in &self.options.settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        as_server_user(&mut cmd);
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io_err("spawn postgres"))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        let pid_file = self.data_dir().join("postmaster.pid");
        while start.elapsed() < timeout {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return Err(Error::NotReady(start.elapsed(), self.log()));
                }
            }
            if let Ok(text) = std::fs::read_to_string(&pid_file) {
                if text.lines().nth(7).map(str::trim) == Some("ready") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(Error::NotReady(timeout, self.log()))
    }

    /// The server log so far (for test failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// key=value connection string over the Unix socket as `postgres` (trust).
    pub fn socket_conn_string(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db} sslmode=disable",
            self.socket_dir().display(),
            self.port
        )
    }

    /// URL over TCP loopback with password authentication.
    pub fn tcp_url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Runs a SQL script through `psql -f -` (ON_ERROR_STOP): each statement runs in its
    /// own transaction unless the script says BEGIN. Returns the unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, Error> {
        use std::io::Write as _;
        let psql = bin_dir()?.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let mut child = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err("run psql"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(sql.as_bytes())
                .map_err(io_err("write SQL to psql"))?;
        }
        let out = child.wait_with_output().map_err(io_err("wait for psql"))?;
        if !out.status.success() {
            let head: String = sql.chars().take(200).collect();
            return Err(Error::Command {
                what: format!("psql {head:?}"),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Stops the server (fast shutdown), keeping the data directory.
    pub fn stop(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            // SIGINT = fast shutdown.
            // SAFETY: kill with a valid pid of our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            child.wait().map_err(io_err("wait for postgres"))?;
        }
        Ok(())
    }

    /// Stops the server the way a crash would (immediate shutdown: no checkpoint; the
    /// next start runs crash recovery), keeping the data directory.
    pub fn stop_immediate(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT = immediate shutdown.
            // SAFETY: kill with a valid pid of our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
            child.wait().map_err(io_err("wait for postgres"))?;
        }
        Ok(())
    }

    /// Starts a stopped server again on the same port and data directory (no-op when it
    /// runs).
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.child.is_some() {
            return Ok(());
        }
        self.launch()
    }

    /// Whether the server process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop()?;
        self.launch()
    }

    /// Restarts with changed settings (e.g. another wal_level).
    pub fn restart_with(&mut self, options: Options) -> Result<(), Error> {
        self.stop()?;
        self.options = options;
        self.launch()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT = immediate shutdown: nothing to keep.
            // SAFETY: kill with a valid pid of our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_runs_sql_and_cleans_up() {
        let dir;
        {
            let c = PgCluster::start().unwrap();
            assert_eq!(c.psql("postgres", "SHOW wal_level").unwrap(), "logical");
            assert_eq!(c.psql("postgres", "SELECT 1+1").unwrap(), "2");
            dir = c.data_dir();
            assert!(dir.exists());
        }
        assert!(!dir.exists(), "data dir must be removed on drop");
    }

    #[test]
    fn restart_with_other_settings() {
        let mut c = PgCluster::start().unwrap();
        c.restart_with(Options::default().wal_level("replica"))
            .unwrap();
        assert_eq!(c.psql("postgres", "SHOW wal_level").unwrap(), "replica");
    }
}

//! Reading processes from /proc: CPU time of a process and of each of its threads (utime +
//! stime), peak and current RSS, and the allocated size of a directory tree. The parsers
//! are pure; the readers return `None` when the process is gone.

use std::path::Path;
use std::time::Duration;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The command name (thread name for a task), without the parentheses.
    pub comm: String,
    /// Process state letter (`R`, `S`, `T` stopped, ...).
    pub state: char,
    /// User-mode clock ticks.
    pub utime: u64,
    /// Kernel-mode clock ticks.
    pub stime: u64,
}

impl Stat {
    /// utime + stime as a duration.
    pub fn cpu(&self, tck: u64) -> Duration {
        ticks(self.utime + self.stime, tck)
    }
}

/// Clock ticks to a duration.
pub fn ticks(n: u64, tck: u64) -> Duration {
    Duration::from_micros(n.saturating_mul(1_000_000) / tck.max(1))
}

/// Parses a `stat` line. The command name may hold spaces and parentheses, so the fields
/// after it are found from the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let state = rest.first()?.chars().next()?;
    let utime = rest.get(11)?.parse().ok()?;
    let stime = rest.get(12)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        utime,
        stime,
    })
}

/// `/proc/<pid>/stat` of a process.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// One thread's CPU time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCpu {
    pub tid: i32,
    pub name: String,
    pub ticks: u64,
}

/// Every live thread of a process with its CPU ticks.
pub fn threads(pid: i32) -> Vec<ThreadCpu> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let tid: i32 = e.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let s = parse_stat(&text)?;
            Some(ThreadCpu {
                tid,
                name: s.comm,
                ticks: s.utime + s.stime,
            })
        })
        .collect()
}

/// A `kB` field of `/proc/<pid>/status` (e.g. `VmHWM`, `VmRSS`) in bytes.
pub fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// A `kB` field of `/proc/<pid>/status` in bytes.
pub fn status_bytes(pid: i32, field: &str) -> Option<u64> {
    parse_status_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        field,
    )
}

/// Bytes allocated on disk under a path (like `du`: blocks, so sparse files count what
/// they use). Missing files count 0 (the spool deletes files while we walk).
pub fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let Ok(dir) = std::fs::read_dir(path) else {
        return own;
    };
    own + dir
        .filter_map(|e| e.ok())
        .map(|e| disk_bytes(&e.path()))
        .sum::<u64>()
}

/// Sends a signal to a process.
pub fn signal(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions; a wrong pid is an error return.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_name_holding_spaces_and_parens() {
        let line = "4242 (tokio (rt) w) S 1 2 3 4 5 6 7 8 9 10 1234 567 0 0 20 0 9 0 100 200 300";
        let s = parse_stat(line).expect("parsed");
        assert_eq!(s.comm, "tokio (rt) w");
        assert_eq!(s.state, 'S');
        assert_eq!((s.utime, s.stime), (1234, 567));
        assert_eq!(s.cpu(100), Duration::from_millis(18_010));
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id() as i32;
        let s = stat(pid).expect("own stat");
        assert!(!s.comm.is_empty());
        assert!(!threads(pid).is_empty());
        assert!(status_bytes(pid, "VmHWM").expect("VmHWM") > 0);
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_status_kib(text, "VmHWM"), Some(2 << 20));
        assert_eq!(parse_status_kib(text, "VmRSS"), Some(1 << 20));
        assert_eq!(parse_status_kib(text, "VmPeak"), None);
    }
}

//! Reading the daemon's Prometheus endpoint (`HTTP_LISTEN` /metrics) with a plain HTTP/1.0
//! GET (no client library), and picking samples out of the text. Parsing is pure.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` → the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no end of HTTP headers")
    })?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        let line = head.lines().next().unwrap_or_default();
        return Err(std::io::Error::other(format!("{path} answered {line}")));
    }
    Ok(body.to_string())
}

/// The value of an unlabelled sample (`name value`), or of the first sample of `name`
/// whose labels contain `label` (e.g. `state="running"`).
pub fn sample(text: &str, name: &str, label: Option<&str>) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let value = match (rest.strip_prefix('{'), label) {
            (Some(labelled), Some(want)) => {
                let (labels, v) = labelled.split_once('}')?;
                if !labels.contains(want) {
                    return None;
                }
                v
            }
            (None, None) => rest.strip_prefix(' ')?,
            _ => return None,
        };
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE dbmazz_durable_lsn gauge\ndbmazz_durable_lsn 23456789\ndbmazz_durable_lsn_x 1\ndbmazz_state{state=\"starting\"} 0\ndbmazz_state{state=\"running\"} 1\ndbmazz_reader_connected 1\n";

    #[test]
    fn picks_samples() {
        assert_eq!(sample(TEXT, "dbmazz_durable_lsn", None), Some(23456789.0));
        assert_eq!(
            sample(TEXT, "dbmazz_state", Some("state=\"running\"")),
            Some(1.0)
        );
        assert_eq!(
            sample(TEXT, "dbmazz_state", Some("state=\"starting\"")),
            Some(0.0)
        );
        assert_eq!(sample(TEXT, "dbmazz_reader_connected", None), Some(1.0));
        assert_eq!(sample(TEXT, "dbmazz_missing", None), None);
    }
}

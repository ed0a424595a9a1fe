//! The workloads: the shape of each backlog and who drains it. Pure data; `run.rs` does
//! the I/O. Row counts scale with `--scale` so development runs stay short.

use crate::consumer::Spec;

/// A selectable workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// 1M rows in 100 transactions of 10k.
    Batch,
    /// 400k rows in 200k transactions of 2.
    Small,
    /// One transaction of 4M rows, protocol 1 and protocol 2 (memory flat in size).
    Big,
    /// Reader alone into the durable spool (StarRocks down for the drain) against the limit.
    Reader,
    /// Steady ~5k transactions/s for 30 s: commit-to-visible latency.
    Steady,
    /// Many tables (`--tables`, 200 by default): start to streaming, first and on a restart;
    /// one transaction touching every table; loads refused for too many running txns.
    Tables,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::Batch,
        Workload::Small,
        Workload::Big,
        Workload::Reader,
        Workload::Steady,
        Workload::Tables,
    ];

    /// (transactions, rows per transaction) at scale 1.
    fn base_shape(self) -> (u64, u64) {
        match self {
            Workload::Batch | Workload::Reader => (100, 10_000),
            Workload::Small => (200_000, 2),
            Workload::Big => (1, 4_000_000),
            Workload::Steady | Workload::Tables => (0, 1),
        }
    }

    /// (transactions, rows per transaction) at a scale: the count of transactions scales,
    /// except for the one big transaction, whose rows do. At least one of each.
    pub fn shape(self, scale: f64) -> (u64, u64) {
        let (t, r) = self.base_shape();
        let s = |n: u64| ((n as f64 * scale).round() as u64).max(1);
        match self {
            Workload::Big => (t, s(r)),
            Workload::Steady | Workload::Tables => (t, r),
            _ => (s(t), r),
        }
    }

    /// The consumers, in the order they drain: the limit first.
    pub fn consumers(self) -> Vec<Spec> {
        match self {
            Workload::Batch | Workload::Small | Workload::Steady | Workload::Tables => {
                vec![Spec::limit(1), Spec::dbmazz(false, false)]
            }
            Workload::Big => vec![
                Spec::limit(1),
                Spec::dbmazz(false, false),
                Spec::limit(2),
                Spec::dbmazz(true, false),
            ],
            Workload::Reader => vec![Spec::limit(1), Spec::dbmazz(false, true)],
        }
    }

    /// How the backlog is described in the table.
    pub fn describe(self, scale: f64) -> String {
        let (t, r) = self.shape(scale);
        let rows = t * r;
        match self {
            Workload::Big => format!("1 transaction of {}", count(r)),
            Workload::Reader => format!(
                "reader only: {} rows, {} txns of {}",
                count(rows),
                count(t),
                count(r)
            ),
            Workload::Steady => "steady traffic".into(),
            Workload::Tables => "many tables".into(),
            _ => format!("{} rows, {} txns of {}", count(rows), count(t), count(r)),
        }
    }
}

/// 1000 → `1k`, 4000000 → `4M`, 400 → `400`.
pub fn count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(100_000) {
        let m = n as f64 / 1e6;
        format!("{}M", trim(m))
    } else if n >= 1_000 && n.is_multiple_of(100) {
        format!("{}k", trim(n as f64 / 1e3))
    } else {
        n.to_string()
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_scale() {
        assert_eq!(Workload::Batch.shape(1.0), (100, 10_000));
        assert_eq!(Workload::Batch.shape(0.1), (10, 10_000));
        assert_eq!(Workload::Small.shape(0.01), (2_000, 2));
        assert_eq!(Workload::Big.shape(0.25), (1, 1_000_000));
        assert_eq!(Workload::Batch.shape(0.0), (1, 10_000));
    }

    #[test]
    fn counts() {
        assert_eq!(count(1_000_000), "1M");
        assert_eq!(count(4_000_000), "4M");
        assert_eq!(count(400_000), "400k");
        assert_eq!(count(2_500), "2.5k");
        assert_eq!(count(7), "7");
        assert_eq!(Workload::Batch.describe(1.0), "1M rows, 100 txns of 10k");
    }
}

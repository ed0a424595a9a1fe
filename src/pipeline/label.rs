//! Stream Load labels (invariant 5): deterministic in the spool id, the target table,
//! the spool sequence range, the generation (bumped when StarRocks spent a label without
//! loading every row) and the column set. Two loads of one table can cover the same
//! sequence range: a key-changing UPDATE whose new row leaves TOASTed columns unchanged
//! is a delete (all columns) and a partial upsert at the same sequence, so the column set
//! is part of the label. Only `[-_A-Za-z0-9]`, at most 128 characters (StarRocks's
//! `^[-\w]{1,128}$`). Pure.

use sha2::{Digest, Sha256};

use super::plan::ColumnSet;

/// The label of one load.
pub fn label(
    spool_id: &str,
    table: &str,
    first_seq: u64,
    last_seq: u64,
    generation: u32,
    columns: &ColumnSet,
) -> String {
    let spool = if valid(spool_id, 16) {
        spool_id.to_string()
    } else {
        hashed(spool_id, 4)
    };
    let table = if valid(table, 40) && !looks_hashed(table) {
        table.to_string()
    } else {
        hashed(table, 20)
    };
    let set = match columns {
        ColumnSet::Full => String::new(),
        ColumnSet::Partial(cols) => {
            let list: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
            let digest = Sha256::digest(list.join(",").as_bytes());
            format!("p{}", hex::encode(&digest[..4]))
        }
    };
    format!("dbmazz_{spool}_{table}_{first_seq:016x}_{last_seq:016x}_{generation}{set}")
}

fn valid(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A readable prefix and a hash of the whole name, so distinct names never collide.
fn hashed(s: &str, keep: usize) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let prefix: String = clean(s).chars().take(keep).collect();
    format!("{prefix}_h{}", hex::encode(&digest[..8]))
}

/// A clean table name shaped like our hashed form is hashed too, so it cannot collide.
fn looks_hashed(s: &str) -> bool {
    s.len() >= 18
        && s.as_bytes()[s.len() - 18..s.len() - 16] == *b"_h"
        && s[s.len() - 16..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_label(l: &str) -> bool {
        valid(l, 128)
    }

    const F: &ColumnSet = &ColumnSet::Full;

    #[test]
    fn labels_are_deterministic_and_valid() {
        let a = label("00ff00ff00ff00ff", "orders", 1, 99, 0, F);
        assert_eq!(a, label("00ff00ff00ff00ff", "orders", 1, 99, 0, F));
        assert_eq!(
            a,
            "dbmazz_00ff00ff00ff00ff_orders_0000000000000001_0000000000000063_0"
        );
        assert!(valid_label(&a));
        assert_ne!(a, label("00ff00ff00ff00fe", "orders", 1, 99, 0, F));
        assert_ne!(a, label("00ff00ff00ff00ff", "orders", 1, 99, 1, F));
        assert_ne!(a, label("00ff00ff00ff00ff", "orders", 2, 99, 0, F));
        assert_ne!(a, label("00ff00ff00ff00ff", "orders", 1, 98, 0, F));
        assert_ne!(a, label("00ff00ff00ff00ff", "orders2", 1, 99, 0, F));
    }

    #[test]
    fn loads_of_one_range_with_other_column_sets_never_share_a_label() {
        // A key change whose new row leaves a TOASTed column unchanged: a delete of every
        // column and a partial upsert, both at sequence 4.
        let full = label("00ff00ff00ff00ff", "kt", 4, 4, 0, F);
        let partial = label(
            "00ff00ff00ff00ff",
            "kt",
            4,
            4,
            0,
            &ColumnSet::Partial(vec![0, 1]),
        );
        let other = label(
            "00ff00ff00ff00ff",
            "kt",
            4,
            4,
            0,
            &ColumnSet::Partial(vec![0, 2]),
        );
        assert_ne!(full, partial);
        assert_ne!(partial, other);
        assert!(valid_label(&partial), "{partial}");
        // A partial set never looks like another generation of a full one.
        assert_ne!(partial, label("00ff00ff00ff00ff", "kt", 4, 4, 1, F));
    }

    #[test]
    fn labels_stay_valid_for_odd_and_long_names() {
        let long = "t".repeat(1000);
        let cases = [
            long.as_str(),
            "other.t",
            "other__t",
            "naïve täble",
            "a:b",
            "a_b",
            "\"quoted\"",
            "x_h0123456789abcdef",
        ];
        let worst = ColumnSet::Partial((0..1000).collect());
        let mut seen = std::collections::HashSet::new();
        for t in cases {
            let l = label(&"s".repeat(200), t, u64::MAX, u64::MAX, u32::MAX, &worst);
            assert!(valid_label(&l), "{l} ({} chars)", l.len());
            assert!(seen.insert(l.clone()), "collision for {t}: {l}");
        }
        // a:b and a_b sanitise alike but must not share a label
        assert_ne!(label("s", "a:b", 1, 2, 0, F), label("s", "a_b", 1, 2, 0, F));
        let l1 = format!("{}x", "t".repeat(300));
        let l2 = format!("{}y", "t".repeat(300));
        assert_ne!(label("s", &l1, 1, 2, 0, F), label("s", &l2, 1, 2, 0, F));
    }
}

//! `dbmazz spool ...`: the spool inspection tool.

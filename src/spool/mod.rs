//! The durable spool between the reader and the loader (sled). See docs/spool.md.

//! Pure pgoutput decoding (protocol versions 1 and 2), no I/O.

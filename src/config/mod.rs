//! Configuration: a TOML file (optional) overridden by environment variables.

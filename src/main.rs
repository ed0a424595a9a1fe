//! The `dbmazz` binary: see `dbmazz --help`.

fn main() -> std::process::ExitCode {
    limit_malloc_retention();
    dbmazz::cli::main()
}

/// glibc's malloc keeps freed memory at the top of its heaps up to a trim threshold that
/// it raises on its own (up to 64 MiB per arena) once large blocks are freed, so the
/// spool's 128 KiB blocks and sled's buffers left RSS near 140 MB during a drain whose
/// live heap was far smaller. A fixed 1 MiB threshold halves the peak RSS at the same
/// speed (docs/performance.md). `MALLOC_TRIM_THRESHOLD_` in the environment still wins.
fn limit_malloc_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
        }
    }
}

//! End-to-end benchmarks of shardwire against twilight-gateway: the
//! measuring side. `cargo xtask bench` runs the `shardwire-bench` binary
//! against `shardwire sim` in another process and tabulates the runs.

use std::time::Duration;

/// CPU time (user + system) this process has used, from `/proc/self/stat`
/// (clock ticks of 1/100 s, Linux's USER_HZ).
///
/// # Errors
///
/// When `/proc` cannot be read (not Linux).
pub fn cpu_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name, in parentheses, may hold spaces: count from its end.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/self/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15.
    let ticks = |index: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(index - 3)
            .ok_or_else(|| anyhow::anyhow!("short /proc/self/stat"))?
            .parse()?)
    };
    let ticks = ticks(14)? + ticks(15)?;
    Ok(Duration::from_millis(ticks * 10))
}

/// A `/proc/self/status` figure in KiB (`VmRSS`, `VmHWM`).
///
/// # Errors
///
/// When `/proc` cannot be read or lacks the field.
pub fn status_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/self/status"))
}

/// The process's RSS in KiB after glibc hands back the free memory it
/// keeps: `malloc_trim(0)` returns free pages inside the heap to the system,
/// not only its top. A connection that frees memory while others keep
/// theirs (hibernation) leaves holes that plain RSS still counts until the
/// allocator reuses them; this reading counts what is in use.
///
/// # Errors
///
/// When `/proc` cannot be read.
pub fn trimmed_rss_kib() -> anyhow::Result<u64> {
    // SAFETY: `malloc_trim` takes no pointers and only releases memory
    // glibc holds free; it is safe to call at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
    status_kib("VmRSS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu_and_memory() {
        let spin: u64 = (0..2_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0);
        assert!(cpu_time().is_ok());
        assert!(status_kib("VmRSS").unwrap() > 0);
        assert!(status_kib("VmHWM").unwrap() >= status_kib("VmRSS").unwrap() / 2);
        assert!(status_kib("NoSuchField").is_err());
        // Freed memory comes back after a trim: never more than before it.
        let held: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        drop(held);
        let before = status_kib("VmRSS").unwrap();
        assert!(trimmed_rss_kib().unwrap() <= before);
    }
}

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
    }
}

//! End-to-end benchmarks of shardwire against twilight-gateway: the
//! measuring side. `cargo xtask bench` runs the `shardwire-bench` binary
//! against `shardwire sim` in another process and tabulates the runs.

use std::time::Duration;

/// CPU time (user + system) all threads of this process have used, from
/// the kernel's per-process CPU clock (`CLOCK_PROCESS_CPUTIME_ID`), which
/// counts in nanoseconds. `/proc/self/stat` counts in ticks of 10 ms: over
/// the quarter second a quick run takes, that alone would be a 4% step.
///
/// # Errors
///
/// When the clock cannot be read.
pub fn cpu_time() -> anyhow::Result<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through the pointer,
    // which points at a live, writable one.
    #[allow(unsafe_code)]
    let result = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut now) };
    if result != 0 {
        return Err(anyhow::Error::new(std::io::Error::last_os_error())
            .context("reading the process CPU clock"));
    }
    let secs = u64::try_from(now.tv_sec)?;
    let nanos = u32::try_from(now.tv_nsec)?;
    Ok(Duration::new(secs, nanos))
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
    fn the_cpu_clock_moves_in_steps_far_finer_than_a_tick() {
        // Spin until the clock has moved 100 times: its smallest step is
        // its resolution (plus the spin), far below a 10 ms tick. The
        // smallest, because another thread may run while this one waits.
        let mut last = cpu_time().unwrap();
        let mut smallest = Duration::MAX;
        let mut spin = 0u64;
        for _ in 0..100 {
            let now = loop {
                spin = spin.wrapping_add(std::hint::black_box(spin | 1));
                let now = cpu_time().unwrap();
                if now != last {
                    break now;
                }
            };
            assert!(now > last, "the clock went back from {last:?} to {now:?}");
            smallest = smallest.min(now - last);
            last = now;
        }
        assert!(spin > 0);
        assert!(
            smallest < Duration::from_millis(1),
            "the clock steps {smallest:?}"
        );
    }

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

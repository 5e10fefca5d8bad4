//! Hands the memory hibernating connections free back to the system.
//!
//! A connection that hibernates frees its inflate state and buffers (about
//! 60 KiB). glibc's allocator keeps freed memory inside its heap, and while
//! other connections' long-lived allocations sit between the freed blocks it
//! can neither reuse them for anything larger nor return them: a process
//! whose thousand shards connected together and then went quiet keeps
//! nearly all of that memory resident. `malloc_trim` returns the free pages
//! inside the heap, not only its top.
//!
//! Shards that connected together go quiet together, so a release waits
//! [`COALESCE`] for the rest of the wave and then trims once, on tokio's
//! blocking pool: at most one trim per [`COALESCE`] for the whole process.
//! Off glibc (musl, macOS, Windows) nothing happens.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How long a release waits for more connections to hibernate.
const COALESCE: Duration = Duration::from_millis(250);

/// A release is waiting or running.
static SCHEDULED: AtomicBool = AtomicBool::new(false);
/// Releases carried out, for tests.
static RELEASES: AtomicU64 = AtomicU64::new(0);

/// Clears [`SCHEDULED`] however the release task ends (a runtime shutting
/// down drops it mid-wait), so a later hibernation schedules anew.
struct Unschedule;

impl Drop for Unschedule {
    fn drop(&mut self) {
        SCHEDULED.store(false, Ordering::Release);
    }
}

/// A connection hibernated: schedules a release unless one is pending.
/// Must be called inside a tokio runtime.
pub(crate) fn hibernated() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    if SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        let _unschedule = Unschedule;
        tokio::time::sleep(COALESCE).await;
        let _ = tokio::task::spawn_blocking(release).await;
    });
}

/// Returns the heap's free pages to the system.
fn release() {
    let started = std::time::Instant::now();
    trim();
    RELEASES.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        took_us = started.elapsed().as_micros() as u64,
        "returned free memory to the system"
    );
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: `malloc_trim` takes no pointers, touches only memory glibc
    // holds free, and may be called from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// Releases carried out so far in this process.
#[cfg(test)]
pub(crate) fn releases() -> u64 {
    RELEASES.load(Ordering::Relaxed)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Waits (on the paused clock) until the pending release has run.
    async fn settle() {
        tokio::time::sleep(COALESCE * 2).await;
        for _ in 0..1000 {
            if !SCHEDULED.load(Ordering::Acquire) {
                return;
            }
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the release never finished");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    }

    // One test: the state is the process's.
    #[test]
    fn hibernations_coalesce_into_releases_and_survive_a_dropped_runtime() {
        let before = releases();
        runtime().block_on(async {
            for _ in 0..1000 {
                hibernated();
            }
            settle().await;
            assert_eq!(releases(), before + 1, "one release for the wave");
            hibernated();
            settle().await;
            assert_eq!(releases(), before + 2, "a later hibernation releases again");
        });

        // A runtime dropped while its release waits leaves none scheduled.
        let dropped = runtime();
        dropped.block_on(async {
            hibernated();
            tokio::task::yield_now().await;
        });
        assert!(SCHEDULED.load(Ordering::Acquire));
        drop(dropped);
        assert!(!SCHEDULED.load(Ordering::Acquire));
        assert_eq!(releases(), before + 2);
        runtime().block_on(async {
            hibernated();
            settle().await;
        });
        assert_eq!(releases(), before + 3);
    }
}

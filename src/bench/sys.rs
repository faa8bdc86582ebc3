//! What the process costs: CPU time and resident memory, read from the kernel.

use std::time::Duration;

/// User plus system CPU time of the whole process so far (every thread).
pub fn cpu_time() -> Duration {
    let usage = rusage();
    to_duration(usage.ru_utime) + to_duration(usage.ru_stime)
}

/// The process's peak resident set size so far, bytes (`ru_maxrss`).
pub fn peak_rss_bytes() -> u64 {
    // Linux reports kilobytes.
    u64::try_from(rusage().ru_maxrss).unwrap_or(0) * 1024
}

/// The resident set size now, bytes, from `/proc/self/statm`; `None` where there is no
/// procfs. Unlike [`peak_rss_bytes`] it goes down when memory is returned, so sampling it
/// during a run gives the run's own peak rather than the process's lifetime peak.
pub fn current_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(resident_pages * u64::try_from(page).unwrap_or(4096))
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which
    // points at a zeroed value of that type on our stack; RUSAGE_SELF is always valid.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}

fn to_duration(t: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
}

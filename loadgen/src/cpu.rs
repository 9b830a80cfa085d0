//! CPU time of a process, from procfs: what "per server core" figures divide by.

/// CPU seconds (user + system) process `pid` has used so far; `None` when it cannot be
/// read (gone, or not ours to see).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let pid = i32::try_from(pid).ok()?;
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    let ticks = stat.utime + stat.stime;
    Some(ticks as f64 / procfs::ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu_and_a_missing_one_none() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        let used = process_cpu_seconds(std::process::id()).expect("own process");
        assert!(used > 0.0, "{used}");
        assert!(process_cpu_seconds(u32::MAX / 2).is_none());
    }
}

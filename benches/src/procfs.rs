//! What the kernel says about a process: CPU time and peak resident memory from `/proc`, and
//! the CPU time of the calling thread (for the in-process floor).

use std::io;
use std::process::Command;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 if that fails,
/// which is what Linux uses everywhere in practice).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds (user + system) used so far by process `pid` (`"self"` for this one).
pub fn cpu_seconds(pid: &str, ticks_per_second: u64) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks =
        parse_stat_ticks(&stat).ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}/stat")))?;
    Ok(ticks as f64 / ticks_per_second as f64)
}

/// Peak resident set size in bytes (`VmHWM` of `/proc/<pid>/status`).
pub fn peak_rss_bytes(pid: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other(format!("no VmHWM in /proc/{pid}/status")))
}

/// CPU time of the calling thread in nanoseconds: `/proc/thread-self/schedstat` (nanosecond
/// resolution), else `/proc/thread-self/stat` in clock ticks.
pub fn thread_cpu_ns(ticks_per_second: u64) -> io::Result<u64> {
    if let Ok(s) = std::fs::read_to_string("/proc/thread-self/schedstat")
        && let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok())
    {
        return Ok(ns);
    }
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    let ticks =
        parse_stat_ticks(&stat).ok_or_else(|| io::Error::other("cannot parse /proc/thread-self/stat"))?;
    Ok(ticks * 1_000_000_000 / ticks_per_second)
}

/// The 1, 5 and 15 minute load averages of the machine (`/proc/loadavg`), for the reports:
/// other work on a shared machine skews the figures. Empty where it cannot be read.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_counts_from_the_last_parenthesis() {
        let stat = "4242 (sluice (io) x) S 1 4242 4242 0 -1 4194304 1234 0 0 0 350 25 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(375));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn own_process_figures_are_readable() {
        let ticks = clock_ticks();
        assert!(cpu_seconds("self", ticks).is_ok());
        assert!(peak_rss_bytes("self").expect("VmHWM") > 0);
        assert!(thread_cpu_ns(ticks).is_ok());
    }
}

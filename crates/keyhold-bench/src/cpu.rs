//! CPU time of a process from `/proc/PID/stat`: user plus system time of all its threads,
//! including threads that have exited, in units of 1/`CLK_TCK` seconds (10 ms on Linux).

use std::time::Duration;

use anyhow::Context as _;

/// A process whose CPU time to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Process {
    /// The load generator itself.
    Current,
    /// Another process.
    Pid(u32),
}

/// Reads a process's CPU time (utime + stime).
///
/// # Errors
///
/// Returns an error when the stat file cannot be read or parsed, for example because the
/// process has exited.
pub(crate) fn cpu_time(process: Process) -> anyhow::Result<Duration> {
    let path = match process {
        Process::Current => "/proc/self/stat".to_owned(),
        Process::Pid(pid) => format!("/proc/{pid}/stat"),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {path}; is the process running?"))?;
    let ticks = parse_cpu_ticks(&text).with_context(|| format!("unexpected format of {path}"))?;
    let per_second = rustix::param::clock_ticks_per_second();
    Ok(ticks_to_duration(ticks, per_second))
}

/// Sums the CPU time of several server processes, such as the nodes of a cluster.
///
/// # Errors
///
/// Returns an error naming the first process whose CPU time cannot be read, because a sum
/// that leaves out one process would understate the total.
pub(crate) fn total_cpu_time(pids: &[u32]) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    for &pid in pids {
        total += cpu_time(Process::Pid(pid))
            .with_context(|| format!("cannot read the CPU time of process {pid}"))?;
    }
    Ok(total)
}

/// Parses utime + stime, in clock ticks, from the text of `/proc/PID/stat`.
///
/// The command name in field 2 is in parentheses and may itself contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // After the name come field 3 (state) onwards; utime is field 14 and stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(per_second);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime() {
        let stat = "4242 (keyhold) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 31 0 0 20 0 3 0 \
                    12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
    }

    #[test]
    fn parses_name_with_spaces_and_parentheses() {
        let stat = "77 (a) b (c)) R 1 77 77 0 -1 0 0 0 0 0 9 1 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(10));
    }

    #[test]
    fn rejects_truncated_stat() {
        assert_eq!(parse_cpu_ticks("77 (x) R 1 2 3"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn converts_ticks_to_duration() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(3, 1000), Duration::from_millis(3));
    }

    #[test]
    fn reads_own_cpu_time() {
        assert!(cpu_time(Process::Current).is_ok());
    }

    #[test]
    fn total_adds_each_process() {
        // Spend a few clock ticks first, so a total that counted one process only would fall
        // below twice the time read before it.
        let mut spin = 0u64;
        while cpu_time(Process::Current).expect("own CPU time") < Duration::from_millis(30) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let own = std::process::id();
        let before = cpu_time(Process::Current).expect("own CPU time");
        let total = total_cpu_time(&[own, own]).expect("total CPU time");
        let after = cpu_time(Process::Current).expect("own CPU time");
        assert!(total >= before * 2, "{total:?} < 2 × {before:?}");
        assert!(total <= after * 2, "{total:?} > 2 × {after:?}");
        assert_eq!(total_cpu_time(&[]).expect("empty list"), Duration::ZERO);
    }

    #[test]
    fn total_names_missing_process() {
        // Linux pids stay below 2^22, so this one never exists.
        let error = total_cpu_time(&[std::process::id(), u32::MAX]).expect_err("no such pid");
        let message = format!("{error:#}");
        assert!(
            message.contains(&format!("process {}", u32::MAX)),
            "{message}"
        );
    }
}

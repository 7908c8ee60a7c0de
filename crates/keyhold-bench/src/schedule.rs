//! The open-loop schedule: request `k` is due at `start + k / rate` whatever happened to the
//! requests before it, so a slow response delays no later send and shows up in the latency of
//! the requests that waited (no coordinated omission).

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedSender;

/// The due times of an open-loop run, from `start` up to but excluding `end`.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    start: Instant,
    end: Instant,
    rate: f64,
    next_index: u64,
}

impl Schedule {
    /// Creates a schedule of `rate` requests per second; `rate` must be positive.
    pub(crate) fn new(start: Instant, end: Instant, rate: f64) -> Self {
        Self {
            start,
            end,
            rate,
            next_index: 0,
        }
    }
}

impl Iterator for Schedule {
    type Item = Instant;

    fn next(&mut self) -> Option<Instant> {
        // Computing each time from the index, not by adding intervals, keeps rounding errors
        // from accumulating.
        #[allow(clippy::cast_precision_loss)]
        let offset = Duration::try_from_secs_f64(self.next_index as f64 / self.rate).ok()?;
        let due = self.start.checked_add(offset)?;
        if due >= self.end {
            return None;
        }
        self.next_index += 1;
        Some(due)
    }
}

/// Time before a due time at which the pacer stops sleeping and polls the clock instead,
/// because waking from sleep takes tens of microseconds on a virtual machine. Polling this
/// long costs the generator about 10 % of a CPU per 1,000 requests per second.
const SPIN_LEAD: Duration = Duration::from_micros(100);

/// Sends each due time of `schedule` to `tickets` when it comes, until the schedule ends or
/// every receiver is gone.
///
/// It sleeps on a Linux timerfd registered with the tokio reactor until [`SPIN_LEAD`] before
/// the due time, then yields to other tasks until the clock reaches it, so the ticket reaches
/// a worker on the same runtime thread within microseconds. The tokio timer would round each
/// wait up to whole milliseconds, and a separate sleeping thread adds its timer slack (50 µs
/// by default) and a cross-thread wake-up to every latency.
///
/// # Errors
///
/// Returns an error when the timerfd cannot be created, set or read.
pub(crate) async fn pace(schedule: Schedule, tickets: UnboundedSender<Instant>) -> io::Result<()> {
    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    // NOTE: tokio deprecated this constructor because a type that only implements `AsRawFd`
    // may hand out a descriptor it does not own. `AsyncFd` owns this `OwnedFd` and never
    // closes or replaces it, and the sound replacement is an `unsafe fn`, which the workspace
    // forbids.
    #[allow(deprecated)]
    let timer = AsyncFd::with_interest(timer, Interest::READABLE)?;
    for due in schedule {
        let wake = due.checked_sub(SPIN_LEAD).unwrap_or(due);
        let wait = wake.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            let expiry = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: Timespec {
                    tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
                    tv_nsec: i64::from(wait.subsec_nanos()),
                },
            };
            timerfd_settime(timer.get_ref(), TimerfdTimerFlags::empty(), &expiry)?;
            wait_for_expiry(&timer).await?;
        }
        while Instant::now() < due {
            tokio::task::yield_now().await;
        }
        if tickets.send(due).is_err() {
            break;
        }
    }
    Ok(())
}

async fn wait_for_expiry(timer: &AsyncFd<OwnedFd>) -> io::Result<()> {
    loop {
        let mut guard = timer.readable().await?;
        let mut expirations = [0u8; 8];
        let read = guard
            .try_io(|fd| rustix::io::read(fd.get_ref(), &mut expirations).map_err(io::Error::from));
        match read {
            Ok(result) => return result.map(|_| ()),
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_yields_rate_times_duration() {
        let start = Instant::now();
        let end = start + Duration::from_secs(1);
        assert_eq!(Schedule::new(start, end, 1800.0).count(), 1800);
        let end = start + Duration::from_secs(10);
        assert_eq!(Schedule::new(start, end, 1800.0).count(), 18_000);
        assert_eq!(Schedule::new(start, end, 0.5).count(), 5);
    }

    #[test]
    fn schedule_spaces_requests_evenly() {
        let start = Instant::now();
        let end = start + Duration::from_secs(1);
        let due: Vec<Instant> = Schedule::new(start, end, 1000.0).collect();
        assert_eq!(due[0], start);
        for (index, pair) in due.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(
                gap.abs_diff(Duration::from_millis(1)) < Duration::from_nanos(2),
                "gap {gap:?} after request {index}"
            );
        }
        assert!(due.iter().all(|&t| t < end));
    }

    #[test]
    fn schedule_is_independent_of_send_times() {
        // Due times depend only on the index, so consuming late changes nothing.
        let start = Instant::now();
        let end = start + Duration::from_millis(100);
        let mut schedule = Schedule::new(start, end, 100.0);
        let first = schedule.next();
        std::thread::sleep(Duration::from_millis(30));
        let second = schedule.next();
        assert_eq!(first, Some(start));
        assert_eq!(second, Some(start + Duration::from_millis(10)));
    }

    #[tokio::test]
    async fn pacer_sends_each_due_time_not_early() {
        let start = Instant::now() + Duration::from_millis(5);
        let end = start + Duration::from_millis(50);
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let pacer = tokio::spawn(pace(Schedule::new(start, end, 200.0), sender));
        let mut count = 0;
        while let Some(due) = receiver.recv().await {
            let received = Instant::now();
            assert!(due >= start && due < end);
            assert!(received >= due, "ticket {count} arrived early");
            count += 1;
        }
        assert_eq!(count, 10);
        assert!(matches!(pacer.await, Ok(Ok(()))));
    }
}

//! The run: every connection is open before the clock starts. Then each connection sends
//! requests in closed loop (the next one as soon as a response is in) or open loop (due times
//! taken from the pacer), records what it measured, and the progress bar shows the rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::StatusCode;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Mutex;
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::task::JoinSet;

use crate::client::{Connection, SendError, Targets};
use crate::cpu::{self, Process};
use crate::report::{Measurement, Stats};
use crate::schedule::{Schedule, pace};
use crate::startup::{Workload, error_name, unix_now};

/// Pause before a connection that failed to open is tried again.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// Pacing and length of a run.
#[derive(Debug, Clone)]
pub(crate) struct RunPlan {
    /// Number of connections.
    pub(crate) connections: usize,
    /// Open loop at this many requests per second; `None` for closed loop.
    pub(crate) rate: Option<f64>,
    /// Unmeasured warm-up.
    pub(crate) warmup: Duration,
    /// Measured duration.
    pub(crate) duration: Duration,
    /// Time limit for one request.
    pub(crate) timeout: Duration,
    /// Server processes whose summed CPU time to measure. Empty for none.
    pub(crate) server_pids: Vec<u32>,
    /// Whether to draw the progress bar.
    pub(crate) show_progress: bool,
}

/// The run's time marks.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Requests sent (closed loop) or due (open loop) from here on are measured.
    measure_start: Instant,
    /// No request is sent or due after this.
    end: Instant,
    /// Open loop: requests still waiting for a connection now are counted as not sent.
    give_up: Instant,
}

type Tickets = Arc<Mutex<UnboundedReceiver<Instant>>>;

/// Opens the connections, runs the plan and returns what was measured.
///
/// Connection i goes to `targets.for_connection(i)`. `first` is the connection the start-up
/// checks used, to the target of connection 0; it is reused.
///
/// # Errors
///
/// Returns an error when a connection cannot be opened before the run or the pacer thread
/// cannot start.
pub(crate) async fn run(
    plan: &RunPlan,
    targets: Arc<Targets>,
    workload: Arc<Workload>,
    first: Connection,
) -> anyhow::Result<Measurement> {
    let mut connections = vec![first];
    for number in 1..plan.connections {
        let connection = targets
            .for_connection(number)
            .connect()
            .await
            .with_context(|| {
                format!(
                    "cannot open connection {} of {}",
                    number + 1,
                    plan.connections
                )
            })?;
        connections.push(connection);
    }

    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let end = measure_start + plan.duration;
    let window = Window {
        measure_start,
        end,
        give_up: end + plan.timeout,
    };
    let (tickets, pacer) = match plan.rate {
        Some(rate) => {
            let (sender, receiver) = mpsc::unbounded_channel();
            let pacer = tokio::spawn(pace(Schedule::new(start, end, rate), sender));
            (Some(Arc::new(Mutex::new(receiver))), Some(pacer))
        }
        None => (None, None),
    };
    let progress = Arc::new(Progress::new(plan.show_progress, start, window));
    let updater = tokio::spawn(progress.clone().update_until_end());
    let server_pids = plan.server_pids.clone();
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_start.into()).await;
        sample_cpu(&server_pids)
    });

    let mut workers = JoinSet::new();
    for (index, connection) in connections.into_iter().enumerate() {
        let worker = Worker {
            index,
            targets: targets.clone(),
            workload: workload.clone(),
            window,
            timeout: plan.timeout,
            tickets: tickets.clone(),
            progress: progress.clone(),
        };
        workers.spawn(worker.run(connection));
    }
    let mut stats = Stats::default();
    while let Some(result) = workers.join_next().await {
        stats.merge(&result.context("a connection task panicked")?);
    }
    let finish = Instant::now();
    if let Some(pacer) = pacer {
        // A pacer that failed closed the channel early, so the run sent too few requests.
        pacer
            .await
            .context("the open-loop pacer panicked")?
            .context("the open-loop pacer failed")?;
    }
    let (server_after, generator_after) = sample_cpu(&plan.server_pids);
    updater.abort();
    progress.bar.finish_and_clear();

    let (server_before, generator_before) = cpu_at_start.await.unwrap_or((None, None));
    let used = |before: Option<Duration>, after: Option<Duration>| {
        before
            .zip(after)
            .map(|(before, after)| after.saturating_sub(before))
    };
    Ok(Measurement {
        stats,
        elapsed: finish.saturating_duration_since(measure_start),
        server_cpu: used(server_before, server_after).map(|cpu| (plan.server_pids.clone(), cpu)),
        generator_cpu: used(generator_before, generator_after),
    })
}

/// Reads the servers' total and the generator's CPU time. A failed read gives `None`, and so
/// does an empty list of servers.
fn sample_cpu(server_pids: &[u32]) -> (Option<Duration>, Option<Duration>) {
    let server = (!server_pids.is_empty())
        .then(|| cpu::total_cpu_time(server_pids).ok())
        .flatten();
    let generator = cpu::cpu_time(Process::Current).ok();
    (server, generator)
}

/// One connection's loop.
struct Worker {
    index: usize,
    targets: Arc<Targets>,
    workload: Arc<Workload>,
    window: Window,
    timeout: Duration,
    tickets: Option<Tickets>,
    progress: Arc<Progress>,
}

impl Worker {
    async fn run(self, connection: Connection) -> Stats {
        let mut stats = Stats::default();
        let mut templates = self.workload.templates.clone();
        let cycle = &self.workload.cycle;
        let mut position = self.index % cycle.len();
        let mut connection = Some(connection);

        loop {
            let due = match &self.tickets {
                None if Instant::now() >= self.window.end => break,
                None => None,
                Some(tickets) => {
                    let Some(due) = tickets.lock().await.recv().await else {
                        break;
                    };
                    if Instant::now() >= self.window.give_up {
                        if due >= self.window.measure_start {
                            stats.record_not_sent();
                        }
                        continue;
                    }
                    Some(due)
                }
            };
            let op = cycle[position];
            position = (position + 1) % cycle.len();
            let Some(template) = templates[op.index()].as_mut() else {
                continue;
            };

            let request = template.request(&self.workload.signer, unix_now());
            let ready = match (request, self.connected(&mut connection).await) {
                (Ok(request), Ok(open)) => Ok((request, open)),
                (Err(message), _) => {
                    self.progress
                        .warn_once(&format!("cannot build a request: {message}"));
                    Err("SigningError")
                }
                (_, Err(message)) => {
                    self.progress.warn_once(&message);
                    Err("ConnectError")
                }
            };
            let (request, open) = match ready {
                Ok(ready) => ready,
                Err(name) => {
                    let now = Instant::now();
                    if due.unwrap_or(now) >= self.window.measure_start {
                        stats.record(op, now - due.unwrap_or(now), Some(name));
                    }
                    self.progress.count(true);
                    if due.is_none() {
                        tokio::time::sleep(RECONNECT_DELAY).await;
                    }
                    continue;
                }
            };

            let sent = Instant::now();
            let result = open.send(request, self.timeout).await;
            let done = Instant::now();
            let error = match result {
                Ok((StatusCode::OK, _)) => None,
                Ok((status, body)) => Some(error_name(status, &body)),
                Err(error) => {
                    connection = None;
                    if let SendError::Connection(_) = &error {
                        self.progress
                            .warn_once(&format!("{}: {error}", template.path()));
                    }
                    Some(match error {
                        SendError::Timeout => "Timeout".to_owned(),
                        SendError::Connection(_) => "ConnectionError".to_owned(),
                    })
                }
            };
            let origin = due.unwrap_or(sent);
            if origin >= self.window.measure_start {
                stats.record(op, done - origin, error.as_deref());
                if let Some(due) = due {
                    stats.record_send_delay(sent.saturating_duration_since(due));
                }
            }
            self.progress.count(error.is_some());
        }
        stats
    }

    /// Returns an open connection, opening a new one when the last one failed or was closed.
    async fn connected<'c>(
        &self,
        connection: &'c mut Option<Connection>,
    ) -> Result<&'c mut Connection, String> {
        if connection.as_ref().is_some_and(Connection::is_closed) {
            *connection = None;
        }
        if connection.is_none() {
            let opened = self
                .targets
                .for_connection(self.index)
                .connect()
                .await
                .map_err(|error| format!("{error:#}"))?;
            *connection = Some(opened);
        }
        connection
            .as_mut()
            .ok_or_else(|| "no connection".to_owned())
    }
}

/// Counters shared by the connections and the progress bar on stderr.
struct Progress {
    bar: ProgressBar,
    start: Instant,
    window: Window,
    completed: AtomicU64,
    failed: AtomicU64,
    warned: AtomicBool,
}

impl Progress {
    fn new(show: bool, start: Instant, window: Window) -> Self {
        let total = window.end.saturating_duration_since(start);
        let bar = if show {
            let bar = ProgressBar::new(u64::try_from(total.as_millis()).unwrap_or(u64::MAX));
            let style = ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {msg}")
                .map(|style| style.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            bar,
            start,
            window,
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        }
    }

    fn count(&self, failed: bool) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prints the first failure of the run on stderr; the report counts the rest by name.
    fn warn_once(&self, message: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            self.bar.suspend(|| {
                eprintln!("keyhold-bench: first failed request: {message}");
            });
        }
    }

    async fn update_until_end(self: Arc<Self>) {
        const TICK: Duration = Duration::from_millis(250);
        let mut last_count = 0;
        let mut last_time = Instant::now();
        loop {
            tokio::time::sleep(TICK).await;
            let now = Instant::now();
            let count = self.completed.load(Ordering::Relaxed);
            let seconds = now.duration_since(last_time).as_secs_f64();
            #[allow(clippy::cast_precision_loss)]
            let rate = (count - last_count) as f64 / seconds.max(1e-9);
            let phase = if now < self.window.measure_start {
                "warm-up"
            } else if now < self.window.end {
                "measuring"
            } else {
                "finishing"
            };
            let elapsed = now.saturating_duration_since(self.start);
            self.bar
                .set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            self.bar.set_message(format!(
                "{phase}: {rate:.0} requests/s, {} failed",
                self.failed.load(Ordering::Relaxed)
            ));
            last_count = count;
            last_time = now;
        }
    }
}

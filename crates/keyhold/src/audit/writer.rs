//! The writer thread: chains, writes, flushes, rotates and retries.
//!
//! Lines are written in groups: the thread takes every queued record, writes them with one
//! system call and flushes, and syncs the file to disk at least once a second. A failed write
//! is undone by truncating the file to its length before the group, then retried until it
//! succeeds, so a full disk never leaves a torn line or a gap in the chain.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use super::chain::{GENESIS_HASH, line_hash, parse_line};
use super::{AuditHealth, AuditLog, AuditRecord, FailureMode};

/// Name of the file being written; rotated files get a name with their first sequence number.
pub const CURRENT_FILE: &str = "audit.log";

/// Maximum time between syncs of the file to disk.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Time between groups of records. Records reach the file within this time, and a queue of
/// `queue_capacity` records must hold the requests of one interval.
const GROUP_INTERVAL: Duration = Duration::from_millis(5);

/// Time between attempts to write after a failure.
const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// Where and how the writer writes.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Directory of the audit files, created with mode 0700 when missing.
    pub dir: PathBuf,
    /// Size at which the current file is rotated.
    pub max_file_bytes: u64,
    /// Whether the current file is also rotated when the UTC day changes.
    pub rotate_daily: bool,
    /// Number of records the queue accepts before requests see it as full.
    pub queue_capacity: usize,
    /// What requests do when records cannot be written.
    pub mode: FailureMode,
}

/// The last written position of the chain, which the server records in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Sequence number of the last line.
    pub seq: u64,
    /// SHA-256 of the last line, in hex.
    pub hash: String,
}

/// Starts the writer thread, resuming the chain from the files in the directory.
///
/// `on_sync` is called with the chain head after each sync to disk, so the caller can record
/// it elsewhere.
///
/// # Errors
///
/// Returns an I/O error when the directory cannot be created or the last file cannot be read.
pub fn start(
    config: WriterConfig,
    on_sync: impl FnMut(&ChainHead) + Send + 'static,
) -> io::Result<AuditLog> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.dir)?;
    let head = resume(&config.dir)?;
    let (sender, receiver) = sync_channel(config.queue_capacity.max(1));
    let health = Arc::new(AuditHealth::default());
    let file = match open_current(&config.dir) {
        Ok(file) => {
            health.set_writable(true);
            Some(file)
        }
        Err(error) => {
            tracing::error!(%error, dir = %config.dir.display(), "cannot open the audit log");
            None
        }
    };
    let log = AuditLog {
        sender,
        health: health.clone(),
        mode: config.mode,
    };
    let mut writer = Writer {
        config,
        head,
        health,
        file,
        file_day: None,
        pending: Vec::new(),
        pending_lines: 0,
        last_sync: Instant::now(),
        unsynced: false,
        on_sync: Box::new(on_sync),
    };
    std::thread::Builder::new()
        .name("keyhold-audit".to_owned())
        .spawn(move || writer.run(&receiver))?;
    Ok(log)
}

struct Writer {
    config: WriterConfig,
    head: ChainHead,
    health: Arc<AuditHealth>,
    file: Option<File>,
    /// UTC day number of the first line in the current file.
    file_day: Option<i64>,
    /// Chained lines not yet written.
    pending: Vec<u8>,
    pending_lines: u64,
    last_sync: Instant,
    unsynced: bool,
    on_sync: Box<dyn FnMut(&ChainHead) + Send>,
}

impl Writer {
    fn run(&mut self, receiver: &Receiver<AuditRecord>) {
        loop {
            // The thread sleeps between groups instead of waiting on the queue: a waiting
            // receiver makes every request wake it, which costs two context switches per
            // request when the server shares one CPU.
            std::thread::sleep(if self.pending.is_empty() {
                GROUP_INTERVAL
            } else {
                RETRY_INTERVAL
            });
            loop {
                match receiver.try_recv() {
                    Ok(record) => self.chain(&record),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.write_pending();
                        self.sync();
                        return;
                    }
                }
            }
            self.write_pending();
            if self.unsynced && self.last_sync.elapsed() >= SYNC_INTERVAL {
                self.sync();
            }
        }
    }

    /// Serializes a record with the next sequence number and the hash of the line before.
    fn chain(&mut self, record: &AuditRecord) {
        let body = match serde_json::to_string(record) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "cannot serialize an audit record");
                return;
            }
        };
        let seq = self.head.seq + 1;
        let line = format!(
            "{{\"seq\":{seq},\"prev\":\"{}\",{}",
            self.head.hash,
            body.strip_prefix('{').unwrap_or(&body)
        );
        self.head = ChainHead {
            seq,
            hash: line_hash(line.as_bytes()),
        };
        self.pending.extend_from_slice(line.as_bytes());
        self.pending.push(b'\n');
        self.pending_lines += 1;
    }

    fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.try_write() {
            Ok(()) => {
                self.health
                    .written
                    .fetch_add(self.pending_lines, Ordering::Relaxed);
                self.pending.clear();
                self.pending_lines = 0;
                self.unsynced = true;
                if !self.health.is_writable() {
                    tracing::info!("audit log writable again");
                    self.health.set_writable(true);
                }
            }
            Err(error) => {
                if self.health.is_writable() {
                    tracing::error!(
                        %error,
                        dir = %self.config.dir.display(),
                        "cannot write the audit log; retrying"
                    );
                    self.health.set_writable(false);
                }
                self.file = None;
                if self.config.mode == FailureMode::Open {
                    self.health
                        .dropped
                        .fetch_add(self.pending_lines, Ordering::Relaxed);
                    // The chain continues across the lost lines; verification reports the gap.
                    self.pending.clear();
                    self.pending_lines = 0;
                }
            }
        }
    }

    /// Writes all pending lines, undoing a partial write.
    fn try_write(&mut self) -> io::Result<()> {
        self.rotate_if_due()?;
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open_current(&self.config.dir)?),
        };
        let start = file.seek(SeekFrom::End(0))?;
        if let Err(error) = file.write_all(&self.pending).and_then(|()| file.flush()) {
            let _ = file.set_len(start);
            return Err(error);
        }
        if self.file_day.is_none() {
            self.file_day = Some(utc_day());
        }
        Ok(())
    }

    fn rotate_if_due(&mut self) -> io::Result<()> {
        let current = self.config.dir.join(CURRENT_FILE);
        let size = fs::metadata(&current)
            .map(|metadata| metadata.len())
            .unwrap_or(0);
        let day_changed =
            self.config.rotate_daily && self.file_day.is_some_and(|day| day != utc_day());
        if size == 0 || (size < self.config.max_file_bytes && !day_changed) {
            if size == 0 {
                self.file_day = None;
            }
            return Ok(());
        }
        self.sync();
        let first_seq = first_seq(&current)?;
        let rotated = self.config.dir.join(format!("audit-{first_seq:012}.log"));
        fs::rename(&current, &rotated)?;
        self.file = None;
        self.file_day = None;
        tracing::info!(file = %rotated.display(), "rotated the audit log");
        Ok(())
    }

    fn sync(&mut self) {
        if let Some(file) = &self.file
            && self.unsynced
        {
            if let Err(error) = file.sync_data() {
                tracing::error!(%error, "cannot sync the audit log to disk");
                return;
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
            (self.on_sync)(&self.head);
        }
    }
}

fn open_current(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(CURRENT_FILE))
}

fn utc_day() -> i64 {
    crate::keystore::unix_now().div_euclid(86_400)
}

/// Finds the head of the chain in the newest audit file of `dir`.
fn resume(dir: &Path) -> io::Result<ChainHead> {
    let mut files = audit_files(dir)?;
    while let Some(path) = files.pop() {
        if let Some(line) = last_line(&path)? {
            let parsed = parse_line(&line).map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "last line of {} is not an audit record: {error}",
                        path.display()
                    ),
                )
            })?;
            return Ok(ChainHead {
                seq: parsed.seq,
                hash: line_hash(line.as_bytes()),
            });
        }
    }
    Ok(ChainHead {
        seq: 0,
        hash: GENESIS_HASH.to_owned(),
    })
}

/// Audit files of a directory in chain order: rotated files by first sequence number, then the
/// current file.
///
/// # Errors
///
/// Returns an I/O error when the directory cannot be read.
pub fn audit_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut rotated = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("audit-") && name.ends_with(".log") {
            rotated.push(dir.join(name.as_ref()));
        }
    }
    rotated.sort();
    let current = dir.join(CURRENT_FILE);
    if current.exists() {
        rotated.push(current);
    }
    Ok(rotated)
}

fn last_line(path: &Path) -> io::Result<Option<String>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let tail = len.min(256 * 1024);
    file.seek(SeekFrom::Start(len - tail))?;
    let mut bytes = Vec::with_capacity(usize::try_from(tail).unwrap_or(0));
    // Bounded by the length read before, in case the path is a device that never ends.
    file.take(tail).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(str::to_owned))
}

fn first_seq(path: &Path) -> io::Result<u64> {
    let text = fs::read_to_string(path)?;
    let first = text.lines().next().unwrap_or_default();
    parse_line(first)
        .map(|parsed| parsed.seq)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::chain;

    fn record(operation: &str) -> AuditRecord {
        AuditRecord {
            time: "2026-01-01T00:00:00.000Z".to_owned(),
            node: "test".to_owned(),
            kind: "xks",
            operation: operation.to_owned(),
            result: "success".to_owned(),
            ..AuditRecord::default()
        }
    }

    /// Waits until the writer has written `count` records in total.
    fn wait_written(log: &AuditLog, count: u64) {
        for _ in 0..500 {
            if log.health().written() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("only {} of {count} records written", log.health().written());
    }

    #[test]
    fn rotation_keeps_one_chain_across_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = WriterConfig {
            dir: dir.path().to_owned(),
            max_file_bytes: 2000,
            rotate_daily: true,
            queue_capacity: 16,
            mode: FailureMode::Closed,
        };
        let log = start(config.clone(), |_| {}).expect("start writer");
        for index in 0..60 {
            log.record(record(&format!("Encrypt-{index}")))
                .expect("queue record");
            // Several groups, so rotation happens between writes.
            if index % 5 == 4 {
                wait_written(&log, index + 1);
            }
        }
        wait_written(&log, 60);
        drop(log);

        let files = audit_files(dir.path()).expect("list files");
        assert!(files.len() >= 3, "expected rotated files, found {files:?}");
        for file in &files[..files.len() - 1] {
            let name = file
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(
                name.starts_with("audit-") && name.ends_with(".log"),
                "{name}"
            );
        }
        let verified = chain::verify(&files, None).expect("one chain across files");
        assert_eq!(verified.lines, 60);
        assert_eq!(verified.first_seq, Some(1));

        // A restarted writer continues the chain from the newest file.
        let log = start(config, |_| {}).expect("restart writer");
        log.record(record("Decrypt")).expect("queue record");
        wait_written(&log, 1);
        drop(log);
        let files = audit_files(dir.path()).expect("list files");
        let verified = chain::verify(&files, None).expect("chain continues after a restart");
        assert_eq!(verified.head.map(|head| head.seq), Some(61));
    }
}

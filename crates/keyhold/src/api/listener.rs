//! Accepting connections: TCP, the TLS handshake, HTTP/1.1 keep-alive, and graceful shutdown.
//! Also the thread that keeps the snapshot current by polling the store's revision.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{ConnectionInfo, XksState, handle, tls};
use crate::audit::AuditRecord;
use crate::keystore::KeyStore;
use crate::keystore::snapshot::Snapshot;
use crate::service::health;

/// Maximum time a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum time a client may take to send request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum time in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often the store's revision is polled. Changes reach the data path within this interval
/// plus the time to rebuild the snapshot; on PostgreSQL a change notification usually ends the
/// wait sooner.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(200);

/// Serves XKS requests on `listener` until `shutdown` completes.
///
/// # Errors
///
/// Returns an I/O error only when accepting fails in a way that cannot be retried.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<XksState>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let handler = move |connection, request| handle(state.clone(), connection, request);
    serve_with(listener, tls, max_connections, shutdown, handler).await
}

/// Serves HTTPS with `handler` responding to each request, until `shutdown` completes. The XKS and
/// the admin listener share it.
///
/// # Errors
///
/// Returns an I/O error only when accepting fails in a way that cannot be retried.
pub async fn serve_with<H, F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(Arc<ConnectionInfo>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut accept_failures = RateLimitedLog::default();
    loop {
        // At the connection limit, new clients wait in the listen backlog rather than taking
        // file descriptors that requests in progress need.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and similar conditions pass; back off briefly.
                    accept_failures.warn(|suppressed| {
                        tracing::warn!(%error, suppressed, "accepting a connection failed");
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
        }

        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls_stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => tls_stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let connection_info = Arc::new(ConnectionInfo {
                peer: Some(peer.to_string()),
                client_subject: tls_stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|certificate| tls::certificate_names(certificate).into_iter().next()),
            });
            let service = service_fn(move |request| {
                let response = handler(connection_info.clone(), request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls_stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }

    tracing::info!("shutting down: no new connections, waiting for requests in flight");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
}

/// Logs a repeated warning at most once per second, with the number of repeats left out.
#[derive(Debug, Default)]
struct RateLimitedLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        if self
            .last
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.suppressed = 0;
        self.last = Some(std::time::Instant::now());
    }
}

/// Starts the thread that reloads the snapshot when the store's revision changes.
///
/// On PostgreSQL the thread wakes as soon as any node commits a change and announces it with
/// `NOTIFY`. The revision poll stays as the fallback for a lost notification or connection.
/// When the store cannot be read, the server keeps serving from the last snapshot and reports
/// `DEGRADED` until a read succeeds again.
pub fn spawn_refresher(
    state: Arc<XksState>,
    mut key_store: KeyStore,
    scheduler_interval: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("keyhold-refresh".to_owned())
        .spawn(move || {
            let mut reported_problems = state.snapshot.load().problems.clone();
            let mut next_scheduled_run = std::time::Instant::now();
            let mut next_heartbeat = std::time::Instant::now();
            let mut audited_event = None;
            loop {
                if let Err(error) = key_store.store().wait_for_change(REFRESH_INTERVAL) {
                    // The revision read below fails too and reports the store as unreadable.
                    tracing::debug!(%error, "cannot wait for change notifications");
                    std::thread::sleep(REFRESH_INTERVAL);
                }
                audit_admin_events(&state, &mut key_store, &mut audited_event);
                record_learned_bindings(&state.snapshot.load(), &mut key_store);
                if std::time::Instant::now() >= next_scheduled_run {
                    run_scheduled_work(&mut key_store);
                    next_scheduled_run = std::time::Instant::now() + scheduler_interval;
                }
                let current = state.snapshot.load().revision;
                let revision = key_store.store().revision();
                let result = match revision {
                    Ok(revision) if revision == current => Ok(None),
                    Ok(_) => key_store.load_snapshot().map(Some),
                    Err(error) => Err(error.into()),
                };
                match result {
                    Ok(None) => {
                        mark_storage(&state, true, None);
                        state
                            .checked_at_millis
                            .store(crate::keystore::unix_now_millis(), Ordering::Relaxed);
                    }
                    Ok(Some(snapshot)) => {
                        if snapshot.problems != reported_problems {
                            for problem in &snapshot.problems {
                                tracing::error!(problem = %problem, "stored object is unusable");
                            }
                            reported_problems.clone_from(&snapshot.problems);
                        }
                        tracing::info!(
                            revision = snapshot.revision,
                            domains = snapshot.domain_count(),
                            "applied changes from the store"
                        );
                        let previous = state.snapshot.load_full();
                        snapshot.carry_learned_bindings(&previous);
                        state.snapshot.store(Arc::new(snapshot));
                        // Bindings learned while the new snapshot was built.
                        record_learned_bindings(&previous, &mut key_store);
                        mark_storage(&state, true, None);
                        state
                            .checked_at_millis
                            .store(crate::keystore::unix_now_millis(), Ordering::Relaxed);
                    }
                    Err(error) => mark_storage(&state, false, Some(&error)),
                }
                if std::time::Instant::now() >= next_heartbeat {
                    record_heartbeat(&state, &mut key_store);
                    next_heartbeat = std::time::Instant::now() + health::HEARTBEAT_INTERVAL;
                }
            }
        })
        .map(drop)
}

/// Records this node's heartbeat with its current status, then reads the live nodes into
/// [`XksState::peers`]. When the store cannot be written or read, the last list stays.
fn record_heartbeat(state: &XksState, key_store: &mut KeyStore) {
    let check = state.health.check(&state.snapshot.load());
    let storage_current = state.storage_current.load(Ordering::Relaxed);
    let status = health::node_status(&check, storage_current, false);
    let now = crate::keystore::unix_now_millis();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let max_age = i64::try_from(health::NODE_LIVENESS.as_millis()).unwrap_or(i64::MAX);

    let store = key_store.store_mut();
    if let Err(error) =
        store.record_heartbeat(&state.node.id, &state.node.model, status.as_str(), now)
    {
        // Logged at debug only, because the revision read already logs an unreadable store.
        tracing::debug!(%error, "cannot record the heartbeat");
        return;
    }

    let rows = match store.live_nodes(max_age, now) {
        Ok(rows) => rows,
        Err(error) => {
            tracing::debug!(%error, "cannot read the live nodes");
            return;
        }
    };

    // This node is not a peer: the health response adds it first with its current status.
    let peers = rows
        .into_iter()
        .filter(|row| row.node_id != state.node.id)
        .filter_map(|row| {
            let Some(status) = health::HealthStatus::parse(&row.health_status) else {
                tracing::warn!(
                    node = %row.node_id,
                    status = %row.health_status,
                    "skipped a node heartbeat with an unknown health status"
                );
                return None;
            };
            Some(health::Peer {
                id: row.node_id,
                model: row.model,
                status,
            })
        })
        .collect::<Vec<_>>();
    state.peers.store(Arc::new(peers));
}

/// Copies administrative actions recorded in the store into this node's audit log, then moves
/// this node's cursor past them. An event is written again only if the process stops between
/// queuing it and moving the cursor.
fn audit_admin_events(state: &XksState, key_store: &mut KeyStore, cursor: &mut Option<i64>) {
    let store = key_store.store_mut();
    let after = match *cursor {
        Some(after) => after,
        None => match store.audited_admin_event(&state.node.id) {
            Ok(after) => *cursor.insert(after),
            Err(error) => {
                tracing::debug!(%error, "cannot read the audit cursor");
                return;
            }
        },
    };
    let events = match store.admin_events_after(after, 256) {
        Ok(events) => events,
        Err(error) => {
            tracing::debug!(%error, "cannot read administrative actions");
            return;
        }
    };
    let mut last = after;
    for event in events {
        let record = AuditRecord {
            time: event.time,
            node: state.node.id.clone(),
            kind: "admin",
            operation: event.action,
            principal: Some(event.principal),
            target: Some(event.target),
            result: event.result,
            ..AuditRecord::default()
        };
        if state.audit.record(record).is_err() {
            break;
        }
        last = event.id;
    }
    if last != after {
        match store.set_audited_admin_event(&state.node.id, last) {
            Ok(()) => *cursor = Some(last),
            Err(error) => tracing::warn!(%error, "cannot record the audit cursor"),
        }
    }
}

/// Records key bindings learned on first use in the store; the next revision poll loads them.
fn record_learned_bindings(snapshot: &Snapshot, key_store: &mut KeyStore) {
    for (domain, key_id, arn) in snapshot.take_pending_bindings() {
        match key_store
            .store_mut()
            .learn_key_binding(&domain, &key_id, &arn)
        {
            Ok(true) => {
                tracing::info!(%domain, %key_id, kms_key_arn = %arn, "key bound to the first KMS key ARN that used it");
            }
            Ok(false) => {
                tracing::warn!(%domain, %key_id, kms_key_arn = %arn, "another node bound the key to a different KMS key ARN first");
            }
            Err(error) => {
                tracing::error!(%error, %domain, %key_id, "cannot record a learned key binding");
            }
        }
    }
}

/// Runs due rotations and deletions; the next revision poll picks up the changes.
fn run_scheduled_work(key_store: &mut KeyStore) {
    match key_store.run_scheduled_work(crate::keystore::unix_now()) {
        Ok(work) => {
            for (domain, key_id, version) in &work.rotated {
                tracing::info!(%domain, %key_id, version, "rotated key on schedule");
            }
            for (domain, key_id) in &work.destroyed {
                tracing::info!(%domain, %key_id, "destroyed key after its deletion date");
            }
        }
        Err(error) => tracing::error!(%error, "scheduled rotations and deletions failed"),
    }
}

/// Records whether the store is readable, logging only when that changes.
fn mark_storage(state: &XksState, current: bool, error: Option<&crate::keystore::Error>) {
    let was_current = state.storage_current.swap(current, Ordering::Relaxed);
    match (was_current, current, error) {
        (true, false, Some(error)) => {
            tracing::error!(%error, "cannot read the store; serving from the last snapshot");
        }
        (false, true, _) => tracing::info!("store readable again"),
        _ => {}
    }
}

//! `keyhold serve`: loads the configuration, opens the store and serves the XKS API.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::admin;
use crate::api::{self, XksState, listener, tls};
use crate::audit::writer::WriterConfig;
use crate::audit::{self, AuditLog, FailureMode};
use crate::config::{LogFormat, LogSection, RootOfTrustSettings, Settings};
use crate::control::{Control, ControlSettings, SharedControl};
use crate::keystore::root::open_root_of_trust;
use crate::keystore::snapshot::Snapshot;
use crate::keystore::store::Store;
use crate::keystore::{KeyStore, unix_now};
use crate::protect;
use crate::service::health::NodeInfo;

pub(super) fn run(
    dir: &Path,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let mut settings = Settings::load(dir)?;
    if admin_listen.is_some() {
        settings.admin_listen = admin_listen;
    }
    // Without [server] public_endpoint the AWS commands name the listen address, so they
    // follow --listen too.
    if let Some(listen) = listen
        && settings.xks_endpoint == format!("https://{}", settings.listen)
    {
        settings.xks_endpoint = format!("https://{listen}");
    }
    init_logging(&settings.log)?;
    runtime()?.block_on(async {
        let server = Server::start(&settings, listen).await?;
        server.run().await
    })
}

/// A bound, configured XKS server that has not started accepting yet.
pub(super) struct Server {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<XksState>,
    admin: Option<(TcpListener, Arc<rustls::ServerConfig>, SharedControl)>,
    max_connections: usize,
}

impl Server {
    /// Opens the store, builds the first snapshot and binds the listener.
    pub(super) async fn start(
        settings: &Settings,
        listen: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        check_private(&settings.data_dir)?;
        for protection in protect::apply(settings.lock_memory)? {
            tracing::info!(protection = %protection, "secret protection active");
        }
        // The store blocks, and the PostgreSQL client drives its own runtime, which must not
        // start on an async worker of this one.
        let (key_store, snapshot) = tokio::task::block_in_place(|| open_and_load(settings))?;
        let client_auth = settings
            .client_auth
            .as_ref()
            .map(|(ca, names)| (ca.as_path(), names.as_slice()));
        let tls = tls::server_config(
            &settings.tls_certificate,
            &settings.tls_private_key,
            client_auth,
        )?;

        let node = NodeInfo {
            id: settings.node_id.clone(),
            model: format!(
                "Keyhold {} (root of trust: {})",
                env!("CARGO_PKG_VERSION"),
                match settings.root_of_trust {
                    RootOfTrustSettings::File(_) => "root-key file",
                    RootOfTrustSettings::Pkcs11(_) => "PKCS#11 HSM",
                }
            ),
        };
        let domains = snapshot.domain_count();
        let audit = tokio::task::block_in_place(|| start_audit(settings))?;
        let mut state = XksState::new(
            snapshot,
            node,
            settings.allowed_regions.clone(),
            audit,
            settings.time_budget,
        );
        state.body_read_timeout = settings.body_read_timeout;
        state.max_in_flight = settings.max_in_flight;
        state.in_flight = Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight));
        state.default_quota_rps = settings.default_quota_rps;
        let state = Arc::new(state);
        // The admin API gets its own store connection, opened off the async workers as above.
        let key_store_for_control =
            key_store.with_store(tokio::task::block_in_place(|| open_store(settings))?);
        listener::spawn_refresher(state.clone(), key_store, settings.scheduler_interval)
            .context("cannot start the refresh thread")?;

        let address = listen.unwrap_or(settings.listen);
        let listener = TcpListener::bind(address).await.with_context(|| {
            format!("cannot listen on {address}; is another server using it? pass --listen to pick another address")
        })?;
        tracing::info!(
            address = %listener.local_addr().unwrap_or(address),
            domains,
            mutual_tls = settings.client_auth.is_some(),
            "serving the XKS API"
        );
        let admin = match settings.admin_listen {
            Some(address) => {
                let admin_listener = TcpListener::bind(address).await.with_context(|| {
                    format!("cannot listen on {address} for the admin listener; change [admin] listen in keyhold.toml or pass --admin-listen")
                })?;
                tracing::info!(
                    address = %admin_listener.local_addr().unwrap_or(address),
                    "serving the admin API, /metrics, /health and /ping on the admin listener"
                );
                let admin_tls =
                    tls::server_config(&settings.tls_certificate, &settings.tls_private_key, None)?;
                let control = Arc::new(control_plane(settings, key_store_for_control));
                Some((admin_listener, admin_tls, control))
            }
            None => None,
        };
        Ok(Self {
            listener,
            tls,
            state,
            admin,
            max_connections: settings.max_connections,
        })
    }

    /// The bound address.
    pub(super) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until SIGINT or SIGTERM.
    pub(super) async fn run(self) -> anyhow::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        };
        let xks = api::listener::serve(
            self.listener,
            self.tls,
            self.state.clone(),
            self.max_connections,
            until_stopped(stopped.clone()),
        );
        let admin = async {
            let Some((listener, tls, control)) = self.admin else {
                return Ok(());
            };
            let state = admin::AdminState {
                xks: self.state.clone(),
                control,
                openapi: bytes::Bytes::from(crate::control::openapi::document().to_string()),
            };
            let handler =
                move |connection, request| admin::handle(state.clone(), connection, request);
            api::listener::serve_with(listener, tls, 64, until_stopped(stopped.clone()), handler)
                .await
        };
        let (xks, admin) = tokio::join!(xks, admin);
        xks?;
        admin?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Opens the store, creates the health-check key when it is missing and reads the first
/// snapshot.
fn open_and_load(settings: &Settings) -> anyhow::Result<(KeyStore, Snapshot)> {
    let mut key_store = open_key_store(settings)?;
    if key_store.ensure_health_key()? {
        tracing::info!("created the health-check key");
    }
    let snapshot = key_store.load_snapshot()?;
    for problem in &snapshot.problems {
        tracing::error!(problem = %problem, "stored object is unusable");
    }
    Ok((key_store, snapshot))
}

/// Starts the audit writer; the chain head is recorded in the store after each sync.
fn start_audit(settings: &Settings) -> anyhow::Result<AuditLog> {
    let mut store = Store::connect(&settings.storage)
        .with_context(|| format!("cannot open {}", settings.storage))?;
    let node_id = settings.node_id.clone();
    let config = WriterConfig {
        dir: settings.audit.dir.clone(),
        max_file_bytes: settings.audit.max_file_mib.saturating_mul(1024 * 1024),
        rotate_daily: settings.audit.rotate_daily,
        queue_capacity: settings.audit.queue_capacity,
        mode: if settings.audit.fail_open {
            FailureMode::Open
        } else {
            FailureMode::Closed
        },
    };
    audit::writer::start(config, move |head| {
        if let Err(error) = store.record_audit_head(&node_id, head.seq, &head.hash, unix_now()) {
            tracing::warn!(%error, "cannot record the audit chain head in the store");
        }
    })
    .with_context(|| {
        format!(
            "cannot start the audit log in {}",
            settings.audit.dir.display()
        )
    })
}

/// Rejects a data directory that other users can read or enter, because it contains the
/// database, the TLS key and possibly the root key.
fn check_private(dir: &Path) -> anyhow::Result<()> {
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read data directory {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "data directory {dir} has mode {:o}, so other users can reach its files; run `chmod 700 {dir}`",
            mode & 0o777,
            dir = dir.display()
        );
    }
    Ok(())
}

/// Opens the store and the root key named in the settings.
pub(super) fn open_key_store(settings: &Settings) -> anyhow::Result<KeyStore> {
    let root = open_root_of_trust(&settings.root_of_trust, false)?;
    Ok(KeyStore::new(open_store(settings)?, root))
}

fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect(&settings.storage).with_context(|| format!("cannot open {}", settings.storage))
}

/// Creates the control plane over `key_store` with the settings it needs from `keyhold.toml`.
pub(super) fn control_plane(settings: &Settings, key_store: KeyStore) -> Control {
    Control::new(
        key_store,
        ControlSettings {
            xks_endpoint: settings.xks_endpoint.clone(),
            audit_dir: settings.audit.dir.clone(),
        },
    )
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Sends logs to stderr; `RUST_LOG` overrides the configured level.
pub(super) fn init_logging(log: &LogSection) -> anyhow::Result<()> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => EnvFilter::try_new(&log.level)
            .with_context(|| format!("invalid log level {:?} in keyhold.toml", log.level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("cannot set up logging: {error}"))
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stop with SIGINT");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

//! The PKCS#11 adapter: one module, one token, a pool of logged-in sessions, and AES-256-GCM
//! inside the HSM with keys found by label.
//!
//! Calls block, so the XKS data path runs them on the blocking thread pool. A caller waits at
//! most the configured time for a free session. After a device-class error the module is
//! finalized and initialized again on the next call, at most once per second, without
//! restarting the process.

mod error;
mod module;

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use cryptoki::types::AuthPin;

pub use error::HsmError;
use module::Module;

use crate::crypto::{IV_LEN, TAG_LEN};

/// Minimum time between two attempts to reinitialize a failed module.
const REINIT_INTERVAL: Duration = Duration::from_secs(1);

/// How to reach the token.
#[derive(Clone)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token to use.
    pub token_label: String,
    /// User PIN.
    pub pin: AuthPin,
    /// Label of the AES-256 root key.
    pub root_key_label: String,
    /// Number of sessions in the pool.
    pub sessions: usize,
    /// Maximum wait for a free session.
    pub session_wait: Duration,
    /// Whether the data path makes calls on its own threads; see `inline_calls` in the
    /// `[root_of_trust]` settings.
    pub inline_calls: bool,
}

impl std::fmt::Debug for HsmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("root_key_label", &self.root_key_label)
            .field("sessions", &self.sessions)
            .field("session_wait", &self.session_wait)
            .field("inline_calls", &self.inline_calls)
            .finish_non_exhaustive()
    }
}

/// A key inside the HSM.
#[derive(Debug, Clone, Copy)]
pub enum HsmKey<'a> {
    /// The root key that wraps stored secrets.
    Root,
    /// A key found by its label.
    Label(&'a str),
}

/// Attributes of a key object that matter for its protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyProtection {
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
}

/// A connection to one token through one PKCS#11 module.
pub struct Hsm {
    config: HsmConfig,
    /// One permit per session: the data path takes one before it hands a request to the
    /// blocking pool, so requests beyond the pool wait here without occupying a thread.
    callers: std::sync::Arc<tokio::sync::Semaphore>,
    module: RwLock<Option<Module>>,
    last_reinit: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Hsm {
    /// Loads the module, logs in to the token and finds the root key.
    ///
    /// # Errors
    ///
    /// Returns [`HsmError`] saying which step failed: loading the module, finding the token,
    /// logging in or finding the root key.
    pub fn open(config: HsmConfig) -> Result<Self, HsmError> {
        let module = Module::open(&config, false)?;
        Ok(Self {
            callers: std::sync::Arc::new(tokio::sync::Semaphore::new(config.sessions.max(1))),
            config,
            module: RwLock::new(Some(module)),
            last_reinit: Mutex::new(None),
        })
    }

    /// Like [`Hsm::open`], but creates the root key when the token has none.
    ///
    /// # Errors
    ///
    /// Returns [`HsmError`] as [`Hsm::open`] does.
    pub fn open_or_create_root(config: HsmConfig) -> Result<Self, HsmError> {
        let module = Module::open(&config, true)?;
        Ok(Self {
            callers: std::sync::Arc::new(tokio::sync::Semaphore::new(config.sessions.max(1))),
            config,
            module: RwLock::new(Some(module)),
            last_reinit: Mutex::new(None),
        })
    }

    /// Waits until fewer requests than there are sessions are using the module, at most the
    /// configured session wait. The caller holds the permit while its calls run. `None` means
    /// the semaphore was closed, which nothing does, and the session pool still limits calls.
    ///
    /// # Errors
    ///
    /// Returns [`HsmError::Timeout`] when no session frees up within the wait.
    pub async fn reserve_session(
        &self,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, HsmError> {
        let wait = self.config.session_wait;
        // `timeout` polls the acquisition before the timer, so a free permit is taken even
        // with a wait of zero.
        match tokio::time::timeout(wait, self.callers.clone().acquire_owned()).await {
            Ok(permit) => Ok(permit.ok()),
            Err(_) => Err(HsmError::Timeout(wait)),
        }
    }

    /// Returns true when the data path makes PKCS#11 calls on the thread serving the request.
    pub fn inline_calls(&self) -> bool {
        self.config.inline_calls
    }

    /// A description for logs and health reports.
    pub fn describe(&self) -> String {
        format!(
            "PKCS#11 token {:?} via {}",
            self.config.token_label,
            self.config.module.display()
        )
    }

    /// Encrypts with AES-256-GCM inside the HSM; returns the ciphertext and the tag.
    ///
    /// # Errors
    ///
    /// Returns [`HsmError`] on a timeout, a missing key or a PKCS#11 failure.
    pub fn encrypt(
        &self,
        key: HsmKey<'_>,
        iv: &[u8; IV_LEN],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(Vec<u8>, [u8; TAG_LEN]), HsmError> {
        self.with_module(|module| module.encrypt(key, iv, plaintext, aad, self.config.session_wait))
    }

    /// Decrypts with AES-256-GCM inside the HSM.
    ///
    /// # Errors
    ///
    /// Returns [`HsmError::TagMismatch`] when the inputs do not authenticate, or another
    /// [`HsmError`] on a timeout, a missing key or a PKCS#11 failure.
    pub fn decrypt(
        &self,
        key: HsmKey<'_>,
        iv: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        aad: &[u8],
    ) -> Result<crate::crypto::Wiped, HsmError> {
        self.with_module(|module| {
            module.decrypt(key, iv, ciphertext, tag, aad, self.config.session_wait)
        })
    }

    /// Generates a non-extractable, sensitive AES-256 token object with this label.
    ///
    /// # Errors
    ///
    /// Returns [`HsmError`] when generation fails.
    pub fn generate_key(&self, label: &str) -> Result<(), HsmError> {
        self.with_module(|module| module.generate_key(label, self.config.session_wait))
    }

    /// Destroys the token object with this label, if there is one; returns whether it existed.
    ///
    /// # Errors
    ///
    /// Returns [`HsmError`] when the search or the destruction fails.
    pub fn destroy_key(&self, label: &str) -> Result<bool, HsmError> {
        self.with_module(|module| module.destroy_key(label, self.config.session_wait))
    }

    /// Reads `CKA_EXTRACTABLE` and `CKA_SENSITIVE` of a key.
    ///
    /// # Errors
    ///
    /// Returns [`HsmError`] when the key is missing or the attributes cannot be read.
    pub fn key_protection(&self, key: HsmKey<'_>) -> Result<KeyProtection, HsmError> {
        self.with_module(|module| module.key_protection(key, self.config.session_wait))
    }

    /// Runs `operation` on the module, reinitializing it first when an earlier device error
    /// broke it, and marking it broken when `operation` reports a device error.
    fn with_module<T>(
        &self,
        operation: impl FnOnce(&Module) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        {
            let guard = self.module.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(module) = guard.as_ref()
                && !module.is_broken()
            {
                let result = operation(module);
                if let Err(error) = &result
                    && error.is_device_failure()
                {
                    tracing::error!(%error, "HSM device failure; the module will be reinitialized");
                    module.mark_broken();
                }
                return result;
            }
        }
        self.reinitialize()?;
        let guard = self.module.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(module) if !module.is_broken() => operation(module),
            _ => Err(HsmError::Unavailable(
                "the HSM module is not initialized".to_owned(),
            )),
        }
    }

    /// Finalizes the broken module and opens it again, at most once per [`REINIT_INTERVAL`].
    fn reinitialize(&self) -> Result<(), HsmError> {
        {
            let mut last = self
                .last_reinit
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < REINIT_INTERVAL) {
                return Err(HsmError::Unavailable(
                    "the HSM failed and reinitialization is waiting to retry".to_owned(),
                ));
            }
            *last = Some(Instant::now());
        }
        let mut guard = self.module.write().unwrap_or_else(PoisonError::into_inner);
        if guard.as_ref().is_some_and(|module| !module.is_broken()) {
            return Ok(());
        }
        if let Some(old) = guard.take() {
            old.finalize();
        }
        match Module::open(&self.config, false) {
            Ok(module) => {
                tracing::info!(hsm = %self.describe(), "HSM module reinitialized");
                *guard = Some(module);
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "HSM module reinitialization failed");
                Err(error)
            }
        }
    }
}

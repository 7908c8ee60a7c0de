//! One initialized PKCS#11 module: the token's slot, the session pool, the root key handle and
//! a cache of key handles found by label.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;

use super::error::{describe, function_name, return_code_name};
use super::{HsmConfig, HsmError, HsmKey, KeyProtection};
use crate::crypto::{IV_LEN, KEY_LEN, TAG_LEN};

/// GCM tag length in bits, as PKCS#11 takes it. SoftHSMv2 accepts shorter tags, so the length
/// is always set here rather than left to the module.
const TAG_BITS: u64 = (TAG_LEN * 8) as u64;

pub(super) struct Module {
    pkcs11: Pkcs11,
    pool: Mutex<Vec<Session>>,
    available: Condvar,
    root_key: ObjectHandle,
    handles: Mutex<HashMap<String, ObjectHandle>>,
    broken: AtomicBool,
}

/// A session taken from the pool, returned when dropped.
struct PooledSession<'m> {
    module: &'m Module,
    session: Option<Session>,
}

impl std::ops::Deref for PooledSession<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        // The session is only taken out in `drop`.
        self.session
            .as_ref()
            .unwrap_or_else(|| unreachable!("session used after drop"))
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let mut pool = self
                .module
                .pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pool.push(session);
            self.module.available.notify_one();
        }
    }
}

impl Module {
    pub(super) fn open(config: &HsmConfig, create_root: bool) -> Result<Self, HsmError> {
        let load_error = |message: String| HsmError::Load {
            module: config.module.clone(),
            message,
        };
        let pkcs11 = Pkcs11::new(&config.module).map_err(|error| load_error(describe(&error)))?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(error) => {
                return Err(load_error(format!(
                    "{}; check the module's own configuration (for SoftHSMv2: SOFTHSM2_CONF and \
                     its token directory)",
                    describe(&error)
                )));
            }
        }

        let slot = find_slot(&pkcs11, config)?;
        let mut sessions = Vec::with_capacity(config.sessions.max(1));
        for _ in 0..config.sessions.max(1) {
            sessions.push(pkcs11.open_rw_session(slot)?);
        }
        match sessions[0].login(UserType::User, Some(&config.pin)) {
            Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CryptokiError::Pkcs11(rv, _)) => {
                return Err(HsmError::Login {
                    label: config.token_label.clone(),
                    code: return_code_name(rv),
                });
            }
            Err(error) => return Err(error.into()),
        }

        let root_key = match find_key(&sessions[0], &config.root_key_label)? {
            Some(handle) => handle,
            None if create_root => generate(&sessions[0], &config.root_key_label)?,
            None => return Err(HsmError::KeyNotFound(config.root_key_label.clone())),
        };
        Ok(Self {
            pkcs11,
            pool: Mutex::new(sessions),
            available: Condvar::new(),
            root_key,
            handles: Mutex::new(HashMap::new()),
            broken: AtomicBool::new(false),
        })
    }

    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    pub(super) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
    }

    /// Closes every session and finalizes the module.
    pub(super) fn finalize(self) {
        drop(
            self.pool
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if let Err(error) = self.pkcs11.finalize() {
            tracing::warn!(%error, "C_Finalize failed");
        }
    }

    pub(super) fn encrypt(
        &self,
        key: HsmKey<'_>,
        iv: &[u8; IV_LEN],
        plaintext: &[u8],
        aad: &[u8],
        wait: Duration,
    ) -> Result<(Vec<u8>, [u8; TAG_LEN]), HsmError> {
        let session = self.checkout(wait)?;
        let handle = self.handle(&session, key)?;
        let mut iv = *iv;
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())
            .map_err(|error| HsmError::Unavailable(format!("invalid GCM parameters: {error}")))?;
        let mut output = session.encrypt(&Mechanism::AesGcm(params), handle, plaintext)?;
        if output.len() != plaintext.len() + TAG_LEN {
            return Err(HsmError::Unavailable(format!(
                "C_Encrypt returned {} bytes for {} bytes of plaintext",
                output.len(),
                plaintext.len()
            )));
        }
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&output[plaintext.len()..]);
        output.truncate(plaintext.len());
        Ok((output, tag))
    }

    pub(super) fn decrypt(
        &self,
        key: HsmKey<'_>,
        iv: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        aad: &[u8],
        wait: Duration,
    ) -> Result<crate::crypto::Wiped, HsmError> {
        // SoftHSMv2 accepts any IV length and short tags; only the lengths Keyhold makes pass.
        if iv.len() != IV_LEN || tag.len() != TAG_LEN {
            return Err(HsmError::TagMismatch);
        }
        let session = self.checkout(wait)?;
        let handle = self.handle(&session, key)?;
        let mut iv_copy = [0u8; IV_LEN];
        iv_copy.copy_from_slice(iv);
        let params = GcmParams::new(&mut iv_copy, aad, TAG_BITS.into())
            .map_err(|error| HsmError::Unavailable(format!("invalid GCM parameters: {error}")))?;
        let mut input = Vec::with_capacity(ciphertext.len() + TAG_LEN);
        input.extend_from_slice(ciphertext);
        input.extend_from_slice(tag);
        match session.decrypt(&Mechanism::AesGcm(params), handle, &input) {
            Ok(plaintext) => Ok(crate::crypto::Wiped::new(plaintext)),
            // A failed tag check is CKR_ENCRYPTED_DATA_INVALID in the standard but
            // CKR_GENERAL_ERROR in SoftHSMv2. The session is probed to tell a bad input from
            // a failing device.
            Err(CryptokiError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError,
                _,
            )) if session.get_session_info().is_ok() => Err(HsmError::TagMismatch),
            Err(error) => Err(error.into()),
        }
    }

    pub(super) fn generate_key(&self, label: &str, wait: Duration) -> Result<(), HsmError> {
        let session = self.checkout(wait)?;
        let handle = generate(&session, label)?;
        self.cache().insert(label.to_owned(), handle);
        Ok(())
    }

    pub(super) fn destroy_key(&self, label: &str, wait: Duration) -> Result<bool, HsmError> {
        let session = self.checkout(wait)?;
        let handles = session.find_objects(&key_template(label))?;
        for handle in &handles {
            session.destroy_object(*handle)?;
        }
        self.cache().remove(label);
        Ok(!handles.is_empty())
    }

    pub(super) fn key_protection(
        &self,
        key: HsmKey<'_>,
        wait: Duration,
    ) -> Result<KeyProtection, HsmError> {
        let session = self.checkout(wait)?;
        let handle = self.handle(&session, key)?;
        let attributes = session.get_attributes(
            handle,
            &[AttributeType::Extractable, AttributeType::Sensitive],
        )?;
        let mut protection = KeyProtection {
            extractable: true,
            sensitive: false,
        };
        for attribute in attributes {
            match attribute {
                Attribute::Extractable(value) => protection.extractable = value,
                Attribute::Sensitive(value) => protection.sensitive = value,
                _ => {}
            }
        }
        Ok(protection)
    }

    /// Takes a session from the pool, waiting at most `wait`.
    fn checkout(&self, wait: Duration) -> Result<PooledSession<'_>, HsmError> {
        let deadline = Instant::now() + wait;
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(session) = pool.pop() {
                return Ok(PooledSession {
                    module: self,
                    session: Some(session),
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(HsmError::Timeout(wait));
            }
            pool = self
                .available
                .wait_timeout(pool, remaining)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Finds a key's handle once and caches it; searching per request costs up to milliseconds
    /// on a token with many objects.
    fn handle(&self, session: &Session, key: HsmKey<'_>) -> Result<ObjectHandle, HsmError> {
        let label = match key {
            HsmKey::Root => return Ok(self.root_key),
            HsmKey::Label(label) => label,
        };
        if let Some(handle) = self.cache().get(label) {
            return Ok(*handle);
        }
        let handle =
            find_key(session, label)?.ok_or_else(|| HsmError::KeyNotFound(label.to_owned()))?;
        self.cache().insert(label.to_owned(), handle);
        Ok(handle)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, ObjectHandle>> {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn find_slot(pkcs11: &Pkcs11, config: &HsmConfig) -> Result<Slot, HsmError> {
    for slot in pkcs11.get_slots_with_initialized_token()? {
        let info = pkcs11.get_token_info(slot)?;
        if info.label().trim_end() == config.token_label {
            return Ok(slot);
        }
    }
    Err(HsmError::TokenNotFound {
        label: config.token_label.clone(),
        module: config.module.clone(),
    })
}

fn key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, HsmError> {
    let handles = session.find_objects(&key_template(label))?;
    match handles.as_slice() {
        [] => Ok(None),
        [handle] => Ok(Some(*handle)),
        _ => Err(HsmError::Pkcs11 {
            function: function_name(Function::FindObjects),
            code: format!(
                "{} objects labelled {label:?}; labels must be unique",
                handles.len()
            ),
            rv: RvError::GeneralError,
        }),
    }
}

/// Generates a non-extractable, sensitive AES-256 token object.
fn generate(session: &Session, label: &str) -> Result<ObjectHandle, HsmError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen((KEY_LEN as u64).into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    Ok(session.generate_key(&Mechanism::AesKeyGen, &template)?)
}

//! HSM errors, which keep the PKCS#11 function and return code for the log.

use std::path::PathBuf;
use std::time::Duration;

use cryptoki::context::Function;
use cryptoki::error::{Error as CryptokiError, RvError};

/// Failure of an HSM operation.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The PKCS#11 module could not be loaded or initialized.
    #[error("cannot load PKCS#11 module {module}: {message}")]
    Load {
        /// The module path.
        module: PathBuf,
        /// The cause.
        message: String,
    },
    /// No initialized token has the configured label.
    #[error(
        "no initialized token labelled {label:?} in PKCS#11 module {module}; check token_label, or create the token (for SoftHSMv2: softhsm2-util --init-token --free --label {label})"
    )]
    TokenNotFound {
        /// The configured label.
        label: String,
        /// The module path.
        module: PathBuf,
    },
    /// `C_Login` failed, usually because of a wrong PIN.
    #[error("login to token {label:?} failed with {code}; check the PIN")]
    Login {
        /// The token label.
        label: String,
        /// The PKCS#11 return code, such as `CKR_PIN_INCORRECT`.
        code: String,
    },
    /// A PKCS#11 function returned an error.
    #[error("{function} returned {code}")]
    Pkcs11 {
        /// The PKCS#11 function, such as `C_Encrypt`.
        function: String,
        /// The PKCS#11 return code, such as `CKR_DEVICE_ERROR`.
        code: String,
        /// The return value, for classification.
        rv: RvError,
    },
    /// No key object has the label.
    #[error("no key labelled {0:?} in the token")]
    KeyNotFound(String),
    /// No session became free in time.
    #[error("no free HSM session within {0:?}")]
    Timeout(Duration),
    /// The GCM tag did not verify.
    #[error("authentication tag did not verify in the HSM")]
    TagMismatch,
    /// The module is broken and could not be reinitialized yet.
    #[error("{0}")]
    Unavailable(String),
}

impl HsmError {
    /// Whether the error means the device or the module state is gone, so the module must be
    /// reinitialized before further use. An invalid object handle counts: handles are found once
    /// and cached, so it means the token's objects changed under the running process (SoftHSMv2
    /// answers this way when its token directory disappears).
    pub fn is_device_failure(&self) -> bool {
        match self {
            Self::Pkcs11 { rv, .. } => matches!(
                rv,
                RvError::DeviceError
                    | RvError::DeviceMemory
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::TokenNotRecognized
                    | RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::CryptokiNotInitialized
                    | RvError::UserNotLoggedIn
                    | RvError::ObjectHandleInvalid
                    | RvError::KeyHandleInvalid
            ),
            Self::Unavailable(_) => true,
            _ => false,
        }
    }
}

impl From<CryptokiError> for HsmError {
    fn from(error: CryptokiError) -> Self {
        match error {
            CryptokiError::Pkcs11(rv, function) => Self::Pkcs11 {
                function: function_name(function),
                code: return_code_name(rv),
                rv,
            },
            other => Self::Unavailable(format!("PKCS#11 call failed: {other}")),
        }
    }
}

/// Describes a cryptoki error with PKCS#11 names, such as `C_Initialize returned
/// CKR_GENERAL_ERROR`.
pub(super) fn describe(error: &CryptokiError) -> String {
    match error {
        CryptokiError::Pkcs11(rv, function) => {
            format!(
                "{} returned {}",
                function_name(*function),
                return_code_name(*rv)
            )
        }
        other => other.to_string(),
    }
}

/// The C name of a PKCS#11 function, such as `C_Encrypt`.
pub(super) fn function_name(function: Function) -> String {
    format!("C_{function:?}")
}

/// The `CKR_` name of a return value, such as `CKR_PIN_INCORRECT`.
pub(super) fn return_code_name(rv: RvError) -> String {
    let mut name = String::from("CKR");
    for c in format!("{rv:?}").chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_pkcs11_spelling() {
        assert_eq!(return_code_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(return_code_name(RvError::DeviceError), "CKR_DEVICE_ERROR");
        assert_eq!(function_name(Function::Encrypt), "C_Encrypt");
    }

    #[test]
    fn device_errors_require_reinitialization() {
        let device: HsmError =
            CryptokiError::Pkcs11(RvError::DeviceRemoved, Function::Encrypt).into();
        assert!(device.is_device_failure());
        let data: HsmError =
            CryptokiError::Pkcs11(RvError::EncryptedDataInvalid, Function::Decrypt).into();
        assert!(!data.is_device_failure());
        assert!(!HsmError::Timeout(Duration::from_millis(1)).is_device_failure());
    }
}

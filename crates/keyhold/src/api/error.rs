//! The XKS error: one of the error names of the XKS proxy API, its HTTP status and a message.
//!
//! Every failure on the XKS listener ends as an [`XksError`]; internal error types convert into
//! it in one place each, so the mapping from cause to wire name is easy to audit.

use hyper::StatusCode;

use crate::auth::AuthError;
use crate::service::ServiceError;

/// Largest `errorMessage` sent, in characters. The XKS API requires fewer than 512.
const MAX_MESSAGE_LEN: usize = 511;

/// Error names defined by the XKS proxy API v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorName {
    /// A parameter is missing, malformed or out of range.
    Validation,
    /// The key or its domain is disabled.
    InvalidState,
    /// The ciphertext, IV, AAD, metadata or tag is wrong or corrupt.
    InvalidCiphertext,
    /// The key does not allow the requested operation.
    InvalidKeyUsage,
    /// The SigV4 signature did not verify.
    AuthenticationFailed,
    /// Secondary authorization denied the request.
    AccessDenied,
    /// No key has the requested external key id.
    KeyNotFound,
    /// The URI path is not one Keyhold serves.
    InvalidUriPath,
    /// The request rate is above the allowed quota.
    Throttling,
    /// The operation or the input size is not supported.
    UnsupportedOperation,
    /// A dependency such as the HSM or the database did not respond in time.
    DependencyTimeout,
    /// Any other failure inside Keyhold.
    Internal,
}

impl ErrorName {
    /// Every error name, in the order of the XKS API's error table.
    pub const ALL: [Self; 12] = [
        Self::Validation,
        Self::InvalidState,
        Self::InvalidCiphertext,
        Self::InvalidKeyUsage,
        Self::AuthenticationFailed,
        Self::AccessDenied,
        Self::KeyNotFound,
        Self::InvalidUriPath,
        Self::Throttling,
        Self::UnsupportedOperation,
        Self::DependencyTimeout,
        Self::Internal,
    ];

    /// The `errorName` string sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "ValidationException",
            Self::InvalidState => "InvalidStateException",
            Self::InvalidCiphertext => "InvalidCiphertextException",
            Self::InvalidKeyUsage => "InvalidKeyUsageException",
            Self::AuthenticationFailed => "AuthenticationFailedException",
            Self::AccessDenied => "AccessDeniedException",
            Self::KeyNotFound => "KeyNotFoundException",
            Self::InvalidUriPath => "InvalidUriPathException",
            Self::Throttling => "ThrottlingException",
            Self::UnsupportedOperation => "UnsupportedOperationException",
            Self::DependencyTimeout => "DependencyTimeoutException",
            Self::Internal => "InternalException",
        }
    }

    /// The HTTP status the XKS API assigns to this error name.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Validation
            | Self::InvalidState
            | Self::InvalidCiphertext
            | Self::InvalidKeyUsage => StatusCode::BAD_REQUEST,
            Self::AuthenticationFailed => StatusCode::UNAUTHORIZED,
            Self::AccessDenied => StatusCode::FORBIDDEN,
            Self::KeyNotFound | Self::InvalidUriPath => StatusCode::NOT_FOUND,
            Self::Throttling => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedOperation => StatusCode::NOT_IMPLEMENTED,
            Self::DependencyTimeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error returned to an XKS client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XksError {
    name: ErrorName,
    message: String,
}

impl XksError {
    /// Creates an error; the message is cleaned to printable ASCII and cut to 511 characters.
    pub fn new(name: ErrorName, message: impl AsRef<str>) -> Self {
        Self {
            name,
            message: clean_message(message.as_ref()),
        }
    }

    /// Shorthand for a `ValidationException`.
    pub fn validation(message: impl AsRef<str>) -> Self {
        Self::new(ErrorName::Validation, message)
    }

    /// Shorthand for an `InternalException` with a generic message; the cause belongs in the log.
    pub fn internal() -> Self {
        Self::new(
            ErrorName::Internal,
            "internal error in the key manager; the operator can find the cause in the server log",
        )
    }

    /// The error name.
    pub fn name(&self) -> ErrorName {
        self.name
    }

    /// The message sent as `errorMessage`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Serializes the single-line JSON body `{"errorName": ..., "errorMessage": ...}`.
    pub fn to_json(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "errorName": self.name.as_str(),
            "errorMessage": self.message,
        });
        body.to_string().into_bytes()
    }
}

impl std::fmt::Display for XksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name.as_str(), self.message)
    }
}

impl From<ServiceError> for XksError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::DomainDisabled(_) => Self::new(
                ErrorName::InvalidState,
                "this key store is disabled in the key manager; its administrator can enable it",
            ),
            ServiceError::KeyNotFound(key_id) => Self::new(
                ErrorName::KeyNotFound,
                format!("no key with id {key_id} exists in this key store"),
            ),
            ServiceError::KeyDisabled(key_id) => Self::new(
                ErrorName::InvalidState,
                format!("key {key_id} is disabled in the key manager"),
            ),
            ServiceError::KeyPendingDeletion(key_id) => Self::new(
                ErrorName::InvalidState,
                format!("key {key_id} is pending deletion in the key manager"),
            ),
            ServiceError::VersionUnusable {
                key_id,
                version,
                state,
            } => Self::new(
                ErrorName::InvalidState,
                format!(
                    "version {version} of key {key_id}, which made this ciphertext, is {state}"
                ),
            ),
            ServiceError::UsageNotAllowed { key_id, operation } => Self::new(
                ErrorName::InvalidKeyUsage,
                format!("key {key_id} does not allow {operation}"),
            ),
            ServiceError::AccessDenied(reason) => Self::new(ErrorName::AccessDenied, reason),
            ServiceError::InvalidCiphertext(reason) => {
                Self::new(ErrorName::InvalidCiphertext, reason)
            }
            ServiceError::TooLarge(message) => Self::new(ErrorName::UnsupportedOperation, message),
            ServiceError::DependencyTimeout(_) => Self::new(
                ErrorName::DependencyTimeout,
                "the key manager's HSM did not answer in time; retry",
            ),
            ServiceError::Internal(_) => Self::internal(),
        }
    }
}

impl From<&AuthError> for XksError {
    fn from(error: &AuthError) -> Self {
        Self::new(ErrorName::AuthenticationFailed, error.to_string())
    }
}

/// Replaces every byte outside 0x20..=0x7E with `?` and truncates to the allowed length.
fn clean_message(message: &str) -> String {
    message
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(MAX_MESSAGE_LEN)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_error_table() {
        let expected = [
            ("ValidationException", 400),
            ("InvalidStateException", 400),
            ("InvalidCiphertextException", 400),
            ("InvalidKeyUsageException", 400),
            ("AuthenticationFailedException", 401),
            ("AccessDeniedException", 403),
            ("KeyNotFoundException", 404),
            ("InvalidUriPathException", 404),
            ("ThrottlingException", 429),
            ("UnsupportedOperationException", 501),
            ("DependencyTimeoutException", 503),
            ("InternalException", 500),
        ];
        for (name, (wire, status)) in ErrorName::ALL.iter().zip(expected) {
            assert_eq!(name.as_str(), wire);
            assert_eq!(name.status().as_u16(), status, "status of {wire}");
        }
    }

    #[test]
    fn message_is_printable_ascii_and_short() {
        let error = XksError::validation(format!("caf\u{e9}\n{}", "x".repeat(600)));
        assert!(error.message().bytes().all(|b| (0x20..=0x7e).contains(&b)));
        assert_eq!(error.message().len(), 511);
        assert!(error.message().starts_with("caf??"));
    }

    #[test]
    fn json_body_is_single_line() {
        let body = String::from_utf8(XksError::internal().to_json()).expect("utf-8");
        assert!(!body.contains('\n'));
        assert!(body.starts_with(r#"{"errorMessage":"#) || body.starts_with(r#"{"errorName":"#));
        assert!(body.contains(r#""errorName":"InternalException""#));
    }
}

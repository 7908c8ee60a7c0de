//! Authentication of XKS requests: AWS Signature Version 4 with the `kms-xks-proxy` service.
//!
//! This module verifies signatures and signs requests (for tests and the load generator). It does
//! not decide which credentials belong to which domain; the caller passes a lookup function.

pub mod sigv4;

pub use sigv4::{AuthError, Sigv4Secret};

//! Keyhold: an external key manager that serves the AWS KMS External Key Store (XKS) proxy API.
//!
//! Modules follow the path of a request: [`api`] (TLS listener, routing, wire format, XKS errors)
//! → [`auth`] (SigV4) → [`service`] (one file per XKS operation) → [`keystore`] (metadata, the
//! snapshot and encryption at rest) → [`crypto`]. [`config`] reads `keyhold.toml`; [`cli`] is the
//! command line of the `keyhold` binary.

pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod crypto;
pub mod files;
pub mod hsm;
pub mod keystore;
pub mod kms_setup;
pub mod policy;
pub mod protect;
pub mod service;

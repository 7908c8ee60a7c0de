//! `keyhold init`: creates a data directory without ever overwriting an existing file.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::api::tls;
use crate::config::{self, PinSource, Settings};
use crate::keystore::KeyStore;
use crate::keystore::root::{FileRootKey, open_root_of_trust};
use crate::keystore::store::{StorageTarget, Store};

use hyper::Method;

use super::{InitArgs, output};
use crate::control::{ApiRequest, Principal};

/// Files and folders `init` creates; if any exists, `init` changes nothing.
const CREATED_ENTRIES: [&str; 4] = [config::CONFIG_FILE_NAME, "root.key", "keyhold.db", "tls"];

pub(super) fn run(dir: &Path, args: &InitArgs) -> anyhow::Result<()> {
    let root = match (&args.pkcs11_module, &args.token_label) {
        (Some(module), Some(token_label)) => {
            let pin = match (&args.pin_env, &args.pin_file) {
                (Some(variable), None) => PinSource::Env(variable.clone()),
                (None, Some(path)) => PinSource::File(std::path::absolute(path)?),
                _ => bail!("an HSM root of trust needs --pin-env VAR or --pin-file FILE"),
            };
            RootChoice::Pkcs11(config::pkcs11_root_section(
                module,
                token_label,
                &pin,
                &args.root_key_label,
            ))
        }
        _ => RootChoice::File,
    };
    initialize(dir, &root)?;
    let token = first_operator_token(dir)?;
    output::print(&format!(
        "Initialized Keyhold data directory {dir}\n\
         \n\
         Admin API token of principal \"operator\" (shown only now; store it in a secret \
         manager):\n  \
           {token}\n\
         \n\
         Next steps:\n  \
           keyhold --data-dir {dir} domain create acme\n  \
           keyhold --data-dir {dir} credential create acme\n  \
           keyhold --data-dir {dir} key create acme --key-id my-key\n  \
           keyhold --data-dir {dir} serve\n",
        dir = dir.display()
    ));
    Ok(())
}

/// Creates the principal `operator` with the operator role and a token for it, through the
/// same admin API code as every other change, and returns the token.
fn first_operator_token(dir: &Path) -> anyhow::Result<String> {
    let settings = Settings::load(dir)?;
    let control = super::serve::control_plane(&settings, super::serve::open_key_store(&settings)?);
    let principal = Principal::local(super::events::principal());
    let call = |path: &str, body: serde_json::Value| {
        let response = control.dispatch(
            &principal,
            &ApiRequest {
                method: Method::POST,
                path: path.to_owned(),
                query: String::new(),
                body: body.to_string().into_bytes(),
            },
        );
        if response.status.is_success() {
            Ok(response.body)
        } else {
            Err(anyhow::anyhow!(
                "cannot create the first operator token: {}",
                response.body["error"]["message"]
            ))
        }
    };
    call(
        "/v1/principals",
        serde_json::json!({ "name": "operator", "roles": [{ "role": "operator" }] }),
    )?;
    let created = call(
        "/v1/principals/operator/tokens",
        serde_json::json!({ "description": "first operator token, made by keyhold init" }),
    )?;
    created["token"]
        .as_str()
        .map(str::to_owned)
        .context("the token response has no token")
}

/// Where `init` puts the root key.
pub(super) enum RootChoice {
    /// A new root-key file in the data directory.
    File,
    /// An HSM, described by this `[root_of_trust]` section.
    Pkcs11(String),
}

/// Creates the data directory's files: root key, TLS certificates, configuration, database
/// and the health-check keys. When a step fails, the files already created are removed, so
/// `init` can simply run again.
pub(super) fn initialize(dir: &Path, root: &RootChoice) -> anyhow::Result<()> {
    for entry in CREATED_ENTRIES {
        let path = dir.join(entry);
        if path.exists() {
            bail!(
                "data directory {} is already initialized ({} exists); nothing was changed",
                dir.display(),
                path.display()
            );
        }
    }
    let created_dir = !dir.exists();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    // An existing directory gets the same protection as a new one.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "cannot restrict data directory {} to its owner",
            dir.display()
        )
    })?;

    let result = create_files(dir, root);
    if result.is_err() {
        remove_created(dir, created_dir);
    }
    result
}

fn create_files(dir: &Path, root: &RootChoice) -> anyhow::Result<()> {
    let tls_dir = dir.join("tls");
    DirBuilder::new()
        .mode(0o700)
        .create(&tls_dir)
        .with_context(|| format!("cannot create {}", tls_dir.display()))?;

    let config_text = match root {
        RootChoice::File => {
            FileRootKey::create(&dir.join("root.key"))?;
            config::TEMPLATE.to_owned()
        }
        RootChoice::Pkcs11(section) => config::TEMPLATE.replace(config::FILE_ROOT_SECTION, section),
    };
    tls::write_dev_certificates(&tls_dir)?;
    write_config(&dir.join(config::CONFIG_FILE_NAME), &config_text)?;

    let settings = Settings::load(dir)?;
    // SQLite gives its journal files the database file's mode, so creating it private first
    // keeps all three private.
    if let StorageTarget::Sqlite(path) = &settings.storage {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create database {}", path.display()))?;
    }
    let store = Store::connect(&settings.storage)
        .with_context(|| format!("cannot create {}", settings.storage))?;
    let root = open_root_of_trust(&settings.root_of_trust, true)?;
    KeyStore::new(store, root).ensure_health_key()?;
    Ok(())
}

/// Removes what a failed `init` created; every entry was checked to be absent before.
fn remove_created(dir: &Path, created_dir: bool) {
    for entry in [
        "root.key",
        config::CONFIG_FILE_NAME,
        "keyhold.db",
        "keyhold.db-wal",
        "keyhold.db-shm",
    ] {
        let _ = fs::remove_file(dir.join(entry));
    }
    let _ = fs::remove_dir_all(dir.join("tls"));
    if created_dir {
        let _ = fs::remove_dir(dir);
    }
}

fn write_config(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::files::write_new(path, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot create {}", path.display()))
}

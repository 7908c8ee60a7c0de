//! `keyhold init`: creates a data directory without ever overwriting an existing file.

use std::fs::{self, DirBuilder};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::api::tls;
use crate::config::{self, Settings};
use crate::keystore::KeyStore;
use crate::keystore::root::FileRootKey;
use crate::keystore::store::Store;

use super::output;

/// Files and folders `init` creates; if any exists, `init` changes nothing.
const CREATED_ENTRIES: [&str; 4] = [config::CONFIG_FILE_NAME, "root.key", "keyhold.db", "tls"];

pub(super) fn run(dir: &Path) -> anyhow::Result<()> {
    initialize(dir)?;
    output::print(&format!(
        "Initialized Keyhold data directory {dir}\n\
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

/// Creates the data directory's files: root key, TLS certificates, configuration, database
/// and the health-check key.
pub(super) fn initialize(dir: &Path) -> anyhow::Result<()> {
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
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let tls_dir = dir.join("tls");
    DirBuilder::new()
        .mode(0o700)
        .create(&tls_dir)
        .with_context(|| format!("cannot create {}", tls_dir.display()))?;

    FileRootKey::create(&dir.join("root.key"))?;
    tls::write_dev_certificates(&tls_dir)?;
    write_config(&dir.join(config::CONFIG_FILE_NAME))?;

    let settings = Settings::load(dir)?;
    let store = Store::open(&settings.database_path).with_context(|| {
        format!(
            "cannot create database {}",
            settings.database_path.display()
        )
    })?;
    let root = FileRootKey::load(&settings.root_key_path)?;
    KeyStore::new(store, Box::new(root)).ensure_health_key()?;
    Ok(())
}

fn write_config(path: &Path) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(config::TEMPLATE.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

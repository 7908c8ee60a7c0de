//! `keyhold backup create`, `restore` and `inspect`: the options, reading the passphrase or key
//! file, and the messages. The format and the work are in `keystore::backup`.

use std::fs;
use std::io::IsTerminal as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use zeroize::Zeroizing;

use crate::config::Settings;
use crate::crypto::KEY_LEN;
use crate::keystore::backup::{
    self, Argon2Params, BackupError, CreateOptions, KeySource, Progress, Summary,
};
use crate::keystore::format_time;

use super::serve::open_key_store;
use super::{OutputArgs, OutputFormat, output};

/// Minimum passphrase length that `backup create` accepts, in characters.
const MIN_PASSPHRASE_CHARS: usize = 12;

/// Minimum number of keys for which a progress bar is shown.
const PROGRESS_MIN_KEYS: u64 = 100;

#[derive(Debug, Subcommand)]
pub(super) enum BackupCommand {
    /// Write an encrypted backup of all domains, or of one, with their credentials, keys and
    /// key material
    Create {
        /// Backup file to create with mode 0600; an existing file is never overwritten
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// Back up only this domain [default: all domains]
        #[arg(long, value_name = "ID")]
        domain: Option<String>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Restore a backup into this data directory, wrapping its secrets under this root of trust
    Restore {
        /// Backup file
        file: PathBuf,
        /// Skip domains, credentials and keys that exist already and restore the rest
        /// [default: restore nothing when anything exists]
        #[arg(long)]
        skip_existing: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Print what a backup contains (counts, creation time, source node), never secrets
    Inspect {
        /// Backup file
        file: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// Source of the backup key: exactly one of a passphrase or a key file.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub(super) struct KeyArgs {
    /// Environment variable holding the backup passphrase (at least 12 characters for create)
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
    /// File holding the backup passphrase on its first line, readable by its owner only
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// File of exactly 32 random bytes used as the backup key, readable by its owner only
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
}

pub(super) fn run(dir: &Path, command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Create {
            output,
            domain,
            key,
        } => create(dir, &output, domain, &key),
        BackupCommand::Restore {
            file,
            skip_existing,
            key,
        } => restore(dir, &file, skip_existing, &key),
        BackupCommand::Inspect { file, key, output } => inspect(&file, &key, output.output),
    }
}

fn create(dir: &Path, path: &Path, domain: Option<String>, key: &KeyArgs) -> anyhow::Result<()> {
    let settings = Settings::load(dir)?;
    if path.exists() {
        bail!(
            "backup file {} already exists; choose another name, nothing was written",
            path.display()
        );
    }
    let source = read_key_source(key, true)?;
    let mut key_store = open_key_store(&settings)?;
    let options = CreateOptions {
        domain,
        source_node: settings.node_id.clone(),
        argon2: Argon2Params::RFC_9106_SECOND,
    };

    let progress = KeyProgress::new("Backing up");
    let (bytes, summary) = backup::create(&mut key_store, &options, &source, &progress)?;
    progress.bar.finish_and_clear();
    backup::write_backup_file(path, &bytes)?;

    output::print(&format!(
        "Wrote backup {}: {}\n",
        path.display(),
        counts(
            summary.domains.len(),
            summary.total(|domain| domain.credentials),
            summary.total(|domain| domain.keys),
            summary.total(|domain| domain.versions)
        )
    ));
    let hsm_keys = summary.total(|domain| domain.hsm_keys);
    if hsm_keys > 0 {
        output::note(&format!(
            "{hsm_keys} HSM-resident keys are in the backup as references to their HSM objects \
             only, because their material never leaves the HSM. Back up those objects with the \
             HSM vendor's own backup tools."
        ));
    }
    Ok(())
}

fn restore(dir: &Path, path: &Path, skip_existing: bool, key: &KeyArgs) -> anyhow::Result<()> {
    let settings = Settings::load(dir)?;
    let mut key_store = open_key_store(&settings)?;
    let bytes =
        fs::read(path).with_context(|| format!("cannot read backup file {}", path.display()))?;
    let source = read_key_source(key, false)?;
    let contents = backup::open(&bytes, &source)
        .with_context(|| format!("cannot open backup file {}", path.display()))?;

    let progress = KeyProgress::new("Restoring");
    let result = backup::restore(&mut key_store, &contents, skip_existing, &progress);
    progress.bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(error @ BackupError::Conflicts(_)) => bail!(
            "{error}\nRestore into a data directory without these objects, or pass \
             --skip-existing to restore everything else and skip them."
        ),
        Err(error) => return Err(error.into()),
    };

    let summary = contents.summary();
    let mut text = String::new();
    for skipped in &report.skipped {
        text.push_str(&format!("Skipped: {skipped}\n"));
    }
    text.push_str(&format!(
        "Restored {} from {} (made {} on node {})\n",
        counts(
            report.domains,
            report.credentials,
            report.keys,
            report.versions
        ),
        path.display(),
        format_time(summary.created_at),
        summary.source_node
    ));
    output::print(&text);
    Ok(())
}

fn inspect(path: &Path, key: &KeyArgs, format: OutputFormat) -> anyhow::Result<()> {
    let bytes =
        fs::read(path).with_context(|| format!("cannot read backup file {}", path.display()))?;
    let source = read_key_source(key, false)?;
    let summary = backup::open(&bytes, &source)
        .with_context(|| format!("cannot open backup file {}", path.display()))?
        .summary();

    let domains_json: Vec<_> = summary
        .domains
        .iter()
        .map(|domain| {
            json!({
                "id": domain.id,
                "credentials": domain.credentials,
                "revokedCredentials": domain.revoked_credentials,
                "keys": domain.keys,
                "hsmKeys": domain.hsm_keys,
                "versions": domain.versions,
            })
        })
        .collect();
    let json = json!({
        "createdAt": format_time(summary.created_at),
        "sourceNode": summary.source_node,
        "keyholdVersion": summary.keyhold_version,
        "domainFilter": summary.domain_filter,
        "keyDerivation": summary.derivation.to_string(),
        "domains": summary.domains.len(),
        "credentials": summary.total(|domain| domain.credentials),
        "revokedCredentials": summary.total(|domain| domain.revoked_credentials),
        "keys": summary.total(|domain| domain.keys),
        "hsmKeys": summary.total(|domain| domain.hsm_keys),
        "versions": summary.total(|domain| domain.versions),
        "perDomain": domains_json,
    });
    output::print_record(format, &summary_fields(&summary), &json);
    if format == OutputFormat::Text && !summary.domains.is_empty() {
        let rows: Vec<Vec<String>> = summary
            .domains
            .iter()
            .map(|domain| {
                vec![
                    domain.id.clone(),
                    domain.credentials.to_string(),
                    domain.keys.to_string(),
                    domain.hsm_keys.to_string(),
                    domain.versions.to_string(),
                ]
            })
            .collect();
        output::print("\n");
        output::print_table(
            format,
            &["DOMAIN", "CREDENTIALS", "KEYS", "HSM KEYS", "VERSIONS"],
            &rows,
            &json,
        );
    }
    Ok(())
}

fn summary_fields(summary: &Summary) -> Vec<(&'static str, String)> {
    vec![
        ("created", format_time(summary.created_at)),
        ("source node", summary.source_node.clone()),
        ("Keyhold version", summary.keyhold_version.clone()),
        (
            "scope",
            summary
                .domain_filter
                .as_ref()
                .map_or_else(|| "all domains".to_owned(), |id| format!("domain {id}")),
        ),
        ("key derivation", summary.derivation.to_string()),
        ("domains", summary.domains.len().to_string()),
        (
            "credentials",
            format!(
                "{} ({} revoked)",
                summary.total(|domain| domain.credentials),
                summary.total(|domain| domain.revoked_credentials)
            ),
        ),
        (
            "keys",
            format!(
                "{} ({} HSM-resident, as references)",
                summary.total(|domain| domain.keys),
                summary.total(|domain| domain.hsm_keys)
            ),
        ),
        (
            "key versions",
            summary.total(|domain| domain.versions).to_string(),
        ),
    ]
}

/// Formats object counts such as `1 domain, 2 credentials, 1 key and 2 key versions`.
fn counts(domains: usize, credentials: usize, keys: usize, versions: usize) -> String {
    let noun = |count: usize, singular: &str| {
        let suffix = if count == 1 { "" } else { "s" };
        format!("{count} {singular}{suffix}")
    };
    format!(
        "{}, {}, {} and {}",
        noun(domains, "domain"),
        noun(credentials, "credential"),
        noun(keys, "key"),
        noun(versions, "key version")
    )
}

/// Reads the passphrase or key file named by the options. `creating` enforces the minimum
/// passphrase length, which only applies to new backups.
fn read_key_source(args: &KeyArgs, creating: bool) -> anyhow::Result<KeySource> {
    if let Some(path) = &args.key_file {
        return read_key_file(path);
    }
    let passphrase = match (&args.passphrase_env, &args.passphrase_file) {
        (Some(variable), _) => Zeroizing::new(std::env::var(variable).map_err(|_| {
            anyhow::anyhow!(
                "environment variable {variable} with the backup passphrase is not set or is \
                 not valid UTF-8"
            )
        })?),
        (None, Some(path)) => read_passphrase_file(path)?,
        (None, None) => {
            bail!("give the backup key with --passphrase-env, --passphrase-file or --key-file")
        }
    };
    if passphrase.is_empty() {
        bail!("the backup passphrase is empty");
    }
    if creating && passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        bail!(
            "the backup passphrase has {} characters; use at least {MIN_PASSPHRASE_CHARS}",
            passphrase.chars().count()
        );
    }
    Ok(KeySource::Passphrase(passphrase))
}

fn read_passphrase_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    check_owner_only(path, "passphrase file")?;
    let mut text = Zeroizing::new(
        fs::read_to_string(path)
            .with_context(|| format!("cannot read passphrase file {}", path.display()))?,
    );
    let first_line_len = text.split(['\n', '\r']).next().map_or(0, str::len);
    text.truncate(first_line_len);
    Ok(text)
}

fn read_key_file(path: &Path) -> anyhow::Result<KeySource> {
    check_owner_only(path, "key file")?;
    let bytes = Zeroizing::new(
        fs::read(path).with_context(|| format!("cannot read key file {}", path.display()))?,
    );
    if bytes.len() != KEY_LEN {
        bail!(
            "key file {} must contain exactly {KEY_LEN} bytes, found {}; create one with \
             `(umask 077; head -c {KEY_LEN} /dev/urandom > {})`",
            path.display(),
            bytes.len(),
            path.display()
        );
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&bytes);
    Ok(KeySource::KeyFile(key))
}

/// Rejects a file that users other than its owner can read or write.
fn check_owner_only(path: &Path, what: &str) -> anyhow::Result<()> {
    let mode = fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{what} {} has mode {:o}, so other users can access it; run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// A progress bar on stderr, counted in keys. It stays hidden when stderr is not a terminal or
/// when there are fewer than [`PROGRESS_MIN_KEYS`] keys.
struct KeyProgress {
    bar: ProgressBar,
}

impl KeyProgress {
    fn new(message: &'static str) -> Self {
        let bar = ProgressBar::hidden();
        if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} keys ({eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message);
        Self { bar }
    }
}

impl Progress for KeyProgress {
    fn start(&self, keys: u64) {
        self.bar.set_length(keys);
        if keys >= PROGRESS_MIN_KEYS && std::io::stderr().is_terminal() {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn key_done(&self) {
        self.bar.inc(1);
    }
}

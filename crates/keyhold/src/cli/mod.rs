//! The `keyhold` command line: argument definitions and dispatch.
//!
//! Commands print results to stdout and errors to stderr. Exit codes: 0 success, 1 a command
//! failed, 2 invalid arguments (from clap).

mod admin;
mod audit;
mod backup;
mod demo;
mod events;
mod init;
mod lifecycle;
mod output;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Data directory used when neither `--data-dir` nor `KEYHOLD_DATA_DIR` is given.
const DEFAULT_DATA_DIR: &str = "keyhold-data";

/// Keyhold: an external key manager for the AWS KMS External Key Store (XKS) proxy API.
#[derive(Debug, Parser)]
#[command(name = "keyhold", version, about, max_term_width = 100)]
pub struct Cli {
    /// Data directory holding keyhold.toml, the root key, the database and TLS files
    /// [default: ./keyhold-data; `demo` creates a fresh directory]
    #[arg(long, env = "KEYHOLD_DATA_DIR", global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory: root key, database, TLS certificate and keyhold.toml
    Init(InitArgs),
    /// Serve the XKS API over TLS
    Serve {
        /// Listen address, overriding keyhold.toml [default: 127.0.0.1:8443]
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Manage domains (tenants with their own URI path prefix)
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Manage a domain's SigV4 credentials
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Manage a domain's keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage secondary authorization policies on the XKS request metadata
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Back up, restore and inspect encrypted backups of domains, credentials and keys
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Verify the audit log's hash chain
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Set up a fresh demo (domain, credential, key), serve it and print a curl command
    Demo {
        /// Listen address [default: 127.0.0.1:8443]
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
}

#[derive(Debug, Subcommand)]
enum DomainCommand {
    /// Create a domain
    Create {
        /// Domain id: 1 to 63 characters of a-z, 0-9 and '-'
        id: String,
        /// URI path prefix before /kms/xks/v1 [default: /domains/<ID>]
        #[arg(long, value_name = "PREFIX")]
        uri_prefix: Option<String>,
        /// Name shown to people [default: the id]
        #[arg(long)]
        display_name: Option<String>,
        /// Request quota in requests per second; excess requests get ThrottlingException [default: no quota]
        #[arg(long, value_name = "RPS")]
        quota: Option<u32>,
    },
    /// List domains
    List(OutputArgs),
    /// Show one domain
    Show {
        /// Domain id
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Turn the kill switch on: every request of the domain fails with InvalidStateException
    Disable {
        /// Domain id
        id: String,
    },
    /// Turn the kill switch off again
    Enable {
        /// Domain id
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum CredentialCommand {
    /// Create a SigV4 credential and print it once, as the AWS KMS proxy configuration file
    Create {
        /// Domain id
        domain: String,
    },
    /// List a domain's credentials (ids and times, never secrets)
    List {
        /// Domain id
        domain: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke a credential; running servers reject it within a second
    Revoke {
        /// Domain id
        domain: String,
        /// Access key id to revoke
        access_key_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create an AES-256 key
    Create {
        /// Domain id
        domain: String,
        /// External key id: 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-' [default: a random UUID]
        #[arg(long, value_name = "ID")]
        key_id: Option<String>,
        /// Allowed operations: encrypt, decrypt or both; AWS KMS requires both
        #[arg(long, default_value = "encrypt,decrypt")]
        usage: String,
        /// Name shown to people [default: the key id]
        #[arg(long)]
        name: Option<String>,
        /// Free-text description
        #[arg(long, default_value = "")]
        description: String,
        /// Allow only this KMS key ARN to use the key; others get AccessDeniedException
        #[arg(long, value_name = "ARN")]
        bind_kms_key_arn: Option<String>,
        /// Bind the key to the first KMS key ARN that encrypts or decrypts with it
        #[arg(long, conflicts_with = "bind_kms_key_arn")]
        bind_on_first_use: bool,
        /// Where the key material lives: software (wrapped by the root key, used in memory) or
        /// hsm (generated inside the HSM as a non-extractable object; needs a pkcs11 root of trust)
        #[arg(long, default_value = "software", value_name = "PROTECTION")]
        protection: String,
        /// Rotate automatically after this period, such as 90d or 12h [default: never]
        #[arg(long, value_name = "PERIOD")]
        rotation_period: Option<String>,
    },
    /// Make a new primary version; earlier versions keep decrypting
    Rotate {
        /// Domain id
        domain: String,
        /// Key id
        key_id: String,
    },
    /// Set or turn off automatic rotation
    SetRotation {
        /// Domain id
        domain: String,
        /// Key id
        key_id: String,
        /// Rotation period such as 90d or 12h, or "off"
        #[arg(long, value_name = "PERIOD")]
        period: String,
    },
    /// Manage single key versions
    #[command(subcommand)]
    Version(VersionCommand),
    /// Schedule the key's destruction; encrypt and decrypt fail at once
    ScheduleDeletion {
        /// Domain id
        domain: String,
        /// Key id
        key_id: String,
        /// Waiting period in days, 7 to 30
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Cancel a scheduled deletion and restore the key's previous status
    CancelDeletion {
        /// Domain id
        domain: String,
        /// Key id
        key_id: String,
    },
    /// List a domain's keys
    List {
        /// Domain id
        domain: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one key
    Show {
        /// Domain id
        domain: String,
        /// Key id
        key_id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Disable a key: encrypt and decrypt fail with InvalidStateException
    Disable {
        /// Domain id
        domain: String,
        /// Key id
        key_id: String,
    },
    /// Enable a disabled key
    Enable {
        /// Domain id
        domain: String,
        /// Key id
        key_id: String,
    },
}

/// Root-of-trust options of `init`. Without `--pkcs11-module`, the root key is a file.
#[derive(Debug, Clone, Args)]
struct InitArgs {
    /// Keep the root key in an HSM: path of its PKCS#11 module, such as
    /// /usr/lib/softhsm/libsofthsm2.so
    #[arg(long, value_name = "PATH", requires = "token_label")]
    pkcs11_module: Option<PathBuf>,
    /// Label of the HSM token
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    token_label: Option<String>,
    /// Environment variable holding the HSM user PIN
    #[arg(long, value_name = "VAR", conflicts_with = "pin_file")]
    pin_env: Option<String>,
    /// File holding the HSM user PIN, readable by its owner only
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
    /// Label of the root key in the HSM; an existing key is adopted, a missing one created
    #[arg(long, value_name = "LABEL", default_value = crate::config::DEFAULT_ROOT_KEY_LABEL)]
    root_key_label: String,
}

#[derive(Debug, Subcommand)]
enum VersionCommand {
    /// List a key's versions
    List {
        /// Domain id
        domain: String,
        /// Key id
        key_id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Disable a version: its ciphertexts fail with InvalidStateException
    Disable {
        /// Domain id
        domain: String,
        /// Key id
        key_id: String,
        /// Version number
        version: u32,
    },
    /// Enable a disabled version again
    Enable {
        /// Domain id
        domain: String,
        /// Key id
        key_id: String,
        /// Version number
        version: u32,
    },
    /// Erase a version's material for good; its ciphertexts can never be decrypted again
    Destroy {
        /// Domain id
        domain: String,
        /// Key id
        key_id: String,
        /// Version number
        version: u32,
        /// Confirm that the material is to be erased for good
        #[arg(long)]
        yes: bool,
    },
}

/// Secondary authorization policy commands.
#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Set the policy of a domain, or of one key with --key, from a JSON file
    Set {
        /// Domain id
        domain: String,
        /// Key id; without it the policy applies to the whole domain
        #[arg(long, value_name = "KEY_ID")]
        key: Option<String>,
        /// JSON policy file ("-" reads stdin)
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Show the policy of a domain, or of one key with --key
    Show {
        /// Domain id
        domain: String,
        /// Key id
        #[arg(long, value_name = "KEY_ID")]
        key: Option<String>,
    },
    /// Remove the policy of a domain, or of one key with --key
    Clear {
        /// Domain id
        domain: String,
        /// Key id
        #[arg(long, value_name = "KEY_ID")]
        key: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Args)]
struct OutputArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// Aligned columns for people
    Text,
    /// JSON for scripts
    Json,
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir.clone();
    let dir = || {
        data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    };
    let event = events::describe(&cli.command);
    let result = match cli.command {
        Command::Init(args) => init::run(&dir(), &args),
        Command::Serve { listen } => serve::run(&dir(), listen),
        Command::Domain(command) => admin::domain(&dir(), command),
        Command::Credential(command) => admin::credential(&dir(), command),
        Command::Key(command) => admin::key(&dir(), command),
        Command::Policy(command) => lifecycle::policy(&dir(), command),
        Command::Backup(command) => backup::run(&dir(), command),
        Command::Demo { listen } => demo::run(data_dir.as_deref(), listen),
        Command::Audit(command) => audit::run(&dir(), command),
    };
    if let Some((action, target)) = event {
        events::record(&dir(), &action, &target, &result);
    }
    result
}

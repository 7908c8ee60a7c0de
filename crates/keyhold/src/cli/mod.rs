//! The `keyhold` command line: argument definitions and dispatch.
//!
//! Commands print results to stdout and errors to stderr. Exit codes: 0 success, 1 a command
//! failed, 2 invalid arguments (from clap).

mod admin;
mod audit;
mod backup;
mod client;
mod demo;
mod events;
mod init;
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

    /// Send admin commands to a running server's admin listener, such as
    /// https://localhost:9443, instead of the data directory; the token comes from
    /// KEYHOLD_TOKEN
    #[arg(long, env = "KEYHOLD_SERVER", global = true, value_name = "URL")]
    server: Option<String>,

    /// CA certificate (PEM) that signed the admin listener's certificate, for --server
    #[arg(long, env = "KEYHOLD_CA_CERT", global = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory: root key, database, TLS certificate and keyhold.toml
    Init(InitArgs),
    /// Serve the XKS API and the admin API over TLS
    Serve {
        /// Listen address, overriding keyhold.toml [default: 127.0.0.1:8443]
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Admin listener address, overriding [admin] listen in keyhold.toml
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<SocketAddr>,
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
    /// Manage admin API principals and their roles
    #[command(subcommand)]
    Principal(PrincipalCommand),
    /// Manage admin API bearer tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Register AWS KMS external key stores and print what connects them
    #[command(subcommand)]
    KeyStore(KeyStoreCommand),
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
    /// Create a key from a name and a registered external key store, and print the AWS CLI
    /// command and Terraform resource that create the matching KMS key
    SelfService {
        /// Domain id
        domain: String,
        /// Key name, unique among the domain's keys
        #[arg(long)]
        name: String,
        /// Name of the registered external key store
        #[arg(long, value_name = "NAME")]
        key_store: String,
        /// Also write create-key.sh and kms-key.tf into this directory
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
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

#[derive(Debug, Subcommand)]
enum PrincipalCommand {
    /// Create a principal with roles
    Create {
        /// Name: 1 to 64 characters of a-z, 0-9, '.', '_', '@' and '-'
        name: String,
        /// Role, repeatable: operator, or domain-admin:DOMAIN, key-creator:DOMAIN or
        /// auditor:DOMAIN
        #[arg(long = "role", value_name = "ROLE[:DOMAIN]", required = true)]
        roles: Vec<String>,
    },
    /// List principals, or those with a role in one domain
    List {
        /// Only principals with a role in this domain
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one principal
    Show {
        /// Name
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete a principal and its tokens
    Delete {
        /// Name
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a bearer token for a principal and print it once
    Create {
        /// Principal name
        principal: String,
        /// Description shown in the token list, such as where the token is used
        #[arg(long)]
        description: Option<String>,
        /// Days until the token expires, 1 to 3650 [default: never]
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
    },
    /// List a principal's tokens (ids and dates, never the tokens)
    List {
        /// Principal name
        principal: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke a token; it stops working at once
    Revoke {
        /// Principal name
        principal: String,
        /// Token id, the part after khat_ and before the next '_'
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyStoreCommand {
    /// Register an AWS KMS external key store for a domain
    Register {
        /// Domain id
        domain: String,
        /// Name, unique in the domain
        name: String,
        /// AWS custom key store id, such as cks-1234567890abcdef0
        #[arg(long, value_name = "ID")]
        custom_key_store_id: String,
        /// AWS region, such as eu-west-1
        #[arg(long)]
        region: String,
        /// AWS account id, 12 digits
        #[arg(long, value_name = "ID")]
        account_id: String,
    },
    /// List a domain's registered external key stores
    List {
        /// Domain id
        domain: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one registration
    Show {
        /// Domain id
        domain: String,
        /// Name
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Remove a registration; keys made through it stay
    Remove {
        /// Domain id
        domain: String,
        /// Name
        name: String,
    },
    /// Print the proxy configuration file, the create-custom-key-store commands and the VPC
    /// endpoint service CloudFormation template
    Setup {
        /// Domain id
        domain: String,
        /// Name
        name: String,
        /// Write the four files into this directory instead of printing
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
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
    let remote = cli.server.clone().map(|url| client::RemoteArgs {
        url,
        ca_cert: cli.ca_cert.clone(),
    });
    let admin_client = || client::Client::open(&dir(), remote.as_ref());
    if remote.is_some()
        && !matches!(
            cli.command,
            Command::Domain(_)
                | Command::Credential(_)
                | Command::Key(_)
                | Command::Policy(_)
                | Command::Principal(_)
                | Command::Token(_)
                | Command::KeyStore(_)
                | Command::Audit(audit::AuditCommand::List { .. })
        )
    {
        anyhow::bail!(
            "--server works with the admin commands (domain, credential, key, policy, \
             principal, token, key-store, audit list); this command runs on a data directory"
        );
    }
    // Admin commands record themselves through the admin API code; the others are recorded here.
    let event = events::describe(&cli.command);
    let result = match cli.command {
        Command::Init(args) => init::run(&dir(), &args),
        Command::Serve {
            listen,
            admin_listen,
        } => serve::run(&dir(), listen, admin_listen),
        Command::Domain(command) => admin::domain(&admin_client()?, command),
        Command::Credential(command) => admin::credential(&admin_client()?, command),
        Command::Key(command) => admin::key(&admin_client()?, command),
        Command::Policy(command) => admin::policy(&admin_client()?, command),
        Command::Principal(command) => admin::principal(&admin_client()?, command),
        Command::Token(command) => admin::token(&admin_client()?, command),
        Command::KeyStore(command) => admin::key_store(&admin_client()?, command),
        Command::Audit(audit::AuditCommand::List {
            domain,
            limit,
            output,
        }) => audit::list(&admin_client()?, domain.as_deref(), limit, output),
        Command::Backup(command) => backup::run(&dir(), command),
        Command::Demo { listen } => demo::run(data_dir.as_deref(), listen),
        Command::Audit(command) => audit::run(&dir(), command),
    };
    if let Some((action, target)) = event {
        events::record(&dir(), &action, &target, &result);
    }
    result
}

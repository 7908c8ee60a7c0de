//! `keyhold-bench-populate`: fills a Keyhold data directory with many domains, keys and
//! credentials through the `keyhold` library's `KeyStore`, for scaling measurements.
//!
//! It opens `DIR/keyhold.db` and `DIR/root.key`, the layout `keyhold init` creates with a
//! root-key file. Every object gets freshly generated, wrapped material, as the CLI would
//! create it; only the one-process loop is faster than one CLI call per key. Stop any server
//! on the directory first, or it reloads its snapshot after every change.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use keyhold::keystore::root::FileRootKey;
use keyhold::keystore::store::Store;
use keyhold::keystore::{KeyStore, NewDomain, NewKey};

/// Fills an initialized Keyhold data directory with domains `PREFIX-0000`, ... and keys
/// `key-000000`, ..., spread evenly over the domains.
#[derive(Debug, Parser)]
#[command(name = "keyhold-bench-populate", version, about, max_term_width = 100)]
struct Args {
    /// Data directory made by `keyhold init`
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,

    /// Number of domains to create
    #[arg(long, default_value_t = 1000)]
    domains: u32,

    /// Number of keys to create in total
    #[arg(long, default_value_t = 100_000)]
    keys: u32,

    /// Active SigV4 credentials per domain, 0 to 2; their secrets are not printed
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    credentials_per_domain: u8,

    /// Domain id prefix
    #[arg(long, default_value = "bench")]
    prefix: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match populate(&args) {
        Ok(summary) => {
            let _ = std::io::stdout().write_all(summary.as_bytes());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("keyhold-bench-populate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn populate(args: &Args) -> anyhow::Result<String> {
    if args.domains == 0 {
        anyhow::bail!("--domains must be at least 1");
    }
    let database = args.data_dir.join("keyhold.db");
    let root_key = args.data_dir.join("root.key");
    if !database.exists() {
        anyhow::bail!(
            "{} not found; run `keyhold --data-dir {} init` first",
            database.display(),
            args.data_dir.display()
        );
    }
    let store = Store::open(&database)
        .with_context(|| format!("cannot open database {}", database.display()))?;
    let root = FileRootKey::load(&root_key)
        .with_context(|| format!("cannot load root key {}", root_key.display()))?;
    let mut key_store = KeyStore::new(store, Box::new(root));

    let started = Instant::now();
    let domain_ids: Vec<String> = (0..args.domains)
        .map(|index| format!("{}-{index:04}", args.prefix))
        .collect();
    for id in &domain_ids {
        key_store
            .create_domain(&NewDomain {
                id: id.clone(),
                ..NewDomain::default()
            })
            .with_context(|| format!("cannot create domain {id}"))?;
        for _ in 0..args.credentials_per_domain {
            key_store
                .create_credential(id)
                .with_context(|| format!("cannot create a credential for domain {id}"))?;
        }
    }
    for index in 0..args.keys {
        let domain = &domain_ids[usize::try_from(index % args.domains)?];
        let key_id = format!("key-{index:06}");
        key_store
            .create_key(&NewKey::with_id(domain, &key_id))
            .with_context(|| format!("cannot create key {key_id} in domain {domain}"))?;
        if (index + 1) % 10_000 == 0 {
            eprintln!(
                "keyhold-bench-populate: {} keys after {:.1} s",
                index + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(format!(
        "Created {} domains, {} credentials and {} keys in {} in {:.1} s\n",
        args.domains,
        u64::from(args.domains) * u64::from(args.credentials_per_domain),
        args.keys,
        args.data_dir.display(),
        started.elapsed().as_secs_f64()
    ))
}

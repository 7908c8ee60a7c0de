//! `keyhold audit verify`: checks the hash chain of audit files and, by default, that it
//! reaches the head this node recorded in the store.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::audit::chain;
use crate::audit::writer::{ChainHead, audit_files};
use crate::config::Settings;
use crate::keystore::store::Store;

use super::output;

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Check that no record was edited, deleted, inserted or reordered, and that no tail is
    /// missing
    Verify {
        /// Audit files in chain order [default: every file in the data directory's audit
        /// folder, oldest first]
        files: Vec<PathBuf>,
        /// Check the chain only, not that it reaches the head recorded in the store (for
        /// copies checked away from the node)
        #[arg(long)]
        no_head: bool,
        /// Node whose recorded head to compare with [default: this node]
        #[arg(long, value_name = "ID")]
        node: Option<String>,
    },
    /// Print recent audit records of this node, or of the server given with --server
    List {
        /// Only records of this domain (needs a role in it rather than operator)
        #[arg(long)]
        domain: Option<String>,
        /// Number of records, 1 to 1000
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        output: super::OutputArgs,
    },
}

/// Prints recent audit records through the admin API: as JSON lines, or one summary line each.
pub(super) fn list(
    client: &super::client::Client,
    domain: Option<&str>,
    limit: u32,
    format: super::OutputArgs,
) -> anyhow::Result<()> {
    let path = match domain {
        Some(domain) => format!("/v1/domains/{domain}/audit?limit={limit}"),
        None => format!("/v1/audit?limit={limit}"),
    };
    let answer = client.call(hyper::Method::GET, &path, None)?;
    let empty = Vec::new();
    let mut text = String::new();
    for record in answer["records"].as_array().unwrap_or(&empty) {
        match format.output {
            super::OutputFormat::Json => text.push_str(&format!("{record}\n")),
            super::OutputFormat::Text => {
                let field = |name: &str| record[name].as_str().unwrap_or("-").to_owned();
                text.push_str(&format!(
                    "{} {} {} {} {} {}\n",
                    field("time"),
                    field("kind"),
                    field("operation"),
                    record["domain"]
                        .as_str()
                        .or(record["target"].as_str())
                        .unwrap_or("-"),
                    record["principal"]
                        .as_str()
                        .or(record["awsPrincipalArn"].as_str())
                        .unwrap_or("-"),
                    field("result"),
                ));
            }
        }
    }
    output::print(&text);
    Ok(())
}

pub(super) fn run(dir: &Path, command: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Verify {
        files,
        no_head,
        node,
    } = command
    else {
        anyhow::bail!("audit list runs through the admin API");
    };
    let settings = if files.is_empty() || !no_head {
        Some(Settings::load(dir)?)
    } else {
        None
    };
    let own_folder = files.is_empty();
    let files = match (&settings, files.is_empty()) {
        (Some(settings), true) => audit_files(&settings.audit.dir).with_context(|| {
            format!(
                "cannot list audit files in {}",
                settings.audit.dir.display()
            )
        })?,
        _ => files,
    };
    if files.is_empty() {
        bail!("no audit files to verify");
    }
    let head = match (&settings, no_head) {
        (Some(settings), false) => {
            let node = node.unwrap_or_else(|| settings.node_id.clone());
            let mut store = Store::connect(&settings.storage)?;
            let head = store
                .audit_head(&node)?
                .map(|(seq, hash)| ChainHead { seq, hash });
            if head.is_none() {
                bail!(
                    "the store has no recorded audit head for node {node}; pass --no-head to check the chain only"
                );
            }
            head
        }
        _ => None,
    };
    match chain::verify(&files, head.as_ref()) {
        Ok(verified) => {
            // The node's own folder holds the whole chain, so it must start at the first record.
            if let Some(first) = verified.first_seq.filter(|first| *first > 1) {
                if own_folder {
                    bail!(
                        "audit chain broken at {}:1: the first record is seq {first}, so records 1 to {} were deleted or their files removed",
                        files[0].display(),
                        first - 1
                    );
                }
                output::note(&format!(
                    "note: the first record is seq {first}; records before it are not in these files and were not checked"
                ));
            }
            let range = match (verified.first_seq, &verified.head) {
                (Some(first), Some(last)) => format!("seq {first} to {}", last.seq),
                _ => "no records".to_owned(),
            };
            let anchored = if head.is_some() {
                "; it reaches the head the store recorded at the server's last sync, which is at most about a second behind"
            } else {
                ""
            };
            output::print(&format!(
                "OK: {} records in {} files ({range}) form an unbroken chain{anchored}\n",
                verified.lines,
                files.len()
            ));
            Ok(())
        }
        Err(finding) => bail!("audit chain broken at {finding}"),
    }
}

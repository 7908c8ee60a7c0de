//! The hash chain of audit lines and its verification.
//!
//! Each line is a JSON object whose first fields are `seq`, one more than the line before, and
//! `prev`, the hex SHA-256 of the line before (without its newline). The first line of a new
//! log has `prev` equal to 64 zeros. Verification finds the first place where a line was
//! edited, deleted, inserted or moved, and, given the head recorded in the store, a truncated
//! tail.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::writer::ChainHead;

/// `prev` of the first line of a new audit log.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain fields of a line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChainFields {
    /// Sequence number.
    pub seq: u64,
    /// Hash of the line before.
    pub prev: String,
}

/// Hex SHA-256 of a line without its newline.
pub fn line_hash(line: &[u8]) -> String {
    crate::crypto::to_hex(&crate::crypto::sha256(line))
}

/// Reads the chain fields of a line.
///
/// # Errors
///
/// Returns a message when the line is not a JSON object with `seq` and `prev`.
pub fn parse_line(line: &str) -> Result<ChainFields, String> {
    serde_json::from_str(line).map_err(|error| format!("not an audit record: {error}"))
}

/// Result of a verification that found no problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Lines checked.
    pub lines: u64,
    /// First sequence number seen.
    pub first_seq: Option<u64>,
    /// Head of the verified chain.
    pub head: Option<ChainHead>,
}

/// The first problem found, with the file and 1-based line number where it shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct Finding {
    /// The file.
    pub file: PathBuf,
    /// The line number in that file, 1-based; 0 for a problem at the end of the chain.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// Verifies files in chain order. With `recorded_head`, the chain must also reach that head,
/// which detects a truncated tail.
///
/// # Errors
///
/// Returns the first [`Finding`]; an unreadable file is a finding too.
pub fn verify(files: &[PathBuf], recorded_head: Option<&ChainHead>) -> Result<Verified, Finding> {
    let mut verified = Verified {
        lines: 0,
        first_seq: None,
        head: None,
    };
    let mut previous: Option<(ChainHead, PathBuf, usize)> = None;
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|error| Finding {
            file: file.clone(),
            line: 0,
            problem: format!("cannot read the file: {error}"),
        })?;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let finding = |problem: String| Finding {
                file: file.clone(),
                line: number,
                problem,
            };
            let fields =
                parse_line(line).map_err(|error| finding(format!("line was edited: {error}")))?;
            let hash = line_hash(line.as_bytes());
            match &previous {
                None => {
                    if fields.seq == 1 && fields.prev != GENESIS_HASH {
                        return Err(finding(
                            "the first record does not start a chain".to_owned(),
                        ));
                    }
                }
                Some((head, previous_file, previous_line)) => {
                    check_link(head, &fields, previous_file, *previous_line).map_err(finding)?;
                }
            }
            verified.lines += 1;
            verified.first_seq.get_or_insert(fields.seq);
            previous = Some((
                ChainHead {
                    seq: fields.seq,
                    hash,
                },
                file.clone(),
                number,
            ));
        }
    }
    verified.head = previous.map(|(head, _, _)| head);

    if let Some(recorded) = recorded_head {
        let last_file = files.last().cloned().unwrap_or_default();
        let at_end = |problem: String| Finding {
            file: last_file.clone(),
            line: 0,
            problem,
        };
        match &verified.head {
            None => {
                return Err(at_end(format!(
                    "the files hold no records, but the store recorded the chain up to seq {}",
                    recorded.seq
                )));
            }
            Some(head) if head.seq < recorded.seq => {
                return Err(at_end(format!(
                    "the tail was truncated: the last record is seq {}, but the store recorded the chain up to seq {}",
                    head.seq, recorded.seq
                )));
            }
            Some(head) if head.seq == recorded.seq && head.hash != recorded.hash => {
                return Err(at_end(format!(
                    "the last record (seq {}) was edited: its hash differs from the one the store recorded",
                    head.seq
                )));
            }
            Some(_) => {}
        }
    }
    Ok(verified)
}

/// Checks that `fields` follows the line with head `previous`.
fn check_link(
    previous: &ChainHead,
    fields: &ChainFields,
    previous_file: &Path,
    previous_line: usize,
) -> Result<(), String> {
    let expected = previous.seq + 1;
    if fields.seq > expected {
        let missing = if fields.seq - 1 == expected {
            format!("record {expected} is")
        } else {
            format!("records {expected} to {} are", fields.seq - 1)
        };
        return Err(format!(
            "{missing} missing before this line (deleted or moved lines)"
        ));
    }
    if fields.seq < expected {
        return Err(format!(
            "seq {} follows seq {}: a line was inserted or lines were reordered",
            fields.seq, previous.seq
        ));
    }
    if fields.prev != previous.hash {
        return Err(format!(
            "the chain breaks here: the previous record ({}:{previous_line}) was edited, or this line replaced the original",
            previous_file.display()
        ));
    }
    Ok(())
}

/// Most bytes of audit files that [`recent_records`] reads from the end before it stops looking.
pub const RECENT_SCAN_BYTES: u64 = 16 * 1024 * 1024;

/// Returns the last `limit` records of the audit files in `dir` that `keep` accepts, oldest
/// first.
/// Reads backwards from the newest line and stops after [`RECENT_SCAN_BYTES`], so a large log
/// costs no more than that. Lines that are not JSON are skipped.
///
/// # Errors
///
/// Returns an I/O error when the directory or a file cannot be read.
pub fn recent_records(
    dir: &Path,
    limit: usize,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> std::io::Result<Vec<serde_json::Value>> {
    use std::io::{Read as _, Seek as _, SeekFrom};

    let mut found = Vec::new();
    let mut budget = RECENT_SCAN_BYTES;
    for path in super::writer::audit_files(dir)?.iter().rev() {
        let mut file = std::fs::File::open(path)?;
        let mut end = file.metadata()?.len();
        // Bytes of a line cut at the start of the last block read, kept until its start is read.
        let mut carry: Vec<u8> = Vec::new();
        while end > 0 && budget > 0 && found.len() < limit {
            let size = end.min(64 * 1024).min(budget);
            let start = end - size;
            let mut block = vec![0u8; usize::try_from(size).unwrap_or(0)];
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut block)?;
            block.extend_from_slice(&carry);
            budget -= size;
            end = start;
            let mut lines: Vec<&[u8]> = block.split(|byte| *byte == b'\n').collect();
            carry = if start > 0 {
                lines.remove(0).to_vec()
            } else {
                Vec::new()
            };
            for line in lines.iter().rev() {
                if found.len() == limit {
                    break;
                }
                if let Ok(record) = serde_json::from_slice::<serde_json::Value>(line)
                    && keep(&record)
                {
                    found.push(record);
                }
            }
        }
        if budget == 0 || found.len() == limit {
            break;
        }
    }
    found.reverse();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a valid chain of `count` lines.
    fn chain(count: u64) -> Vec<String> {
        let mut lines = Vec::new();
        let mut prev = GENESIS_HASH.to_owned();
        for seq in 1..=count {
            let line = format!(r#"{{"seq":{seq},"prev":"{prev}","operation":"Encrypt"}}"#);
            prev = line_hash(line.as_bytes());
            lines.push(line);
        }
        lines
    }

    fn verify_lines(lines: &[String], head: Option<&ChainHead>) -> Result<Verified, Finding> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.log");
        std::fs::write(&path, lines.join("\n") + "\n").expect("write");
        verify(&[path], head)
    }

    fn head_of(lines: &[String]) -> ChainHead {
        let last = lines.last().expect("a line");
        ChainHead {
            seq: lines.len() as u64,
            hash: line_hash(last.as_bytes()),
        }
    }

    #[test]
    fn intact_chain_verifies() {
        let lines = chain(5);
        let verified = verify_lines(&lines, Some(&head_of(&lines))).expect("intact");
        assert_eq!(verified.lines, 5);
        assert_eq!(verified.head, Some(head_of(&lines)));
    }

    #[test]
    fn each_tampering_is_found_where_it_happened() {
        let lines = chain(6);
        let mut edited = lines.clone();
        edited[2] = edited[2].replace("Encrypt", "Decrypt");
        let finding = verify_lines(&edited, None).expect_err("edit");
        assert_eq!(finding.line, 4);
        assert!(finding.problem.contains(":3) was edited"), "{finding}");

        let mut deleted = lines.clone();
        deleted.remove(2);
        let finding = verify_lines(&deleted, None).expect_err("delete");
        assert_eq!(finding.line, 3);
        assert!(finding.problem.contains("missing"), "{finding}");

        let mut inserted = lines.clone();
        inserted.insert(3, lines[1].clone());
        let finding = verify_lines(&inserted, None).expect_err("insert");
        assert_eq!(finding.line, 4);
        assert!(
            finding.problem.contains("inserted or lines were reordered"),
            "{finding}"
        );

        let mut reordered = lines.clone();
        reordered.swap(3, 4);
        let finding = verify_lines(&reordered, None).expect_err("reorder");
        assert_eq!(finding.line, 4);

        let truncated = &lines[..4];
        assert!(
            verify_lines(truncated, None).is_ok(),
            "a cut tail needs the recorded head"
        );
        let finding = verify_lines(truncated, Some(&head_of(&lines))).expect_err("truncate");
        assert!(finding.problem.contains("truncated"), "{finding}");
    }
}

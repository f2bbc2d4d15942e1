//! The tamper-evident chain of a decision log (`decision_log.chain: true`).
//!
//! Each line's `prev` is the SHA-256 (hex) of the exact bytes of the line before it, the
//! first line's the [`GENESIS`] value. Editing, removing or moving a line breaks the link
//! of the line after it. Rotation does not: the first line of a new file carries the hash
//! of the last line of the file before, so `sluis audit verify FILE.2 FILE.1 FILE` checks
//! them as one chain.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// The `prev` of the very first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 of a line (without its newline), lower-case hex.
pub fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// Why a chain does not verify. Line numbers count from 1 within the named file.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a decision log line (not a JSON object with a `prev` string)")]
    NotALine { path: PathBuf, line: usize },
    #[error(
        "{path}:{line}: chain broken: `prev` is `{found}` but the line before hashes to `{expected}`; a line before this one was edited, removed or moved"
    )]
    Broken {
        path: PathBuf,
        line: usize,
        expected: String,
        found: String,
    },
}

/// A verified chain.
#[derive(Debug, PartialEq)]
pub struct Verified {
    pub files: usize,
    pub lines: usize,
    /// The first line links to [`GENESIS`]; otherwise the chain continues one whose
    /// earlier files were rotated away, and its first link cannot be checked.
    pub from_genesis: bool,
    /// The hash of the last line: the `prev` the next line must carry.
    pub last: String,
}

/// Checks the chain through `paths`, oldest file first.
pub fn verify(paths: &[PathBuf]) -> Result<Verified, ChainError> {
    let mut expected: Option<String> = None;
    let mut verified = Verified {
        files: 0,
        lines: 0,
        from_genesis: false,
        last: GENESIS.to_owned(),
    };
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| ChainError::Read {
            path: path.clone(),
            source,
        })?;
        verified.files += 1;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let found = prev_of(line).ok_or_else(|| ChainError::NotALine {
                path: path.clone(),
                line: number,
            })?;
            match &expected {
                None => verified.from_genesis = found == GENESIS,
                Some(expected) if *expected != found => {
                    return Err(ChainError::Broken {
                        path: path.clone(),
                        line: number,
                        expected: expected.clone(),
                        found,
                    });
                }
                Some(_) => {}
            }
            let hash = line_hash(line);
            verified.last.clone_from(&hash);
            expected = Some(hash);
            verified.lines += 1;
        }
    }
    Ok(verified)
}

fn prev_of(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get("prev")?.as_str().map(str::to_owned)
}

/// Prints what [`verify`] found; the exit status `sluis audit verify` returns.
pub fn report(paths: &[PathBuf], out: &mut impl std::io::Write) -> std::io::Result<bool> {
    match verify(paths) {
        Ok(verified) => {
            writeln!(
                out,
                "chain intact: {} lines in {} file{}, {}; last hash {}",
                verified.lines,
                verified.files,
                if verified.files == 1 { "" } else { "s" },
                if verified.from_genesis {
                    "starting at genesis".to_string()
                } else {
                    "continuing an earlier chain (its first link is not checked)".to_string()
                },
                verified.last
            )?;
            Ok(true)
        }
        Err(e) => {
            writeln!(out, "{e}")?;
            Ok(false)
        }
    }
}

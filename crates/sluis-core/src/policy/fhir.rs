//! A policy's `fhir` block: where its FHIR requests are, which release reads them, and
//! the CapabilityStatement that bounds them.
//!
//! The request is read only when something needs it (a rule reading `request.fhir`, or a
//! statement to check), so a policy that names a base path but never asks pays nothing.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use std::sync::Arc;

use super::Reporter;
use super::diagnostic::DiagnosticKind as Kind;
use super::positions::Step;
use super::spec::{FhirSpec, FhirVersionSpec, IterateSpec};
use crate::fhir::capability::{Capabilities, MAX_STATEMENT_BYTES};
use crate::fhir::{FhirLimits, FhirVersion};

/// A policy's `fhir` block, compiled.
#[derive(Debug)]
pub struct PolicyFhir {
    pub base_path: String,
    pub version: FhirVersion,
    /// Shared with every request's check, never copied.
    pub capabilities: Option<Arc<Capabilities>>,
    pub allow_iterate: bool,
    pub limits: FhirLimits,
    /// The statement's file and the SHA-256 of its bytes: a changed statement is a new
    /// policy set version, and reload watches its directory.
    pub statement_file: Option<(PathBuf, [u8; 32])>,
}

impl PolicyFhir {
    pub(super) fn compile(
        spec: FhirSpec,
        policy_file: &Path,
        report: &mut Reporter,
    ) -> Option<PolicyFhir> {
        if !(spec.base_path.is_empty() || spec.base_path.starts_with('/')) {
            report.error(
                Kind::InvalidValue,
                &[Step::from("fhir"), Step::from("base_path")],
                "`fhir.base_path` must start with `/`".into(),
            );
            return None;
        }
        let mut statement_file = None;
        let capabilities = match &spec.capability_statement {
            Some(file) => {
                let path = policy_file.parent().unwrap_or(Path::new(".")).join(file);
                let name = Path::new(file)
                    .file_stem()
                    .and_then(|n| n.to_str())
                    .unwrap_or(file)
                    .to_owned();
                let read = std::fs::metadata(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|meta| {
                        if meta.len() > MAX_STATEMENT_BYTES as u64 {
                            Err(format!(
                                "larger than {} MiB",
                                MAX_STATEMENT_BYTES / 1024 / 1024
                            ))
                        } else {
                            std::fs::read(&path).map_err(|e| e.to_string())
                        }
                    })
                    .and_then(|bytes| {
                        statement_file = Some((path.clone(), Sha256::digest(&bytes).into()));
                        Capabilities::from_json(&name, &bytes)
                    });
                match read {
                    Ok(caps) => Some(Arc::new(caps)),
                    Err(e) => {
                        report.error(
                            Kind::Io,
                            &[Step::from("fhir"), Step::from("capability_statement")],
                            format!("`fhir.capability_statement` `{file}`: {e}"),
                        );
                        return None;
                    }
                }
            }
            None => None,
        };
        let version = match spec.version {
            Some(FhirVersionSpec::R4) => FhirVersion::R4,
            Some(FhirVersionSpec::Stu3) => FhirVersion::Stu3,
            None => capabilities
                .as_ref()
                .and_then(|c| c.version)
                .unwrap_or_default(),
        };
        Some(PolicyFhir {
            base_path: spec.base_path,
            version,
            capabilities,
            allow_iterate: spec.iterate == IterateSpec::Allow,
            limits: FhirLimits::default(),
            statement_file,
        })
    }
}

//! What is wrong with a policy file, and where: the answer of [`super::validate`] and the
//! error of [`super::PolicySet::load`].
//!
//! A diagnostic is data (kind, position, policy, rule, message), so tools can sort, count
//! or render it; its `Display` is the one-line form `sluis validate` prints:
//! `file:line:column: policy `p` rule `r`: message`.

use std::path::{Path, PathBuf};

/// What kind of problem a [`Diagnostic`] reports, for tools that act on it; the message
/// says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DiagnosticKind {
    /// A file or directory could not be read or listed, or does not exist.
    Io,
    /// The file is not YAML.
    Syntax,
    /// A key the policy format does not have (a typo, most often).
    UnknownField,
    /// A value of the wrong type or shape for its key.
    InvalidValue,
    /// The policy accepts an issuer the configuration does not define.
    UnknownIssuer,
    /// A policy id used twice across the set, or a rule id twice within a policy.
    DuplicateId,
    /// A CEL expression that does not parse.
    CelParse,
    /// A CEL expression calling a function neither CEL nor Sluis defines: every
    /// evaluation of it would fail, and a rule that cannot be evaluated never allows.
    CelUnknownFunction,
    /// A CEL expression naming a variable or field Sluis does not provide, or otherwise
    /// refused at load (an invalid regular expression literal, a misuse of `flows`).
    CelInvalid,
    /// A combination of settings that cannot work together, or a setting out of range.
    Conflict,
    /// The configured locations hold no policy at all.
    NoPolicies,
}

/// How bad it is. Today every diagnostic of [`super::validate`] refuses the set; warnings
/// (e.g. a policy in shadow mode) are reported by the set that loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Error,
    Warning,
}

/// A problem in a policy file, located by the YAML parser: `line` and `column` (both
/// 1-based) are those of the key the problem is about (a rule's `allow:`, a policy's `id:`,
/// an unknown key), or of the character a YAML or CEL parser stopped at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub kind: DiagnosticKind,
    pub severity: Severity,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The policy's id, or `#n` (1-based) for a policy without a usable id.
    pub policy: Option<String>,
    /// The rule's id, or `#n` (1-based) for a rule without a usable id.
    pub rule: Option<String>,
    pub message: String,
}

/// The name [`super::PolicySet::load`] has always returned its problems under.
pub type LoadError = Diagnostic;

impl Diagnostic {
    /// An error about the whole file (or directory), without a position.
    pub fn in_file(kind: DiagnosticKind, file: &Path, message: String) -> Diagnostic {
        Diagnostic {
            kind,
            severity: Severity::Error,
            file: file.to_owned(),
            line: None,
            column: None,
            policy: None,
            rule: None,
            message,
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ":")?;
        if self.severity == Severity::Warning {
            write!(f, " warning:")?;
        }
        if let Some(policy) = &self.policy {
            write!(f, " policy `{policy}`")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, " rule `{rule}`")?;
        }
        if self.policy.is_some() || self.rule.is_some() {
            write!(f, ":")?;
        }
        write!(f, " {}", self.message)
    }
}

impl std::error::Error for Diagnostic {}

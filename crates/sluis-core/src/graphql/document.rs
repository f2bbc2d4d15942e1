//! A query document as written: its operations and fragments, before an operation is
//! chosen and its fragments expanded ([`super::parse`]). Two readers produce it and must
//! agree: [`super::plain`] for the plain documents clients send, and apollo-parser
//! ([`super::apollo`]) for everything else.
//!
//! Arguments and input objects are already sorted by name with duplicates refused
//! ([`sorted_unique`]), so both readers hand over the same value for the same text.

use super::{ArgValue, Directive, OperationType, RequestError, VariableDefinition, malformed};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    pub operations: Vec<OperationDefinition>,
    pub fragments: Vec<FragmentDefinition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OperationDefinition {
    pub operation: OperationType,
    pub name: Option<String>,
    pub variable_definitions: Vec<VariableDefinition>,
    pub directives: Vec<Directive>,
    pub selection: Vec<Selection>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FragmentDefinition {
    pub name: String,
    /// Whether it carries directives: they are refused when it is spread.
    pub directives: bool,
    pub selection: Vec<Selection>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    Field(FieldSelection),
    /// `...Name`, and whether it carries directives.
    Spread {
        name: String,
        directives: bool,
    },
    /// `... on Type { }` or `... { }` (the type condition does not matter to a policy),
    /// and whether it carries directives.
    Inline {
        directives: bool,
        selection: Vec<Selection>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldSelection {
    pub name: String,
    pub alias: Option<String>,
    pub arguments: Vec<(String, ArgValue)>,
    pub directives: Vec<Directive>,
    pub selection: Vec<Selection>,
}

/// Sorts arguments (or input fields) by name and refuses a name given twice: `what` says
/// which, for the message.
pub fn sorted_unique(
    mut entries: Vec<(String, ArgValue)>,
    what: &str,
) -> Result<Vec<(String, ArgValue)>, RequestError> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let twice = entries.windows(2).find_map(|pair| match pair {
        [(a, _), (b, _)] if a == b => Some(a),
        _ => None,
    });
    if let Some(name) = twice {
        return Err(malformed(format!("{what} `{name}` is given twice")));
    }
    Ok(entries)
}

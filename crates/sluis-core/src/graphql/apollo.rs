//! Any query document, read with apollo-parser: what [`super::plain`] leaves alone (block
//! strings, `\u` escapes, odd syntax), and every error's message. apollo-parser keeps
//! every token and piece of whitespace in its tree; this takes the meaning out into a
//! [`Document`].

use apollo_parser::Parser;
use apollo_parser::cst::{self, CstNode};

use super::document::{Document, FieldSelection, FragmentDefinition, OperationDefinition};
use super::document::{Selection, sorted_unique};
use super::malformed;
use super::{ArgValue, Directive, Limits, OperationType, RequestError, VariableDefinition};

/// The document in `text`, or why it is not one.
pub fn read(text: &str, limits: &Limits) -> Result<Document, RequestError> {
    let tree = Parser::new(text)
        .token_limit(limits.max_tokens)
        .recursion_limit(limits.parser_recursion())
        .parse();
    if let Some(error) = tree.errors().find(|e| e.is_limit()) {
        return Err(malformed(format!(
            "the query is too large or too deeply nested ({})",
            error.message()
        )));
    }
    if let Some(error) = tree.errors().next() {
        return Err(RequestError::Syntax(format!(
            "{} (at byte {})",
            error.message(),
            error.index()
        )));
    }
    let mut document = Document::default();
    for definition in tree.document().definitions() {
        match definition {
            cst::Definition::OperationDefinition(operation) => {
                document.operations.push(operation_definition(&operation)?);
            }
            cst::Definition::FragmentDefinition(fragment) => {
                document.fragments.push(FragmentDefinition {
                    name: name_of(fragment.fragment_name().and_then(|n| n.name())),
                    directives: has_directives(fragment.directives()),
                    selection: selection_set(fragment.selection_set())?,
                });
            }
            other => {
                return Err(malformed(format!(
                    "a request holds operations and fragments, not a {}",
                    other.kind()
                )));
            }
        }
    }
    Ok(document)
}

fn operation_definition(
    operation: &cst::OperationDefinition,
) -> Result<OperationDefinition, RequestError> {
    let kind = match operation.operation_type() {
        None => OperationType::Query,
        Some(t) if t.mutation_token().is_some() => OperationType::Mutation,
        Some(t) if t.subscription_token().is_some() => OperationType::Subscription,
        Some(_) => OperationType::Query,
    };
    let mut variable_definitions = Vec::new();
    for definition in operation
        .variable_definitions()
        .iter()
        .flat_map(|d| d.variable_definitions())
    {
        variable_definitions.push(VariableDefinition {
            name: name_of(definition.variable().and_then(|v| v.name())),
            ty: definition
                .ty()
                .map(|t| without_trivia(&t.syntax().to_string()))
                .unwrap_or_default(),
            default: definition
                .default_value()
                .and_then(|d| d.value())
                .map(|v| arg_value(&v))
                .transpose()?,
        });
    }
    Ok(OperationDefinition {
        operation: kind,
        name: operation.name().map(|n| n.text().to_string()),
        variable_definitions,
        directives: directives(operation.directives())?,
        selection: selection_set(operation.selection_set())?,
    })
}

/// A type or number as written, without the whitespace, commas and comments apollo's
/// tree keeps inside a node.
fn without_trivia(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut comment = false;
    for c in text.chars() {
        match c {
            '\n' | '\r' => comment = false,
            _ if comment => {}
            '#' => comment = true,
            c if c.is_whitespace() || c == ',' || c == '\u{feff}' => {}
            c => out.push(c),
        }
    }
    out
}

fn selection_set(set: Option<cst::SelectionSet>) -> Result<Vec<Selection>, RequestError> {
    let Some(set) = set else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for selection in set.selections() {
        out.push(match selection {
            cst::Selection::Field(field) => Selection::Field(FieldSelection {
                name: name_of(field.name()),
                alias: field
                    .alias()
                    .and_then(|a| a.name())
                    .map(|n| n.text().to_string()),
                arguments: arguments(field.arguments())?,
                directives: directives(field.directives())?,
                selection: selection_set(field.selection_set())?,
            }),
            cst::Selection::InlineFragment(fragment) => Selection::Inline {
                directives: has_directives(fragment.directives()),
                selection: selection_set(fragment.selection_set())?,
            },
            cst::Selection::FragmentSpread(spread) => Selection::Spread {
                name: name_of(spread.fragment_name().and_then(|n| n.name())),
                directives: has_directives(spread.directives()),
            },
        });
    }
    Ok(out)
}

/// A name's text; empty where the tree has none (only in a document with errors, which
/// is refused before anything reads it).
fn name_of(name: Option<cst::Name>) -> String {
    name.map(|n| n.text().to_string()).unwrap_or_default()
}

fn has_directives(directives: Option<cst::Directives>) -> bool {
    directives.and_then(|d| d.directives().next()).is_some()
}

fn arguments(arguments: Option<cst::Arguments>) -> Result<Vec<(String, ArgValue)>, RequestError> {
    let mut out: Vec<(String, ArgValue)> = Vec::new();
    for argument in arguments.iter().flat_map(|a| a.arguments()) {
        let name = name_of(argument.name());
        let value = match argument.value() {
            Some(value) => arg_value(&value)?,
            None => ArgValue::Null,
        };
        out.push((name, value));
    }
    sorted_unique(out, "argument")
}

fn directives(directives: Option<cst::Directives>) -> Result<Vec<Directive>, RequestError> {
    directives
        .iter()
        .flat_map(|d| d.directives())
        .map(|directive| {
            Ok(Directive {
                name: name_of(directive.name()),
                arguments: arguments(directive.arguments())?,
            })
        })
        .collect()
}

/// The parser's recursion limit bounds how deep this goes.
fn arg_value(value: &cst::Value) -> Result<ArgValue, RequestError> {
    Ok(match value {
        cst::Value::Variable(variable) => ArgValue::Variable(name_of(variable.name())),
        cst::Value::StringValue(text) => ArgValue::String(String::from(text)),
        cst::Value::FloatValue(number) => {
            ArgValue::Number(without_trivia(&number.syntax().to_string()))
        }
        cst::Value::IntValue(number) => {
            ArgValue::Number(without_trivia(&number.syntax().to_string()))
        }
        cst::Value::BooleanValue(b) => ArgValue::Bool(b.true_token().is_some()),
        cst::Value::NullValue(_) => ArgValue::Null,
        cst::Value::EnumValue(e) => ArgValue::Enum(name_of(e.name())),
        cst::Value::ListValue(list) => ArgValue::List(
            list.values()
                .map(|v| arg_value(&v))
                .collect::<Result<_, _>>()?,
        ),
        cst::Value::ObjectValue(object) => {
            let mut entries = Vec::new();
            for field in object.object_fields() {
                let value = match field.value() {
                    Some(value) => arg_value(&value)?,
                    None => ArgValue::Null,
                };
                entries.push((name_of(field.name()), value));
            }
            ArgValue::Object(sorted_unique(entries, "input field")?)
        }
    })
}

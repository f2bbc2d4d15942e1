//! Where each key and item of a policy file is, for diagnostics.
//!
//! The policy file is deserialized with `serde_yaml_ng`, whose value tree keeps no
//! positions (only its parse errors carry a `Location`), and whose YAML 1.1 reading of
//! values the policies in use rely on. Positions come from a second, span-keeping parse
//! with `saphyr` (maintained, YAML 1.2, every node and mapping key carries its span, alias
//! expansion is bounded): a map from each node's path (`policies[0].rules[2].allow`) to
//! where its key and its value start. It only locates; it never decides what a value is,
//! so where the two parsers could disagree (YAML 1.1 booleans, a document saphyr
//! refuses), the worst outcome is a diagnostic without a line. Rejected alternatives:
//! `marked-yaml` panics (`unreachable!`) on an alias and wants a mapping at the top;
//! `serde-saphyr` would replace the deserializer and with it the value semantics every
//! loaded policy depends on. The index is built only for a file that has problems.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, YamlData};

/// One step of a path into the file: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

impl From<&str> for Step {
    fn from(key: &str) -> Step {
        Step::Key(key.to_owned())
    }
}

impl From<usize> for Step {
    fn from(index: usize) -> Step {
        Step::Index(index)
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where the key is, for a mapping's entry.
    key: Option<Position>,
    value: Position,
    /// A plain or quoted scalar on one line: its text starts `offset` characters after
    /// `value` (1 for the opening quote), so a column inside it can be computed.
    inline: Option<usize>,
}

/// The positions of every node of a YAML document, by path.
#[derive(Debug, Default)]
pub struct Positions {
    entries: HashMap<Vec<Step>, Entry>,
}

/// Nesting beyond which nodes are not indexed (serde_yaml_ng refuses deeper documents).
const MAX_DEPTH: usize = 256;

impl Positions {
    /// Indexes `text`; empty when saphyr cannot read it (then nothing is located).
    pub fn of(text: &str) -> Positions {
        let mut positions = Positions::default();
        // Only text serde_yaml_ng accepted gets here; should saphyr still panic on it, the
        // diagnostic loses its line rather than the load its answer.
        let parsed = std::panic::catch_unwind(|| MarkedYaml::load_from_str(text));
        if let Ok(Ok(documents)) = parsed
            && let Some(root) = documents.first()
        {
            let chars: Vec<char> = text.chars().collect();
            let mut path = Vec::new();
            positions.walk(root, None, &chars, &mut path);
        }
        positions
    }

    fn walk(
        &mut self,
        node: &MarkedYaml,
        key: Option<Position>,
        text: &[char],
        path: &mut Vec<Step>,
    ) {
        let value = position(node.span.start);
        self.entries.insert(
            path.clone(),
            Entry {
                key,
                value,
                inline: inline_offset(node, text),
            },
        );
        if path.len() >= MAX_DEPTH {
            return;
        }
        match &node.data {
            YamlData::Mapping(mapping) => {
                for (k, v) in mapping {
                    let Some(name) = key_text(k) else { continue };
                    path.push(Step::Key(name));
                    self.walk(v, Some(position(k.span.start)), text, path);
                    path.pop();
                }
            }
            YamlData::Sequence(items) => {
                for (index, item) in items.iter().enumerate() {
                    path.push(Step::Index(index));
                    self.walk(item, None, text, path);
                    path.pop();
                }
            }
            YamlData::Tagged(_, inner) => self.walk(inner, key, text, path),
            _ => {}
        }
    }

    /// Where the node at `path` is named: its key for a mapping entry, else its value.
    pub fn key(&self, path: &[Step]) -> Option<Position> {
        self.entries.get(path).map(|e| e.key.unwrap_or(e.value))
    }

    /// Where the value at `path` starts.
    pub fn value(&self, path: &[Step]) -> Option<Position> {
        self.entries.get(path).map(|e| e.value)
    }

    /// Where character `column` (1-based) of line `line` of the scalar at `path` is, when
    /// the scalar is written on one line (plain or quoted); `None` otherwise.
    pub fn inside(&self, path: &[Step], line: usize, column: usize) -> Option<Position> {
        let entry = self.entries.get(path)?;
        let offset = entry.inline?;
        (line == 1).then_some(Position {
            line: entry.value.line,
            column: entry.value.column + offset + column.saturating_sub(1),
        })
    }

    /// The first key named `name` at or below `path`, in document order.
    pub fn find_key(&self, path: &[Step], name: &str) -> Option<Position> {
        self.entries
            .iter()
            .filter(|(p, e)| {
                e.key.is_some()
                    && p.starts_with(path)
                    && p.last() == Some(&Step::Key(name.to_owned()))
            })
            .filter_map(|(_, e)| e.key)
            .min_by_key(|p| (p.line, p.column))
    }
}

fn position(marker: saphyr::Marker) -> Position {
    Position {
        line: marker.line(),
        column: marker.col() + 1,
    }
}

fn key_text(key: &MarkedYaml) -> Option<String> {
    match &key.data {
        YamlData::Value(scalar) => Some(match scalar {
            saphyr::Scalar::String(s) => s.to_string(),
            other => format!("{}", DisplayScalar(other)),
        }),
        YamlData::Representation(text, _, _) => Some(text.to_string()),
        _ => None,
    }
}

struct DisplayScalar<'a, 'input>(&'a saphyr::Scalar<'input>);

impl std::fmt::Display for DisplayScalar<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            saphyr::Scalar::Null => write!(f, "null"),
            saphyr::Scalar::Boolean(b) => write!(f, "{b}"),
            saphyr::Scalar::Integer(i) => write!(f, "{i}"),
            saphyr::Scalar::FloatingPoint(x) => write!(f, "{x}"),
            saphyr::Scalar::String(s) => write!(f, "{s}"),
        }
    }
}

/// How many characters after its start a one-line plain or quoted scalar's text begins.
fn inline_offset(node: &MarkedYaml, text: &[char]) -> Option<usize> {
    if node.span.start.line() != node.span.end.line() {
        return None;
    }
    match text.get(node.span.start.index())? {
        '\'' | '"' => Some(1),
        '|' | '>' => None,
        _ => Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(steps: &[Step]) -> Vec<Step> {
        steps.to_vec()
    }

    #[test]
    fn keys_and_values_are_located() {
        let text = "policies:\n  - id: p\n    rules:\n      - id: r\n        allow: 'true'\n";
        let positions = Positions::of(text);
        let id = path(&["policies".into(), 0.into(), "id".into()]);
        assert_eq!(positions.key(&id), Some(Position { line: 2, column: 5 }));
        assert_eq!(positions.value(&id), Some(Position { line: 2, column: 9 }));
        let allow = path(&[
            "policies".into(),
            0.into(),
            "rules".into(),
            0.into(),
            "allow".into(),
        ]);
        assert_eq!(positions.key(&allow), Some(Position { line: 5, column: 9 }));
        // Inside the quotes: `true` starts at column 17.
        assert_eq!(
            positions.inside(&allow, 1, 1),
            Some(Position {
                line: 5,
                column: 17
            })
        );
        assert_eq!(
            positions.find_key(&path(&["policies".into(), 0.into()]), "allow"),
            Some(Position { line: 5, column: 9 })
        );
    }

    #[test]
    fn flow_style_is_located() {
        let text = "policies: [{id: a, issuers: [x]}, {id: b}]\n";
        let positions = Positions::of(text);
        let id = path(&["policies".into(), 1.into(), "id".into()]);
        assert_eq!(
            positions.key(&id),
            Some(Position {
                line: 1,
                column: 36
            })
        );
    }

    #[test]
    fn unreadable_text_locates_nothing() {
        let positions = Positions::of("policies: [\n");
        assert_eq!(positions.key(&path(&["policies".into()])), None);
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_indexed_without_panicking(
            text in "([ -~]|[-:&*!|>\\[\\]{}#'\"\n ]){0,200}",
        ) {
            let positions = Positions::of(&text);
            let _ = positions.find_key(&[], "id");
        }
    }
}

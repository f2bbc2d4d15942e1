//! A fast reader for plain query documents: the executable GraphQL that clients send
//! (operations, fragments, arguments, variables, directives, strings with the simple
//! escapes), straight into a [`Document`] in one pass over the bytes.
//!
//! Why not apollo-parser alone: it builds a lossless syntax tree (every token, every piece
//! of whitespace) that Sluis then walks. For the 4.8 KB QIR-0001-ZKi template that is
//! about 1.4 M instructions, some 250 µs, against a target of 50 µs for the whole
//! decision. The other maintained parsers measured no better than 0.4 M (cynic-parser) or
//! read documents differently from the specification (graphql-query: block strings,
//! `= null` defaults, no nesting bound); BENCHMARKS.md has the figures.
//!
//! So this reader reads only what it is sure of and gives up on everything else —
//! block strings, `\u` escapes, a byte-order mark, type-system definitions, directives on
//! variables, any syntax error, nesting or token counts over the limits — and then
//! apollo-parser reads the document instead ([`super::apollo`]) and gives the error if
//! there is one. Where this reader does answer, it must give exactly apollo's document:
//! `tests.rs` compares the two on the iWlz templates and on hostile and odd documents.

use super::document::{Document, FieldSelection, FragmentDefinition, OperationDefinition};
use super::document::{Selection, sorted_unique};
use super::{ArgValue, Directive, Limits, OperationType, VariableDefinition};

/// The document in `text`, or `None` when this reader leaves it to apollo-parser.
pub fn read(text: &str, limits: &Limits) -> Option<Document> {
    let mut parser = Parser {
        lexer: Lexer {
            text,
            at: 0,
            tokens: 0,
            max_tokens: limits.max_tokens,
            gave_up: false,
        },
        peeked: None,
        depth: 0,
        max_depth: limits.parser_recursion(),
    };
    parser.document()
}

#[derive(Debug, Clone, PartialEq)]
enum Token<'a> {
    /// One of `! $ ( ) : = @ [ ] { }`.
    Punct(u8),
    /// `...`
    Spread,
    Name(&'a str),
    /// An Int or Float, as written.
    Number(&'a str),
    /// A string's value, escapes resolved.
    String(String),
    End,
}

struct Lexer<'a> {
    text: &'a str,
    at: usize,
    tokens: usize,
    max_tokens: usize,
    /// Once it gives up, it stays given up: a parser that only peeked (and saw no `)`)
    /// must not go on reading after the bytes it could not read.
    gave_up: bool,
}

impl<'a> Lexer<'a> {
    fn byte(&self, at: usize) -> Option<u8> {
        self.text.as_bytes().get(at).copied()
    }

    fn next(&mut self) -> Option<Token<'a>> {
        if self.gave_up {
            return None;
        }
        let token = self.token();
        self.gave_up = token.is_none();
        token
    }

    fn token(&mut self) -> Option<Token<'a>> {
        self.skip_ignored()?;
        let Some(byte) = self.byte(self.at) else {
            return Some(Token::End);
        };
        self.tokens += 1;
        if self.tokens > self.max_tokens {
            return None;
        }
        let start = self.at;
        match byte {
            b'!' | b'$' | b'(' | b')' | b':' | b'=' | b'@' | b'[' | b']' | b'{' | b'}' => {
                self.at += 1;
                Some(Token::Punct(byte))
            }
            b'.' => {
                if self.byte(start + 1) == Some(b'.') && self.byte(start + 2) == Some(b'.') {
                    self.at += 3;
                    Some(Token::Spread)
                } else {
                    None
                }
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                let bytes = self.text.as_bytes();
                let mut end = start + 1;
                while bytes
                    .get(end)
                    .is_some_and(|&b| b == b'_' || b.is_ascii_alphanumeric())
                {
                    end += 1;
                }
                self.at = end;
                Some(Token::Name(self.text.get(start..end)?))
            }
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            _ => None,
        }
    }

    /// Whitespace, line ends, commas and comments; `None` for a byte the specification
    /// does not allow in a document (control characters). A byte-order mark is not
    /// skipped: apollo-parser reads such a document.
    fn skip_ignored(&mut self) -> Option<()> {
        let bytes = self.text.as_bytes();
        let mut at = self.at;
        loop {
            match bytes.get(at) {
                Some(b' ' | b'\t' | b'\n' | b'\r' | b',') => at += 1,
                Some(b'#') => loop {
                    at += 1;
                    match bytes.get(at) {
                        None | Some(b'\n' | b'\r') => break,
                        Some(&b) if (b < 0x20 && b != b'\t') || b == 0x7f => return None,
                        Some(_) => {}
                    }
                },
                _ => break,
            }
        }
        self.at = at;
        Some(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, not followed by `.` or a name.
    fn number(&mut self) -> Option<Token<'a>> {
        let start = self.at;
        if self.byte(self.at) == Some(b'-') {
            self.at += 1;
        }
        match self.byte(self.at)? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.byte(self.at) == Some(b'.') {
            self.at += 1;
            if !self.byte(self.at)?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if matches!(self.byte(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.byte(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !self.byte(self.at)?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if self
            .byte(self.at)
            .is_some_and(|b| b == b'.' || b == b'_' || b.is_ascii_alphanumeric())
        {
            return None;
        }
        Some(Token::Number(self.text.get(start..self.at)?))
    }

    fn digits(&mut self) {
        while self.byte(self.at).is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    /// A `"..."` string with the escapes `\" \\ \/ \b \f \n \r \t`; a block string or a
    /// `\u` escape is left to apollo-parser.
    fn string(&mut self) -> Option<Token<'a>> {
        self.at += 1;
        if self.byte(self.at) == Some(b'"') {
            if self.byte(self.at + 1) == Some(b'"') {
                return None;
            }
            self.at += 1;
            return Some(Token::String(String::new()));
        }
        let mut value = String::new();
        let mut run = self.at;
        loop {
            let byte = self.byte(self.at)?;
            match byte {
                b'"' => {
                    value.push_str(self.text.get(run..self.at)?);
                    self.at += 1;
                    return Some(Token::String(value));
                }
                b'\\' => {
                    value.push_str(self.text.get(run..self.at)?);
                    value.push(crate::json::reader::short_escape(self.byte(self.at + 1)?)?);
                    self.at += 2;
                    run = self.at;
                }
                b'\t' => self.at += 1,
                0..0x20 | 0x7f => return None,
                _ => self.at += 1,
            }
        }
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
    /// Selection sets, lists, input objects and list types open around the current token.
    depth: usize,
    max_depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Option<&Token<'a>> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        self.peeked.as_ref()
    }

    fn bump(&mut self) -> Option<Token<'a>> {
        match self.peeked.take() {
            Some(token) => Some(token),
            None => self.lexer.next(),
        }
    }

    fn at_punct(&mut self, punct: u8) -> bool {
        self.peek() == Some(&Token::Punct(punct))
    }

    fn expect(&mut self, punct: u8) -> Option<()> {
        (self.bump()? == Token::Punct(punct)).then_some(())
    }

    fn name(&mut self) -> Option<&'a str> {
        match self.bump()? {
            Token::Name(name) => Some(name),
            _ => None,
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= self.max_depth).then_some(())
    }

    fn document(&mut self) -> Option<Document> {
        let mut document = Document::default();
        loop {
            match self.peek()? {
                Token::End => break,
                Token::Punct(b'{') => {
                    let selection = self.selection_set()?;
                    document.operations.push(OperationDefinition {
                        operation: OperationType::Query,
                        name: None,
                        variable_definitions: Vec::new(),
                        directives: Vec::new(),
                        selection,
                    });
                }
                Token::Name("query" | "mutation" | "subscription") => {
                    let operation = self.operation()?;
                    document.operations.push(operation);
                }
                Token::Name("fragment") => {
                    let fragment = self.fragment()?;
                    document.fragments.push(fragment);
                }
                _ => return None,
            }
        }
        let empty = document.operations.is_empty() && document.fragments.is_empty();
        (!empty).then_some(document)
    }

    fn operation(&mut self) -> Option<OperationDefinition> {
        let operation = match self.name()? {
            "query" => OperationType::Query,
            "mutation" => OperationType::Mutation,
            "subscription" => OperationType::Subscription,
            _ => return None,
        };
        let name = match self.peek()? {
            Token::Name(name) => {
                let name = (*name).to_owned();
                self.bump()?;
                Some(name)
            }
            _ => None,
        };
        let variable_definitions = if self.at_punct(b'(') {
            self.variable_definitions()?
        } else {
            Vec::new()
        };
        let directives = self.directives()?;
        let selection = self.selection_set()?;
        Some(OperationDefinition {
            operation,
            name,
            variable_definitions,
            directives,
            selection,
        })
    }

    fn fragment(&mut self) -> Option<FragmentDefinition> {
        self.name()?;
        let name = self.name()?;
        if name == "on" || self.name()? != "on" {
            return None;
        }
        self.name()?;
        let directives = !self.directives()?.is_empty();
        let selection = self.selection_set()?;
        Some(FragmentDefinition {
            name: name.to_owned(),
            directives,
            selection,
        })
    }

    fn variable_definitions(&mut self) -> Option<Vec<VariableDefinition>> {
        self.expect(b'(')?;
        let mut definitions = Vec::new();
        loop {
            self.expect(b'$')?;
            let name = self.name()?.to_owned();
            self.expect(b':')?;
            let mut ty = String::new();
            self.ty(&mut ty)?;
            let default = if self.at_punct(b'=') {
                self.bump()?;
                Some(self.value(true)?)
            } else {
                None
            };
            if self.at_punct(b'@') {
                return None;
            }
            definitions.push(VariableDefinition { name, ty, default });
            if self.at_punct(b')') {
                self.bump()?;
                return Some(definitions);
            }
        }
    }

    /// `Name`, `[Type]`, either with `!`, written without whitespace into `out`.
    fn ty(&mut self, out: &mut String) -> Option<()> {
        match self.bump()? {
            Token::Name(name) => out.push_str(name),
            Token::Punct(b'[') => {
                self.enter()?;
                out.push('[');
                self.ty(out)?;
                self.expect(b']')?;
                out.push(']');
                self.depth -= 1;
            }
            _ => return None,
        }
        if self.at_punct(b'!') {
            self.bump()?;
            out.push('!');
        }
        Some(())
    }

    fn selection_set(&mut self) -> Option<Vec<Selection>> {
        self.expect(b'{')?;
        self.enter()?;
        let mut selections = Vec::new();
        loop {
            selections.push(self.selection()?);
            if self.at_punct(b'}') {
                self.bump()?;
                self.depth -= 1;
                return Some(selections);
            }
        }
    }

    fn selection(&mut self) -> Option<Selection> {
        match self.bump()? {
            Token::Spread => match self.peek()? {
                Token::Name("on") => {
                    self.bump()?;
                    self.name()?;
                    self.inline_fragment()
                }
                Token::Name(name) => {
                    let name = (*name).to_owned();
                    self.bump()?;
                    let directives = !self.directives()?.is_empty();
                    Some(Selection::Spread { name, directives })
                }
                Token::Punct(b'@' | b'{') => self.inline_fragment(),
                _ => None,
            },
            Token::Name(first) => {
                let (alias, name) = if self.at_punct(b':') {
                    self.bump()?;
                    (Some(first.to_owned()), self.name()?.to_owned())
                } else {
                    (None, first.to_owned())
                };
                let arguments = if self.at_punct(b'(') {
                    self.arguments()?
                } else {
                    Vec::new()
                };
                let directives = self.directives()?;
                let selection = if self.at_punct(b'{') {
                    self.selection_set()?
                } else {
                    Vec::new()
                };
                Some(Selection::Field(FieldSelection {
                    name,
                    alias,
                    arguments,
                    directives,
                    selection,
                }))
            }
            _ => None,
        }
    }

    fn inline_fragment(&mut self) -> Option<Selection> {
        let directives = !self.directives()?.is_empty();
        let selection = self.selection_set()?;
        Some(Selection::Inline {
            directives,
            selection,
        })
    }

    fn arguments(&mut self) -> Option<Vec<(String, ArgValue)>> {
        self.expect(b'(')?;
        let mut arguments = Vec::new();
        loop {
            let name = self.name()?.to_owned();
            self.expect(b':')?;
            arguments.push((name, self.value(false)?));
            if self.at_punct(b')') {
                self.bump()?;
                return sorted_unique(arguments, "argument").ok();
            }
        }
    }

    fn directives(&mut self) -> Option<Vec<Directive>> {
        let mut directives = Vec::new();
        while self.at_punct(b'@') {
            self.bump()?;
            let name = self.name()?.to_owned();
            let arguments = if self.at_punct(b'(') {
                self.arguments()?
            } else {
                Vec::new()
            };
            directives.push(Directive { name, arguments });
        }
        Some(directives)
    }

    /// A value; `constant` (a default value) refuses variables.
    fn value(&mut self, constant: bool) -> Option<ArgValue> {
        Some(match self.bump()? {
            Token::Punct(b'$') if !constant => ArgValue::Variable(self.name()?.to_owned()),
            Token::Number(text) => ArgValue::Number(text.to_owned()),
            Token::String(text) => ArgValue::String(text),
            Token::Name("true") => ArgValue::Bool(true),
            Token::Name("false") => ArgValue::Bool(false),
            Token::Name("null") => ArgValue::Null,
            Token::Name(name) => ArgValue::Enum(name.to_owned()),
            Token::Punct(b'[') => {
                self.enter()?;
                let mut items = Vec::new();
                while !self.at_punct(b']') {
                    items.push(self.value(constant)?);
                }
                self.bump()?;
                self.depth -= 1;
                ArgValue::List(items)
            }
            Token::Punct(b'{') => {
                self.enter()?;
                let mut entries = Vec::new();
                while !self.at_punct(b'}') {
                    let name = self.name()?.to_owned();
                    self.expect(b':')?;
                    entries.push((name, self.value(constant)?));
                }
                self.bump()?;
                self.depth -= 1;
                ArgValue::Object(sorted_unique(entries, "input field").ok()?)
            }
            _ => return None,
        })
    }
}

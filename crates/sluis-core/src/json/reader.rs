//! One pass over a JSON text, reading what the caller asks for and checking the rest as
//! strictly as [`super::strict_json`] does: the grammar and limits of `serde_json`
//! (strings without control characters or lone surrogates, numbers within `f64`, no more
//! than 127 nested containers) and no member named twice in any object, with escaped names
//! compared decoded (`"a\u0062"` is `"ab"`).
//!
//! A FHIR answer is mostly read to be judged on a few members and passed on as it came:
//! building the rest (as a `serde_json::Value` or through serde's visitors) costs more than
//! the judgement. [`Reader`] walks the text once; a caller takes the members it wants
//! ([`Reader::string`], [`Reader::json_value`], its own builder over
//! [`Reader::begin_object`]/[`Reader::next_name`]), lets [`Reader::check_value`] go over the
//! others without allocating, and knows where each value starts and ends
//! ([`Reader::value_start`], [`Reader::position`]) to copy it out as text.
//!
//! The member names of the objects being read are kept on one stack shared by all of them,
//! so checking an object's names costs no allocation of its own. A name without escapes is
//! its own decoding, so such names are compared as the text spells them (no string made);
//! an object with a name that has escapes, or of more than [`INLINE_NAMES`] members, moves
//! its names to a set of decoded names, so `"a\u0062"` repeats `"ab"` and a huge object
//! stays linear.

use std::borrow::Cow;
use std::collections::HashSet;

/// Why a text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// An object names a member twice (the name is the text's data: not kept).
    Duplicate,
    /// Not JSON, or beyond what `serde_json` reads (nesting, a number's range).
    Syntax,
}

/// `serde_json`'s recursion limit: a value may open this many containers less one.
pub const MAX_DEPTH: u8 = 128;

/// Names compared one by one before an object's names move to a set.
pub const INLINE_NAMES: usize = 16;

/// A JSON text being read.
pub struct Reader<'a> {
    text: &'a str,
    pos: usize,
    /// Containers that may still be opened before the limit (see [`MAX_DEPTH`]).
    depth_left: u8,
    /// The names seen so far of every object being read, outermost first, as spelt (none
    /// has escapes); each object checks its own (from its [`Object::base`]) and drops them
    /// when it closes.
    names: Vec<&'a str>,
}

/// An object being read: see [`Reader::next_name`].
pub struct Object<'a> {
    /// Where its names start on [`Reader::names`].
    base: usize,
    first: bool,
    /// Its names, decoded, once there are more than [`INLINE_NAMES`] or one has escapes.
    many: Option<HashSet<Cow<'a, str>>>,
}

/// A place in the text to go back to: see [`Reader::mark`].
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub pos: usize,
    depth_left: u8,
    names: usize,
}

/// A value that is no list or object: see [`Reader::scalar`].
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    /// Borrowed from the text unless it has escapes.
    String(Cow<'a, str>),
}

/// A list being read: see [`Reader::next_item`].
pub struct Array {
    first: bool,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Reader<'a> {
        Reader {
            text,
            pos: 0,
            depth_left: MAX_DEPTH,
            names: Vec::new(),
        }
    }

    /// The byte offset reached.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// How many bytes of the text are left to read.
    pub fn remaining(&self) -> usize {
        self.text.len().saturating_sub(self.pos)
    }

    /// Where the next value starts, and what else to go back to with [`Reader::reset`].
    pub fn mark(&mut self) -> Mark {
        Mark {
            pos: self.value_start(),
            depth_left: self.depth_left,
            names: self.names.len(),
        }
    }

    /// Goes back to `mark`, as if nothing after it had been read (a value refused halfway
    /// is passed over again with [`Reader::skip_value`]).
    pub fn reset(&mut self, mark: Mark) {
        self.pos = mark.pos;
        self.depth_left = mark.depth_left;
        self.names.truncate(mark.names);
    }

    /// The text between two offsets this reader reported.
    pub fn slice(&self, from: usize, to: usize) -> &'a str {
        self.text.get(from..to).unwrap_or_default()
    }

    /// The depth limit starts over from here (a value read as if it were a text of its
    /// own); returns what to give [`Reader::restore_depth`] after it.
    pub fn fresh_depth(&mut self) -> u8 {
        std::mem::replace(&mut self.depth_left, MAX_DEPTH)
    }

    pub fn restore_depth(&mut self, depth_left: u8) {
        self.depth_left = depth_left;
    }

    fn byte(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// The first byte of the next value, whitespace skipped.
    pub fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.byte() {
            self.pos += 1;
        }
        self.byte()
    }

    /// Where the next value starts.
    pub fn value_start(&mut self) -> usize {
        self.peek();
        self.pos
    }

    fn eat(&mut self, byte: u8) -> Result<(), ReadError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(ReadError::Syntax)
        }
    }

    /// Nothing but whitespace is left.
    pub fn end(&mut self) -> Result<(), ReadError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(ReadError::Syntax),
        }
    }

    fn enter(&mut self) -> Result<(), ReadError> {
        self.depth_left = self.depth_left.saturating_sub(1);
        if self.depth_left == 0 {
            Err(ReadError::Syntax)
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        self.depth_left = self.depth_left.saturating_add(1);
    }

    /// Opens the object that comes next.
    pub fn begin_object(&mut self) -> Result<Object<'a>, ReadError> {
        self.eat(b'{')?;
        self.opened_object()
    }

    /// The object whose `{` was just read.
    #[inline]
    fn opened_object(&mut self) -> Result<Object<'a>, ReadError> {
        self.enter()?;
        Ok(Object {
            base: self.names.len(),
            first: true,
            many: None,
        })
    }

    /// The next member's name, its value next to read (it must be read or checked before
    /// the next call); `None` once the object is closed. A name seen before in the same
    /// object is refused.
    pub fn next_name(
        &mut self,
        object: &mut Object<'a>,
    ) -> Result<Option<Cow<'a, str>>, ReadError> {
        if self.member_follows(object)? {
            self.member_name(object).map(Some)
        } else {
            Ok(None)
        }
    }

    /// [`Reader::next_name`] for a member only checked: whether there is one.
    fn next_member(&mut self, object: &mut Object<'a>) -> Result<bool, ReadError> {
        if !self.member_follows(object)? {
            return Ok(false);
        }
        if self.plain_member_name(object)?.is_none() {
            self.other_member_name(object)?;
        }
        Ok(true)
    }

    /// Whether a member follows (its name's `"` next), or the object is closed.
    #[inline]
    fn member_follows(&mut self, object: &mut Object<'a>) -> Result<bool, ReadError> {
        match self.peek() {
            Some(b'"') if object.first => {}
            Some(b',') if !object.first => {
                self.pos += 1;
                if self.peek() != Some(b'"') {
                    return Err(ReadError::Syntax);
                }
            }
            Some(b'}') => {
                self.close(object);
                return Ok(false);
            }
            _ => return Err(ReadError::Syntax),
        }
        object.first = false;
        Ok(true)
    }

    /// The name whose `"` comes next, checked against the object's others (before the
    /// colon, where serde_json's visitor checks it), and its colon.
    #[inline]
    fn member_name(&mut self, object: &mut Object<'a>) -> Result<Cow<'a, str>, ReadError> {
        match self.plain_member_name(object)? {
            Some(name) => Ok(Cow::Borrowed(name)),
            None => self.other_member_name(object),
        }
    }

    /// [`Reader::member_name`] for the common name: no escapes, in an object whose names
    /// are still on the stack ([`INLINE_NAMES`]). `None`, nothing read, for any other.
    /// (Apart from [`Reader::other_member_name`], so that the names read most are read by
    /// a few instructions inlined where they are read: the whole function, with the set
    /// of decoded names, cost about 45 instructions a name in saving registers alone.)
    #[inline(always)]
    fn plain_member_name(&mut self, object: &Object<'a>) -> Result<Option<&'a str>, ReadError> {
        let base = object.base;
        if object.many.is_some() || self.names.len() - base >= INLINE_NAMES {
            return Ok(None);
        }
        let start = self.pos + 1;
        let stop = self.plain_run(start);
        if self.text.as_bytes().get(stop) != Some(&b'"') {
            return Ok(None);
        }
        let name = self.slice(start, stop);
        let seen = self.names.get(base..).unwrap_or_default();
        if seen.iter().any(|s| same_name(s, name)) {
            return Err(ReadError::Duplicate);
        }
        self.names.push(name);
        self.pos = stop + 1;
        // The colon mostly follows the name at once.
        if self.byte() == Some(b':') {
            self.pos += 1;
        } else {
            self.eat(b':')?;
        }
        Ok(Some(name))
    }

    /// [`Reader::member_name`] for a name with escapes, or in an object of many names:
    /// the object's names move to a set of decoded names.
    #[cold]
    #[inline(never)]
    fn other_member_name(&mut self, object: &mut Object<'a>) -> Result<Cow<'a, str>, ReadError> {
        let base = object.base;
        let name = self.string()?;
        let names = &mut self.names;
        let set = object
            .many
            .get_or_insert_with(|| names.drain(base..).map(Cow::Borrowed).collect());
        if !set.insert(name.clone()) {
            return Err(ReadError::Duplicate);
        }
        self.eat(b':')?;
        Ok(name)
    }

    fn close(&mut self, object: &Object<'a>) {
        self.pos += 1;
        self.names.truncate(object.base);
        self.leave();
    }

    /// Opens the list that comes next.
    pub fn begin_array(&mut self) -> Result<Array, ReadError> {
        self.eat(b'[')?;
        self.opened_array()
    }

    /// The list whose `[` was just read.
    #[inline]
    fn opened_array(&mut self) -> Result<Array, ReadError> {
        self.enter()?;
        Ok(Array { first: true })
    }

    /// Whether another item follows (to be read or checked before the next call); `false`
    /// once the list is closed.
    pub fn next_item(&mut self, array: &mut Array) -> Result<bool, ReadError> {
        match self.peek() {
            Some(b']') => {
                self.pos += 1;
                self.leave();
                Ok(false)
            }
            Some(b',') if !array.first => {
                self.pos += 1;
                if self.peek() == Some(b']') {
                    return Err(ReadError::Syntax);
                }
                Ok(true)
            }
            Some(_) if array.first => {
                array.first = false;
                Ok(true)
            }
            _ => Err(ReadError::Syntax),
        }
    }

    /// The string that comes next, decoded; borrowed from the text unless it has escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>, ReadError> {
        self.eat(b'"')?;
        self.string_rest()
    }

    /// The rest of a string whose `"` was read, decoded.
    #[inline]
    fn string_rest(&mut self) -> Result<Cow<'a, str>, ReadError> {
        let start = self.pos;
        let stop = self.plain_run(start);
        self.pos = stop;
        match self.byte() {
            Some(b'"') => {
                self.pos += 1;
                Ok(Cow::Borrowed(self.slice(start, stop)))
            }
            Some(b'\\') => {
                let mut decoded = String::from(self.slice(start, stop));
                loop {
                    match self.byte() {
                        Some(b'"') => {
                            self.pos += 1;
                            return Ok(Cow::Owned(decoded));
                        }
                        Some(b'\\') => {
                            self.pos += 1;
                            decoded.push(self.escape()?);
                        }
                        _ => return Err(ReadError::Syntax),
                    }
                    let from = self.pos;
                    let stop = self.plain_run(from);
                    decoded.push_str(self.slice(from, stop));
                    self.pos = stop;
                }
            }
            _ => Err(ReadError::Syntax),
        }
    }

    /// Checks the rest of a string whose `"` was read (escapes as [`Reader::string`]
    /// decodes them).
    fn check_string_rest(&mut self) -> Result<(), ReadError> {
        loop {
            self.pos = self.plain_run(self.pos);
            match self.byte() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape()?;
                }
                _ => return Err(ReadError::Syntax),
            }
        }
    }

    /// Where the run of bytes from `from` that need no attention ends: at the first `"`,
    /// `\` or control character (or the end). Eight bytes at a time. (Sixteen at a time,
    /// written for the compiler to test together, did not become one vector test: a judged
    /// Bundle cost 2.38 M instructions instead of 1.93 M.)
    fn plain_run(&self, from: usize) -> usize {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let bytes = self.text.as_bytes();
        let mut at = from;
        while let Some(chunk) = bytes.get(at..at + 8) {
            let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
                break;
            };
            let word = u64::from_le_bytes(chunk);
            let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
            // The lowest flagged byte is exact (a borrow only runs upwards).
            let found = zero(word ^ (ONES * u64::from(b'"')))
                | zero(word ^ (ONES * u64::from(b'\\')))
                | (word.wrapping_sub(ONES * 0x20) & !word & HIGH);
            if found != 0 {
                return at + (found.trailing_zeros() / 8) as usize;
            }
            at += 8;
        }
        while let Some(&b) = bytes.get(at) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                break;
            }
            at += 1;
        }
        at
    }

    /// One escape, after its `\`: what it stands for. A `\u` surrogate must be a leading
    /// one followed by `\u` and a trailing one, as `serde_json` reads a string.
    fn escape(&mut self) -> Result<char, ReadError> {
        let Some(kind) = self.byte() else {
            return Err(ReadError::Syntax);
        };
        self.pos += 1;
        if let Some(c) = short_escape(kind) {
            return Ok(c);
        }
        Ok(match kind {
            b'u' => {
                let first = self.hex4()?;
                match first {
                    0xDC00..=0xDFFF => return Err(ReadError::Syntax),
                    0xD800..=0xDBFF => {
                        if self.byte() != Some(b'\\') {
                            return Err(ReadError::Syntax);
                        }
                        self.pos += 1;
                        if self.byte() != Some(b'u') {
                            return Err(ReadError::Syntax);
                        }
                        self.pos += 1;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(ReadError::Syntax);
                        }
                        let code = (((u32::from(first) - 0xD800) << 10)
                            | (u32::from(second) - 0xDC00))
                            + 0x1_0000;
                        char::from_u32(code).ok_or(ReadError::Syntax)?
                    }
                    _ => char::from_u32(u32::from(first)).ok_or(ReadError::Syntax)?,
                }
            }
            _ => return Err(ReadError::Syntax),
        })
    }

    fn hex4(&mut self) -> Result<u16, ReadError> {
        let digits = self
            .text
            .as_bytes()
            .get(self.pos..self.pos + 4)
            .ok_or(ReadError::Syntax)?;
        let mut value = 0u16;
        for &digit in digits {
            let nibble = match digit {
                b'0'..=b'9' => digit - b'0',
                b'a'..=b'f' => digit - b'a' + 10,
                b'A'..=b'F' => digit - b'A' + 10,
                _ => return Err(ReadError::Syntax),
            };
            value = (value << 4) | u16::from(nibble);
        }
        self.pos += 4;
        Ok(value)
    }

    /// The text of the number that comes next: every byte a number may hold (what ends
    /// a number in valid JSON is none of them).
    fn number_text(&mut self) -> &'a str {
        let start = self.value_start();
        let bytes = self.text.as_bytes().get(start..).unwrap_or_default();
        let len = bytes
            .iter()
            .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            .count();
        self.pos = start + len;
        self.slice(start, start + len)
    }

    /// The number that comes next, as `serde_json` reads it (its own parser: the same
    /// range and the same choice of unsigned, signed or floating).
    pub fn number(&mut self) -> Result<serde_json::Number, ReadError> {
        let text = self.number_text();
        if let Some(plain) = plain_integer(text) {
            return Ok(plain.into());
        }
        text.parse().map_err(|_| ReadError::Syntax)
    }

    fn check_number(&mut self) -> Result<(), ReadError> {
        let text = self.number_text();
        if plain_integer(text).is_some() || text.parse::<serde_json::Number>().is_ok() {
            Ok(())
        } else {
            Err(ReadError::Syntax)
        }
    }

    /// `true`, `false` or `null`, the first byte already seen.
    fn literal(&mut self, word: &[u8]) -> Result<(), ReadError> {
        let end = self.pos + word.len();
        if self.text.as_bytes().get(self.pos..end) == Some(word) {
            self.pos = end;
            Ok(())
        } else {
            Err(ReadError::Syntax)
        }
    }

    /// The value that comes next if it is no list or object; `None` (nothing read) if it
    /// is one.
    pub fn scalar(&mut self) -> Result<Option<Scalar<'a>>, ReadError> {
        Ok(Some(match self.peek() {
            Some(b'{' | b'[') => return Ok(None),
            Some(b'"') => {
                self.pos += 1;
                Scalar::String(self.string_rest()?)
            }
            Some(b'-' | b'0'..=b'9') => Scalar::Number(self.number()?),
            Some(b't') => self.literal(b"true").map(|()| Scalar::Bool(true))?,
            Some(b'f') => self.literal(b"false").map(|()| Scalar::Bool(false))?,
            Some(b'n') => self.literal(b"null").map(|()| Scalar::Null)?,
            _ => return Err(ReadError::Syntax),
        }))
    }

    /// Checks the value that comes next, building nothing.
    pub fn check_value(&mut self) -> Result<(), ReadError> {
        // The byte seen is taken as it is (not looked for again, as `begin_object` would).
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut object = self.opened_object()?;
                while self.next_member(&mut object)? {
                    self.check_value()?;
                }
                Ok(())
            }
            Some(b'[') => {
                self.pos += 1;
                let mut array = self.opened_array()?;
                while self.next_item(&mut array)? {
                    self.check_value()?;
                }
                Ok(())
            }
            Some(b'"') => {
                self.pos += 1;
                self.check_string_rest()
            }
            Some(b'-' | b'0'..=b'9') => self.check_number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(ReadError::Syntax),
        }
    }

    /// The value that comes next as a `serde_json::Value`.
    pub fn json_value(&mut self) -> Result<serde_json::Value, ReadError> {
        use serde_json::Value;
        if let Some(scalar) = self.scalar()? {
            return Ok(match scalar {
                Scalar::Null => Value::Null,
                Scalar::Bool(b) => Value::Bool(b),
                Scalar::Number(n) => Value::Number(n),
                Scalar::String(s) => Value::String(s.into_owned()),
            });
        }
        if self.peek() == Some(b'{') {
            let mut map = serde_json::Map::new();
            let mut object = self.begin_object()?;
            while let Some(name) = self.next_name(&mut object)? {
                let value = self.json_value()?;
                map.insert(name.into_owned(), value);
            }
            return Ok(Value::Object(map));
        }
        let mut items = Vec::new();
        let mut array = self.begin_array()?;
        while self.next_item(&mut array)? {
            items.push(self.json_value()?);
        }
        Ok(Value::Array(items))
    }

    /// Passes over the value that comes next checking its syntax alone, as `serde_json`
    /// passes over a value it ignores: names may repeat, `\u` escapes need not pair,
    /// numbers need not fit, nesting is not limited. For what is refused on other grounds
    /// anyway (a list too long, a value of the wrong kind), so that a syntax error further
    /// on still counts first.
    pub fn skip_value(&mut self) -> Result<(), ReadError> {
        let start = self.value_start();
        let rest = self.text.get(start..).unwrap_or_default();
        let mut values =
            serde_json::Deserializer::from_str(rest).into_iter::<serde::de::IgnoredAny>();
        match values.next() {
            Some(Ok(_)) => {
                self.pos = start + values.byte_offset();
                Ok(())
            }
            _ => Err(ReadError::Syntax),
        }
    }
}

/// Whether two member names are the same: the length and the first byte tell most names
/// of an object apart; the same ones are compared eight bytes at a time and the rest byte
/// by byte, inline. Names are short (4–12 bytes), and a call to `memcmp` for each name a
/// rule found cost more than the comparison (550 calls per judged Bundle). (Written with
/// indices, not `chunks_exact` and `zip`: where the compiler did not inline those, making
/// the `Zip` alone cost 65k instructions per judged Bundle.)
#[inline(always)]
pub fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() || a.first() != b.first() {
        return false;
    }
    let word = |bytes: Option<&[u8]>| {
        bytes
            .and_then(|chunk| <[u8; 8]>::try_from(chunk).ok())
            .map(u64::from_le_bytes)
    };
    let mut at = 0;
    while let Some(p) = word(a.get(at..at + 8)) {
        if Some(p) != word(b.get(at..at + 8)) {
            return false;
        }
        at += 8;
    }
    while let Some(p) = a.get(at) {
        if Some(p) != b.get(at) {
            return false;
        }
        at += 1;
    }
    true
}

/// An integer of digits alone that fits in a `u64` for sure, as `serde_json` reads it.
fn plain_integer(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let plain = !bytes.is_empty()
        && bytes.len() <= 19
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes.len() == 1 || bytes.first() != Some(&b'0'));
    if plain { text.parse().ok() } else { None }
}

/// The character a one-letter escape (`\n`, `\"`, ...) stands for, as JSON and GraphQL
/// strings both write them; `None` for `u` and anything that is not an escape.
pub(crate) fn short_escape(byte: u8) -> Option<char> {
    Some(match byte {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests;

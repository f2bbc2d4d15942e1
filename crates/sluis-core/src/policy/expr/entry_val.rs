//! The `entry` variable of response rules, built straight from the answer's text with
//! only the members the rules read.
//!
//! Converting a whole FHIR resource to CEL (serde_json `Value`, then CEL's `Value`, then
//! its `dyn Val`: three copies of every string) cost more than the rules themselves, and a
//! rule reads a few members of it (`entry.resource.meta`, `entry.resource.identifier`).
//! At load, [`EntryFields::of`] finds which members of `entry` and of its members an
//! expression selects; [`read_entry_at`] reads one entry where it lies in the answer
//! ([`crate::json::reader`], one pass over the whole answer), builds those (whole, strings
//! borrowed from the text) into a plain [`Tree`] and only checks the rest: the same syntax
//! and "no member named twice" as `crate::json::strict_json`. A member a rule reads is
//! therefore exactly what it would be from the whole conversion, and absent when absent.
//! The entry fast path walks the tree; the CEL value ([`EntryValue::val`]) is made from it
//! only when a rule of the entry needs the interpreter.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use cel::common::ast::Expr as Node;
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
// The module, not its traits: `Indexer::get` in scope would hide `HashMap::get`.
use cel::common::traits;

use crate::json::reader::{Reader, Scalar, same_name};
use crate::sources::SharedMap;

/// Which members of `entry` the rules read: the whole entry, or some of its members,
/// each whole (`None`) or only some of its own members (`entry.resource.meta`). Names in
/// order, each once. (Lists rather than ordered maps: each member of every entry read is
/// looked up in them, and a few names compared one by one cost less than a search.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryFields {
    All,
    Some(Vec<(String, Option<Vec<String>>)>),
}

impl Default for EntryFields {
    fn default() -> EntryFields {
        EntryFields::Some(Vec::new())
    }
}

impl EntryFields {
    /// What expression `tree` reads of `entry`. A use that is not a field selection
    /// (`entry` passed whole, `entry.resource.size()` reads `resource` whole) takes all
    /// of what it names.
    pub fn of(tree: &Node) -> EntryFields {
        let mut fields = EntryFields::default();
        fields.walk(tree);
        fields
    }

    /// Also what `other` reads.
    pub fn merge(&mut self, other: &EntryFields) {
        let EntryFields::Some(other) = other else {
            *self = EntryFields::All;
            return;
        };
        for (top, sub) in other {
            match sub {
                None => self.add(&[top.as_str()]),
                Some(sub) => {
                    for field in sub {
                        self.add(&[top.as_str(), field.as_str()]);
                    }
                }
            }
        }
    }

    /// Also the member at `path` (its first two steps count).
    pub fn add(&mut self, path: &[&str]) {
        let EntryFields::Some(tops) = self else {
            return;
        };
        let (top, field) = match path {
            [] => {
                *self = EntryFields::All;
                return;
            }
            [top] => (*top, None),
            [top, field, ..] => (*top, Some(*field)),
        };
        let at = match tops.binary_search_by(|(name, _)| name.as_str().cmp(top)) {
            Ok(at) => at,
            Err(at) => {
                tops.insert(at, (top.to_owned(), Some(Vec::new())));
                at
            }
        };
        let Some((_, sub)) = tops.get_mut(at) else {
            return;
        };
        match (field, sub) {
            // The member whole.
            (None, sub) => *sub = None,
            (Some(_), None) => {}
            (Some(field), Some(fields)) => {
                if let Err(at) = fields.binary_search_by(|name| name.as_str().cmp(field)) {
                    fields.insert(at, field.to_owned());
                }
            }
        }
    }

    fn walk(&mut self, node: &Node) {
        if matches!(self, EntryFields::All) {
            return;
        }
        match node {
            // `entry` itself, not below a selection: all of it. (A comprehension variable
            // named `entry` is taken for it too: more is built, never less.)
            Node::Ident(name) if name == "entry" => *self = EntryFields::All,
            Node::Ident(_) | Node::Literal(_) | Node::Unspecified => {}
            Node::Select(select) => {
                // The selections down to the operand they start from.
                let mut path = vec![select.field.as_str()];
                let mut operand = &select.operand.expr;
                while let Node::Select(inner) = operand {
                    path.push(inner.field.as_str());
                    operand = &inner.operand.expr;
                }
                match operand {
                    Node::Ident(name) if name == "entry" => {
                        path.reverse();
                        self.add(&path);
                    }
                    other => self.walk(other),
                }
            }
            Node::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(&target.expr);
                }
                for arg in &call.args {
                    self.walk(&arg.expr);
                }
            }
            Node::Comprehension(comp) => {
                for part in [
                    &comp.iter_range,
                    &comp.accu_init,
                    &comp.loop_cond,
                    &comp.loop_step,
                    &comp.result,
                ] {
                    self.walk(&part.expr);
                }
            }
            Node::List(list) => {
                for element in &list.elements {
                    self.walk(&element.expr);
                }
            }
            Node::Map(map) => {
                for entry in &map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(entry) = &entry.expr {
                        self.walk(&entry.key.expr);
                        self.walk(&entry.value.expr);
                    }
                }
            }
            Node::Struct(structure) => {
                for field in &structure.entries {
                    if let cel::common::ast::EntryExpr::StructField(field) = &field.expr {
                        self.walk(&field.value.expr);
                    }
                }
            }
        }
    }
}

/// A JSON value of an entry as read: the members the rules read, strings borrowed from
/// the answer's text (decoded where they have escapes). The fast path
/// (`policy::expr::entry_fast`) walks it as it is ([`TreeRef`]); only a rule the
/// interpreter must evaluate has it converted to CEL values ([`Tree::to_val`], once per
/// entry). Building CEL maps for every entry (a `HashMap` with SipHash and a box per
/// value) cost more than the rules that read them.
///
/// All of an entry's values are kept in one list, in the order they are read (a value
/// before its members or items), each container pointing at its first member or item and
/// each of those at the next: one allocation per entry, where a list per object and per
/// list made about nine (and through Envoy the allocator took a sixth of Sluis's time).
#[derive(Debug, Clone, PartialEq)]
pub struct Tree<'a> {
    /// The values; the entry itself first. Never empty.
    nodes: Vec<Slot<'a>>,
}

/// One value of a [`Tree`].
#[derive(Debug, Clone, PartialEq)]
struct Slot<'a> {
    /// Its name, when it is a member of an object (empty otherwise).
    name: Cow<'a, str>,
    kind: Kind<'a>,
    /// The next member or item of the same container (0: none; 0 is the entry itself,
    /// which is no member).
    next: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind<'a> {
    Scalar(Scalar<'a>),
    /// The first item (0: none).
    List(usize),
    /// The first member (0: none). Members in the order sent; no name twice (the reader
    /// refuses a repeated one, and a `serde_json` object has none).
    Object(usize),
}

/// A value of a [`Tree`], as the fast path walks it.
#[derive(Debug, Clone, Copy)]
pub struct TreeRef<'t> {
    nodes: &'t [Slot<'t>],
    at: usize,
}

/// The members or items of a container: see [`TreeRef::items`].
pub struct Children<'t> {
    nodes: &'t [Slot<'t>],
    next: usize,
}

impl<'t> Iterator for Children<'t> {
    /// A member's name (empty for an item) and its value.
    type Item = (&'t str, TreeRef<'t>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next == 0 {
            return None;
        }
        let at = self.next;
        let node = self.nodes.get(at)?;
        self.next = node.next;
        Some((
            &*node.name,
            TreeRef {
                nodes: self.nodes,
                at,
            },
        ))
    }
}

impl<'t> TreeRef<'t> {
    fn kind(self) -> Option<&'t Kind<'t>> {
        self.nodes.get(self.at).map(|node| &node.kind)
    }

    fn children(self, first: usize) -> Children<'t> {
        Children {
            nodes: self.nodes,
            next: first,
        }
    }

    /// Whether it is an object.
    pub fn is_object(self) -> bool {
        matches!(self.kind(), Some(Kind::Object(_)))
    }

    /// The member `name` of an object; `None` if there is none or this is no object.
    pub fn member(self, name: &str) -> Option<TreeRef<'t>> {
        match self.kind()? {
            Kind::Object(first) => self
                .children(*first)
                .find_map(|(n, value)| same_name(n, name).then_some(value)),
            _ => None,
        }
    }

    /// The items of a list; `None` if this is no list.
    pub fn items(self) -> Option<impl Iterator<Item = TreeRef<'t>>> {
        match self.kind()? {
            Kind::List(first) => Some(self.children(*first).map(|(_, item)| item)),
            _ => None,
        }
    }

    /// The text of the string member `field` of its member `top` (`resource`,
    /// `resourceType`), if it was built.
    pub fn member_text(self, top: &str, field: &str) -> Option<&'t str> {
        self.member(top)?.member(field)?.text()
    }

    /// Its text, if it is a string.
    pub fn text(self) -> Option<&'t str> {
        match self.kind()? {
            Kind::Scalar(Scalar::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The JSON value it holds (members in a `serde_json` object's order): for comparing
    /// a tree with what `serde_json` or `strict_json` read of the same text.
    pub fn to_json(self) -> serde_json::Value {
        use serde_json::Value as Json;
        match self.kind() {
            None | Some(Kind::Scalar(Scalar::Null)) => Json::Null,
            Some(Kind::Scalar(Scalar::Bool(b))) => Json::Bool(*b),
            Some(Kind::Scalar(Scalar::Number(n))) => Json::Number(n.clone()),
            Some(Kind::Scalar(Scalar::String(s))) => Json::String(s.to_string()),
            Some(Kind::List(first)) => Json::Array(
                self.children(*first)
                    .map(|(_, item)| item.to_json())
                    .collect(),
            ),
            Some(Kind::Object(first)) => Json::Object(
                self.children(*first)
                    .map(|(name, value)| (name.to_owned(), value.to_json()))
                    .collect(),
            ),
        }
    }

    /// The CEL value the interpreter sees, as `cel::to_value` would convert the same JSON
    /// (objects in lists shared by their copies, [`SharedMap`]); strings borrowed.
    pub fn to_val(self) -> Box<dyn Val + 't> {
        match self.kind() {
            None | Some(Kind::Scalar(Scalar::Null)) => Box::new(CelNull),
            Some(Kind::Scalar(Scalar::Bool(b))) => Box::new(CelBool::from(*b)),
            Some(Kind::Scalar(Scalar::Number(n))) => number(n),
            Some(Kind::Scalar(Scalar::String(s))) => Box::new(CelString::from(&**s)),
            Some(Kind::List(first)) => Box::new(CelList::from(
                self.children(*first)
                    .map(|(_, item)| {
                        if item.is_object() {
                            SharedMap::of(item.to_val())
                        } else {
                            item.to_val()
                        }
                    })
                    .collect::<Vec<_>>(),
            )),
            Some(Kind::Object(first)) => Box::new(CelMap::from(
                self.children(*first)
                    .map(|(name, value)| (CelMapKey::from(name), value.to_val()))
                    .collect::<HashMap<_, _>>(),
            )),
        }
    }
}

impl<'a> Tree<'a> {
    /// The entry itself (of a tree holding one).
    pub fn root(&self) -> TreeRef<'_> {
        TreeRef {
            nodes: &self.nodes,
            at: 0,
        }
    }

    /// One of the entries of a Bundle's tree ([`BundleTrees`]).
    pub fn entry(&self, at: TreeAt) -> TreeRef<'_> {
        TreeRef {
            nodes: &self.nodes,
            at: at.0,
        }
    }

    /// A tree of `null` alone.
    fn null() -> Tree<'a> {
        Tree {
            nodes: vec![Slot {
                name: Cow::Borrowed(""),
                kind: Kind::Scalar(Scalar::Null),
                next: 0,
            }],
        }
    }

    /// The CEL value of the entry ([`TreeRef::to_val`]).
    pub fn to_val(&self) -> Box<dyn Val + '_> {
        self.root().to_val()
    }
}

/// Appends the values of a tree in reading order, linking each container's members and
/// items.
struct Builder<'a> {
    nodes: Vec<Slot<'a>>,
}

impl<'a> Builder<'a> {
    /// Values most entries hold no more than (one allocation each).
    const CAPACITY: usize = 24;

    fn new() -> Builder<'a> {
        Builder {
            nodes: Vec::with_capacity(Builder::CAPACITY),
        }
    }

    /// Adds a value (its members or items follow); returns where it is.
    fn push(&mut self, name: Cow<'a, str>, kind: Kind<'a>) -> usize {
        self.nodes.push(Slot {
            name,
            kind,
            next: 0,
        });
        self.nodes.len() - 1
    }

    /// Links `child` as the member or item of `parent` after `last` (the first if none).
    fn link(&mut self, parent: usize, last: Option<usize>, child: usize) {
        let slot = match last {
            None => match self.nodes.get_mut(parent).map(|node| &mut node.kind) {
                Some(Kind::List(first) | Kind::Object(first)) => first,
                _ => return,
            },
            Some(last) => match self.nodes.get_mut(last) {
                Some(node) => &mut node.next,
                None => return,
            },
        };
        *slot = child;
    }

    fn finish(self) -> Tree<'a> {
        if self.nodes.is_empty() {
            Tree::null()
        } else {
            Tree { nodes: self.nodes }
        }
    }
}

/// Where an entry's values start in the one list of a Bundle's ([`BundleTrees`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeAt(usize);

/// The entries of one Bundle read into one list of values, each entry's after the one
/// before ([`Tree::entry`] finds one): a Bundle's trees are one allocation, or a few, where
/// a list per entry made a hundred of them per answer (and through Envoy every block taken
/// from the allocator is likely a cache miss). The `0` that ends a chain of members stays
/// unambiguous: index 0 is the first entry itself, which is no entry's member.
pub struct BundleTrees<'a> {
    tree: Builder<'a>,
    /// Whether the list was made room for after the first entry.
    sized: bool,
}

impl Default for BundleTrees<'_> {
    fn default() -> Self {
        BundleTrees::new()
    }
}

impl<'a> BundleTrees<'a> {
    /// The room made for the entries after the first at most (values; 64 bytes each):
    /// beyond it the list grows as any `Vec` does.
    const MOST_RESERVED: usize = 64 * 1024;

    pub fn new() -> BundleTrees<'a> {
        BundleTrees {
            tree: Builder {
                nodes: Vec::with_capacity(Builder::CAPACITY),
            },
            sized: false,
        }
    }

    /// Reads the entry that comes next in `reader` as [`read_entry_at`] does, into the
    /// list; where it starts there.
    pub fn read_entry(
        &mut self,
        reader: &mut Reader<'a>,
        fields: &EntryFields,
    ) -> Result<TreeAt, ReadError> {
        let before = self.tree.nodes.len();
        let start = reader.value_start();
        match build(reader, Want::of(fields), Cow::Borrowed(""), &mut self.tree) {
            Ok(Some(at)) => {
                if !self.sized {
                    // The entries of a Bundle are alike: room for as many as the rest of
                    // the text would hold of the first, and half as many values again (some
                    // entries hold more: a security label, a second identifier), so that
                    // the list is not moved. Growing it past the room made copies it whole:
                    // 83k instructions per Bundle of the bench, more than the allocations
                    // saved.
                    self.sized = true;
                    let read = self.tree.nodes.len() - before;
                    let length = reader.position().saturating_sub(start).max(1);
                    let more = (reader.remaining() / length).saturating_mul(read);
                    let room = more.saturating_add(more / 2);
                    self.tree
                        .nodes
                        .reserve(room.min(BundleTrees::MOST_RESERVED));
                }
                Ok(TreeAt(at))
            }
            // An entry is an object: always built (`Want::of` is never `Nothing`).
            Ok(None) => Err(ReadError::Syntax),
            Err(e) => {
                self.tree.nodes.truncate(before);
                Err(e)
            }
        }
    }

    /// The entries read, in one tree.
    pub fn finish(self) -> Tree<'a> {
        self.tree.finish()
    }
}

/// One entry read for judging.
#[derive(Debug)]
pub struct ReadEntry<'a> {
    /// The `entry` variable (the members the rules read).
    pub tree: Tree<'a>,
}

impl<'a> ReadEntry<'a> {
    /// A string member of a member (`resource`, `resourceType`), if it was built.
    pub fn text(&self, top: &'static str, field: &'static str) -> Option<&str> {
        self.tree.root().member_text(top, field)
    }
}

/// The `entry` variable while one entry is judged: the tree the fast path walks, and the
/// CEL value the interpreter reads, converted the first time a rule needs it.
pub struct EntryValue<'t> {
    /// `None` when only the CEL value is known (the reference of tests).
    tree: Option<TreeRef<'t>>,
    /// `entry.resource.resourceType`, when the tree is known and it is a string: found
    /// once per entry, for every rule's guard ([`super::Expr::eval_bool_for_entry`]).
    resource_type: Option<&'t str>,
    val: OnceLock<Box<dyn Val + 't>>,
}

impl<'t> EntryValue<'t> {
    pub fn new(tree: &'t Tree<'t>) -> EntryValue<'t> {
        EntryValue::at(tree.root())
    }

    /// The entry whose values start at `tree` (one of a Bundle's: [`Tree::entry`]).
    pub fn at(tree: TreeRef<'t>) -> EntryValue<'t> {
        EntryValue {
            tree: Some(tree),
            resource_type: tree.member_text("resource", "resourceType"),
            val: OnceLock::new(),
        }
    }

    /// `entry.resource.resourceType`, if the tree is known and it is a string.
    pub fn resource_type(&self) -> Option<&'t str> {
        self.resource_type
    }

    /// An entry known only as a CEL value: every rule reads it through CEL's types.
    #[cfg(test)]
    pub(crate) fn of_val(val: Box<dyn Val + 't>) -> EntryValue<'t> {
        EntryValue {
            tree: None,
            resource_type: None,
            val: OnceLock::from(val),
        }
    }

    pub fn tree(&self) -> Option<TreeRef<'t>> {
        self.tree
    }

    /// The CEL value, converted on first use.
    pub fn val(&self) -> &(dyn Val + 't) {
        &**self.val.get_or_init(|| match self.tree {
            Some(tree) => tree.to_val(),
            None => Box::new(CelNull),
        })
    }
}

pub use crate::json::reader::ReadError;

/// Maps of no more members than this are searched member by member.
const SCANNED: usize = 8;

/// The member `key` of `map`, as CEL's `map.key`, `map['key']` and `has(map.key)` find
/// it: the value of the one string key equal to it (a string key has no numeric
/// fallbacks). The objects of an entry have a few members each, and comparing their
/// names costs less than hashing one with SipHash, which a `HashMap` look-up does first.
pub(super) fn member<'b, 'v>(
    map: &'b CelMap<'v>,
    key: &CelString<'_>,
) -> Option<&'b (dyn Val + 'v)> {
    let members = map.inner();
    if members.len() > SCANNED {
        return match traits::Indexer::get(map, key) {
            Ok(cel::common::value::CowVal::Borrowed(value)) => Some(value),
            _ => None,
        };
    }
    members.iter().find_map(|(name, value)| match name {
        CelMapKey::String(name) if name.inner() == key.inner() => Some(&**value),
        _ => None,
    })
}

/// Reads one entry's JSON text, building the `fields` of it and checking all of it.
pub fn read_entry<'a>(text: &'a str, fields: &EntryFields) -> Result<ReadEntry<'a>, ReadError> {
    let mut reader = Reader::new(text);
    let entry = read_entry_at(&mut reader, fields)?;
    reader.end().map(|()| entry)
}

/// Reads the entry that comes next in `reader` (a Bundle's entry where it lies), building
/// the `fields` of it and checking all of it.
pub fn read_entry_at<'a>(
    reader: &mut Reader<'a>,
    fields: &EntryFields,
) -> Result<ReadEntry<'a>, ReadError> {
    let mut tree = Builder::new();
    build(reader, Want::of(fields), Cow::Borrowed(""), &mut tree)?;
    Ok(ReadEntry {
        tree: tree.finish(),
    })
}

/// The `fields` of an entry already parsed (the AuthZEN door's), strings borrowed.
pub fn entry_of_value<'a>(value: &'a serde_json::Value, fields: &EntryFields) -> ReadEntry<'a> {
    let mut tree = Builder::new();
    from_value(value, Want::of(fields), Cow::Borrowed(""), &mut tree);
    ReadEntry {
        tree: tree.finish(),
    }
}

/// What of a JSON value to build.
#[derive(Clone, Copy)]
enum Want<'f> {
    /// All of it.
    All,
    /// Nothing: it is only checked.
    Nothing,
    /// Of an object, these members whole (an entry's member); anything else whole.
    Members(&'f [String]),
    /// Of an object, these members (the entry itself); anything else whole.
    Entry(&'f [(String, Option<Vec<String>>)]),
}

impl<'f> Want<'f> {
    /// What is built of an entry.
    fn of(fields: &'f EntryFields) -> Want<'f> {
        match fields {
            EntryFields::All => Want::All,
            EntryFields::Some(tops) => Want::Entry(tops),
        }
    }

    /// What is built of the member `name`. The selections hold a few names each, compared
    /// one by one, most told apart at their first byte.
    fn member(self, name: &str) -> Want<'f> {
        match self {
            Want::All => Want::All,
            Want::Nothing => Want::Nothing,
            Want::Members(names) if names.iter().any(|n| same_name(n, name)) => Want::All,
            Want::Members(_) => Want::Nothing,
            Want::Entry(tops) => match tops.iter().find(|(top, _)| same_name(top, name)) {
                None => Want::Nothing,
                Some((_, None)) => Want::All,
                Some((_, Some(names))) => Want::Members(names),
            },
        }
    }

    /// What is built of a list's items, and of anything but an object: all of it.
    fn item(self) -> Want<'f> {
        match self {
            Want::Nothing => Want::Nothing,
            _ => Want::All,
        }
    }
}

/// Adds what is wanted of `value` (named `name` in its object) to `tree`; where it is,
/// `None` when nothing is wanted.
fn from_value<'a>(
    value: &'a serde_json::Value,
    want: Want<'_>,
    name: Cow<'a, str>,
    tree: &mut Builder<'a>,
) -> Option<usize> {
    use serde_json::Value as Json;
    if matches!(want, Want::Nothing) {
        return None;
    }
    let scalar = match value {
        Json::Null => Scalar::Null,
        Json::Bool(b) => Scalar::Bool(*b),
        Json::Number(n) => Scalar::Number(n.clone()),
        Json::String(s) => Scalar::String(Cow::Borrowed(s)),
        Json::Array(items) => {
            let at = tree.push(name, Kind::List(0));
            let mut last = None;
            for item in items {
                if let Some(child) = from_value(item, want.item(), Cow::Borrowed(""), tree) {
                    tree.link(at, last, child);
                    last = Some(child);
                }
            }
            return Some(at);
        }
        Json::Object(members) => {
            let at = tree.push(name, Kind::Object(0));
            let mut last = None;
            for (member, value) in members {
                let wanted = want.member(member);
                if let Some(child) = from_value(value, wanted, Cow::Borrowed(member), tree) {
                    tree.link(at, last, child);
                    last = Some(child);
                }
            }
            return Some(at);
        }
    };
    Some(tree.push(name, Kind::Scalar(scalar)))
}

/// A number as `cel::to_value` converts it: unsigned when it fits, else signed, else a
/// double.
fn number<'a>(n: &serde_json::Number) -> Box<dyn Val + 'a> {
    if let Some(u) = n.as_u64() {
        Box::new(CelUInt::from(u))
    } else if let Some(i) = n.as_i64() {
        Box::new(CelInt::from(i))
    } else {
        Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
    }
}

/// Adds what is wanted of the next value (named `name` in its object) to `tree`,
/// checking all of it; where it is, `None` when nothing is wanted.
fn build<'a>(
    reader: &mut Reader<'a>,
    want: Want<'_>,
    name: Cow<'a, str>,
    tree: &mut Builder<'a>,
) -> Result<Option<usize>, ReadError> {
    if matches!(want, Want::Nothing) {
        reader.check_value()?;
        return Ok(None);
    }
    if let Some(scalar) = reader.scalar()? {
        return Ok(Some(tree.push(name, Kind::Scalar(scalar))));
    }
    let mut last = None;
    if reader.peek() == Some(b'[') {
        let item = want.item();
        let at = tree.push(name, Kind::List(0));
        let mut list = reader.begin_array()?;
        while reader.next_item(&mut list)? {
            if let Some(child) = build(reader, item, Cow::Borrowed(""), tree)? {
                tree.link(at, last, child);
                last = Some(child);
            }
        }
        return Ok(Some(at));
    }
    let at = tree.push(name, Kind::Object(0));
    let mut object = reader.begin_object()?;
    while let Some(member) = reader.next_name(&mut object)? {
        let wanted = want.member(&member);
        if matches!(wanted, Want::Nothing) {
            // Most members of an entry: checked here, not through another call of this.
            reader.check_value()?;
            continue;
        }
        if let Some(child) = build(reader, wanted, member, tree)? {
            tree.link(at, last, child);
            last = Some(child);
        }
    }
    Ok(Some(at))
}

#[cfg(test)]
mod tests;

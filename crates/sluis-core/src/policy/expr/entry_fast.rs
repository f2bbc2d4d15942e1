//! Response rules of the common shapes, evaluated on an entry without the interpreter.
//!
//! A response rule runs once per entry of an answer (a 100-entry Bundle, two rules: 200
//! evaluations), and through the interpreter each one pays for a scope, the names it reads,
//! a scope per item of an `exists` with the item copied into it, and an overload search per
//! operator: 2.6 M instructions a Bundle, more than reading it. Most response rules are
//! made of presence tests, comparisons of strings (and of strings joined with `+`) and
//! `exists`/`all` over a list of the entry
//! (`has(entry.resource.meta) && entry.resource.meta.security.exists(s, s.code == 'R')`);
//! [`EntryCond::of`] recognises those at load and [`EntryCond::holds`] evaluates them on
//! the entry's values directly.
//!
//! The answer is always CEL's: a value of any kind but the one the shape expects (a
//! missing member, a number where a string was compared, a map where a list was
//! iterated), which is where CEL may give an error or compare across types, makes
//! `holds` give up (`None`), and the interpreter evaluates the whole expression. Where
//! every value is as expected, `&&`, `||`, `!`, `==`, `in`, `has` and `exists`/`all`
//! give what CEL gives, also in the order they stop (CEL's `false && error` is false, and
//! so is ours without looking at the right side).

use cel::common::ast::{ComprehensionExpr, Expr as Node, LiteralValue, operators};
use cel::common::types::{CelList, CelMap, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;

use super::entry_val::{TreeRef, member};
use super::fast::Quantifier;
use super::{EntryScope, VARIABLES};

/// A response rule's condition of the shapes evaluated directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EntryCond {
    Bool(bool),
    Not(Box<EntryCond>),
    And(Box<EntryCond>, Box<EntryCond>),
    Or(Box<EntryCond>, Box<EntryCond>),
    /// `has(path.field)`.
    Has(Path, CelString<'static>),
    /// `left == right` (`equal`) or `!=`, of strings.
    Equals {
        left: Term,
        right: Term,
        equal: bool,
    },
    /// `term in ['a', 'b']`, a string in a list of string literals.
    In {
        term: Term,
        list: Vec<String>,
    },
    /// `path.exists(x, cond)` (not `all`) or `path.all(x, cond)` (`all`) over a list.
    Quantified {
        list: Path,
        all: bool,
        cond: Box<EntryCond>,
    },
}

/// A side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Term {
    Path(Path),
    Literal(String),
    /// `left + right` of strings (`'Organization/' + caller.ura`).
    Concat(Box<Term>, Box<Term>),
}

/// A variable and the members selected from it (`entry.resource.meta`,
/// `request.context['ura']`, `s.code` of a loop variable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Path {
    root: Root,
    steps: Vec<CelString<'static>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    /// `entry`: walked as read ([`TreeRef`]), not as CEL values.
    Entry,
    /// A variable the scope answers (`response`, `request`, ...).
    Variable(String),
    /// A loop variable, counted from the innermost loop (0) outwards.
    Bound(usize),
}

/// The loop variables in scope while evaluating, innermost first.
pub(super) struct Bound<'s> {
    value: Item<'s>,
    outer: Option<&'s Bound<'s>>,
}

/// A value looked at: part of the entry as read, or a CEL value (of another variable,
/// or of the entry where only its CEL value is known).
#[derive(Clone, Copy)]
enum Item<'s> {
    Tree(TreeRef<'s>),
    Val(&'s dyn Val),
}

/// A value found by a [`Path`]: a CEL value may be made on the way (a variable's).
enum Found<'s> {
    Tree(TreeRef<'s>),
    Val(CowVal<'s, 's>),
}

impl Found<'_> {
    fn item(&self) -> Item<'_> {
        match self {
            Found::Tree(tree) => Item::Tree(*tree),
            Found::Val(value) => Item::Val(&**value),
        }
    }
}

impl<'s> Item<'s> {
    /// Whether it is a map (CEL's `has` reads maps only) holding `field`.
    fn has(self, field: &CelString<'_>) -> Option<bool> {
        match self {
            Item::Tree(tree) if tree.is_object() => Some(tree.member(field.inner()).is_some()),
            Item::Tree(_) => None,
            Item::Val(value) => Some(member(value.downcast_ref::<CelMap>()?, field).is_some()),
        }
    }

    /// Its text, if it is a string.
    fn text(self) -> Option<&'s str> {
        match self {
            Item::Tree(tree) => tree.text(),
            Item::Val(value) => value.downcast_ref::<CelString>().map(|s| s.inner()),
        }
    }
}

impl EntryCond {
    /// The condition `node` is, if it has one of the shapes evaluated directly.
    pub(super) fn of(node: &Node) -> Option<EntryCond> {
        EntryCond::within(node, &mut Vec::new())
    }

    /// `node`, inside loops binding `bound` (outermost first).
    fn within(node: &Node, bound: &mut Vec<String>) -> Option<EntryCond> {
        match node {
            Node::Literal(LiteralValue::Boolean(b)) => Some(EntryCond::Bool(*b.inner())),
            Node::Select(select) if select.test => Some(EntryCond::Has(
                Path::of(&select.operand.expr, bound)?,
                CelString::from(select.field.clone()),
            )),
            Node::Comprehension(comprehension) => quantified(comprehension, bound),
            Node::Call(call) if call.target.is_none() => {
                match (call.func_name.as_str(), call.args.as_slice()) {
                    (operators::LOGICAL_NOT, [operand]) => Some(EntryCond::Not(Box::new(
                        EntryCond::within(&operand.expr, bound)?,
                    ))),
                    (operators::LOGICAL_AND, [left, right]) => Some(EntryCond::And(
                        Box::new(EntryCond::within(&left.expr, bound)?),
                        Box::new(EntryCond::within(&right.expr, bound)?),
                    )),
                    (operators::LOGICAL_OR, [left, right]) => Some(EntryCond::Or(
                        Box::new(EntryCond::within(&left.expr, bound)?),
                        Box::new(EntryCond::within(&right.expr, bound)?),
                    )),
                    (op @ (operators::EQUALS | operators::NOT_EQUALS), [left, right]) => {
                        Some(EntryCond::Equals {
                            left: Term::of(&left.expr, bound)?,
                            right: Term::of(&right.expr, bound)?,
                            equal: op == operators::EQUALS,
                        })
                    }
                    (operators::IN, [term, list]) => {
                        let Node::List(list) = &list.expr else {
                            return None;
                        };
                        if !list.optional_indices.is_empty() {
                            return None;
                        }
                        let list = list
                            .elements
                            .iter()
                            .map(|element| string(&element.expr).map(str::to_owned))
                            .collect::<Option<Vec<_>>>()?;
                        Some(EntryCond::In {
                            term: Term::of(&term.expr, bound)?,
                            list,
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Whether it holds for the entry and request `scope` answers; `None` where the
    /// interpreter must decide (see the module doc).
    pub(super) fn holds<'s>(
        &self,
        scope: &'s EntryScope<'_, '_, '_>,
        bound: Option<&Bound<'s>>,
    ) -> Option<bool> {
        match self {
            EntryCond::Bool(b) => Some(*b),
            EntryCond::Not(inner) => inner.holds(scope, bound).map(|b| !b),
            EntryCond::And(left, right) => match left.holds(scope, bound)? {
                false => Some(false),
                true => right.holds(scope, bound),
            },
            EntryCond::Or(left, right) => match left.holds(scope, bound)? {
                true => Some(true),
                false => right.holds(scope, bound),
            },
            EntryCond::Has(path, field) => {
                // A map only: `has` on anything else is an error, or a struct's field.
                path.value(scope, bound)?.item().has(field)
            }
            EntryCond::Equals { left, right, equal } => {
                let left = left.value(scope, bound)?;
                let right = right.value(scope, bound)?;
                Some((left.text()? == right.text()?) == *equal)
            }
            EntryCond::In { term, list } => {
                let value = term.value(scope, bound)?;
                let text = value.text()?;
                Some(list.iter().any(|item| item == text))
            }
            EntryCond::Quantified { list, all, cond } => {
                let value = list.value(scope, bound)?;
                // The first item that decides ends the loop, as in CEL.
                let decides = |item| {
                    let inner = Bound {
                        value: item,
                        outer: bound,
                    };
                    cond.holds(scope, Some(&inner)).map(|holds| holds != *all)
                };
                match value.item() {
                    Item::Tree(tree) => {
                        for item in tree.items()? {
                            if decides(Item::Tree(item))? {
                                return Some(!*all);
                            }
                        }
                    }
                    Item::Val(value) => {
                        for item in value.downcast_ref::<CelList>()?.inner() {
                            if decides(Item::Val(&**item))? {
                                return Some(!*all);
                            }
                        }
                    }
                }
                Some(*all)
            }
        }
    }
}

/// The resource type an entry must have for `node` to hold: the literal of its first
/// conjunct when that is `entry.resource.resourceType == '...'` (either way round). An
/// entry whose resource type is another string makes that conjunct false, and CEL's
/// `false && x` is false whatever `x` is (an error included), so the whole condition is
/// false without evaluating it. Response rules start so ("keep own Organizations"), and
/// an entry met each rule's guard again from the top of the entry.
pub(super) fn type_guard(node: &Node) -> Option<String> {
    let Node::Call(call) = node else {
        return None;
    };
    if call.target.is_some() {
        return None;
    }
    match (call.func_name.as_str(), call.args.as_slice()) {
        (operators::LOGICAL_AND, [left, _]) => type_guard(&left.expr),
        (operators::EQUALS, [left, right]) => {
            let is_type = |node: &Node| Path::of(node, &[]).is_some_and(|p| p.is_resource_type());
            match (string(&left.expr), string(&right.expr)) {
                (None, Some(literal)) if is_type(&left.expr) => Some(literal.to_owned()),
                (Some(literal), None) if is_type(&right.expr) => Some(literal.to_owned()),
                _ => None,
            }
        }
        _ => None,
    }
}

impl EntryCond {
    /// The condition without its first conjunct, when that is the resource-type guard
    /// [`type_guard`] finds: what decides once the guard holds (`true && x` is `x`).
    pub(super) fn after_guard(&self) -> Option<EntryCond> {
        let EntryCond::And(left, right) = self else {
            return None;
        };
        if left.is_type_guard() {
            return Some((**right).clone());
        }
        let rest = left.after_guard()?;
        Some(EntryCond::And(Box::new(rest), right.clone()))
    }

    fn is_type_guard(&self) -> bool {
        match self {
            EntryCond::Equals {
                left,
                right,
                equal: true,
            } => matches!(
                (left, right),
                (Term::Path(path), Term::Literal(_)) | (Term::Literal(_), Term::Path(path))
                    if path.is_resource_type()
            ),
            _ => false,
        }
    }
}

impl Path {
    /// Whether it is `entry.resource.resourceType`.
    fn is_resource_type(&self) -> bool {
        self.root == Root::Entry
            && matches!(
                self.steps.as_slice(),
                [resource, kind] if resource.inner() == "resource" && kind.inner() == "resourceType"
            )
    }
}

/// `exists`/`all` over a path (see [`Quantifier::of`]).
fn quantified(comprehension: &ComprehensionExpr, bound: &mut Vec<String>) -> Option<EntryCond> {
    let quantifier = Quantifier::of(comprehension)?;
    let list = Path::of(quantifier.range, bound)?;
    bound.push(quantifier.var.to_owned());
    // The accumulator is not readable by the condition: a name of it is not recognised.
    let cond = EntryCond::within(quantifier.cond, bound);
    bound.pop();
    Some(EntryCond::Quantified {
        list,
        all: quantifier.all,
        cond: Box::new(cond?),
    })
}

fn string(node: &Node) -> Option<&str> {
    match node {
        Node::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

impl Term {
    fn of(node: &Node, bound: &[String]) -> Option<Term> {
        if let Some(literal) = string(node) {
            return Some(Term::Literal(literal.to_owned()));
        }
        if let Node::Call(call) = node
            && call.target.is_none()
            && call.func_name == operators::ADD
            && let [left, right] = call.args.as_slice()
        {
            return Some(Term::Concat(
                Box::new(Term::of(&left.expr, bound)?),
                Box::new(Term::of(&right.expr, bound)?),
            ));
        }
        Path::of(node, bound).map(Term::Path)
    }

    fn value<'s>(
        &'s self,
        scope: &'s EntryScope<'_, '_, '_>,
        bound: Option<&Bound<'s>>,
    ) -> Option<Got<'s>> {
        match self {
            Term::Path(path) => path.value(scope, bound).map(Got::Value),
            Term::Literal(text) => Some(Got::Text(text)),
            // Strings only: `+` of lists, numbers or a string and anything else is the
            // interpreter's (a concatenation, a sum, an error).
            Term::Concat(left, right) => {
                let left = left.value(scope, bound)?;
                let right = right.value(scope, bound)?;
                let (left, right) = (left.text()?, right.text()?);
                let mut text = String::with_capacity(left.len() + right.len());
                text.push_str(left);
                text.push_str(right);
                Some(Got::Owned(text))
            }
        }
    }
}

/// A side of a comparison evaluated.
enum Got<'s> {
    Value(Found<'s>),
    Text(&'s str),
    Owned(String),
}

impl Got<'_> {
    /// Its text, if it is a string.
    fn text(&self) -> Option<&str> {
        match self {
            Got::Value(value) => value.item().text(),
            Got::Text(text) => Some(text),
            Got::Owned(text) => Some(text),
        }
    }
}

impl Path {
    /// The path `node` spells, rooted at a loop variable of `bound` or a variable.
    fn of(node: &Node, bound: &[String]) -> Option<Path> {
        match node {
            Node::Ident(name) => {
                let root = match bound.iter().rev().position(|b| b == name) {
                    Some(depth) => Root::Bound(depth),
                    None if name == "entry" => Root::Entry,
                    None if VARIABLES.contains(&name.as_str()) => Root::Variable(name.clone()),
                    None => return None,
                };
                Some(Path {
                    root,
                    steps: Vec::new(),
                })
            }
            Node::Select(select) if !select.test => {
                let mut path = Path::of(&select.operand.expr, bound)?;
                path.steps.push(CelString::from(select.field.clone()));
                Some(path)
            }
            Node::Call(call) if call.target.is_none() && call.func_name == operators::INDEX => {
                let [operand, key] = call.args.as_slice() else {
                    return None;
                };
                let key = string(&key.expr)?;
                let mut path = Path::of(&operand.expr, bound)?;
                path.steps.push(CelString::from(key.to_owned()));
                Some(path)
            }
            _ => None,
        }
    }

    /// Its value, `None` where a member is missing or a step is no map.
    fn value<'s>(
        &self,
        scope: &'s EntryScope<'_, '_, '_>,
        bound: Option<&Bound<'s>>,
    ) -> Option<Found<'s>> {
        let mut value = match &self.root {
            Root::Entry => match scope.entry.tree() {
                Some(tree) => Found::Tree(tree),
                None => Found::Val(CowVal::Borrowed(scope.entry.val())),
            },
            Root::Variable(name) => Found::Val(scope.resolve(name)?),
            Root::Bound(depth) => {
                let mut at = bound?;
                for _ in 0..*depth {
                    at = at.outer?;
                }
                match at.value {
                    Item::Tree(tree) => Found::Tree(tree),
                    Item::Val(value) => Found::Val(CowVal::Borrowed(value)),
                }
            }
        };
        for key in &self.steps {
            // Members of maps only: a list indexed by a string is CEL's error.
            value = match value {
                Found::Tree(tree) if tree.is_object() => Found::Tree(tree.member(key.inner())?),
                Found::Tree(_) => return None,
                Found::Val(CowVal::Borrowed(value)) => {
                    Found::Val(CowVal::Borrowed(member(value.downcast_ref()?, key)?))
                }
                Found::Val(CowVal::Owned(value)) => Found::Val(CowVal::Owned(
                    member(value.downcast_ref()?, key)?.clone_as_boxed(),
                )),
            };
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests;

//! A source's answer as a value in a rule: a handle on the answer's one converted copy.
//!
//! The interpreter's values are boxed trait objects it copies deeply when it owns one; a
//! cached answer handed back as a `cel::Value` was converted into that form on every
//! call (with every map entry hashed again). [`SharedAnswer`] is what a call returns
//! instead: it answers every question the interpreter asks (its type, `.field`, `[i]`,
//! `in`, `size()`, the comprehensions, `==`, the built-in downcasts) with the shared
//! copy's answer, so a call costs a reference count. What a rule takes out of it (`.id`,
//! `.identifier`) is copied, as that element only.

use std::any::Any;
use std::sync::Arc;

use cel::ExecutionError;
use cel::common::traits::{
    Adder, Comparer, Container, Divider, Indexer, Iterable, Modder, Multiplier, Negator, Sizer,
    Subtractor, Zeroer,
};
use cel::common::types::{DYN_TYPE, Type};
use cel::common::value::{Builtin, BuiltinRef, CowVal, Val};

use super::Answer;

#[derive(Debug, Clone)]
pub struct SharedAnswer(pub(super) Arc<Answer>);

impl SharedAnswer {
    fn inner(&self) -> &(dyn Val + 'static) {
        self.0.evaluable.as_ref()
    }
}

impl Val for SharedAnswer {
    fn get_type(&self) -> &Type {
        self.inner().get_type()
    }

    /// Only for overloads registered by Rust type, which never name this one.
    fn cel_type() -> &'static Type {
        &DYN_TYPE
    }

    fn as_adder<'b, 'v>(&'b self) -> Option<&'b (dyn Adder + 'v)>
    where
        Self: 'v,
    {
        self.inner().as_adder()
    }

    fn as_comparer(&self) -> Option<&dyn Comparer> {
        self.inner().as_comparer()
    }

    fn as_container(&self) -> Option<&dyn Container> {
        self.inner().as_container()
    }

    fn as_divider<'b, 'v>(&'b self) -> Option<&'b (dyn Divider + 'v)>
    where
        Self: 'v,
    {
        self.inner().as_divider()
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        self.inner().as_indexer()
    }

    /// The interpreter "steals" an element out of a built-in container it owns; this one
    /// shares its container, so the element is copied out of it instead.
    fn into_indexer<'v>(self: Box<Self>) -> Option<Box<dyn Indexer + 'v>>
    where
        Self: 'v,
    {
        if self.inner().as_indexer().is_some() {
            Some(self)
        } else {
            None
        }
    }

    fn as_iterable<'b, 'v>(&'b self) -> Option<&'b (dyn Iterable + 'v)>
    where
        Self: 'v,
    {
        self.inner().as_iterable()
    }

    fn as_modder<'b, 'v>(&'b self) -> Option<&'b (dyn Modder + 'v)>
    where
        Self: 'v,
    {
        self.inner().as_modder()
    }

    fn as_multiplier<'b, 'v>(&'b self) -> Option<&'b (dyn Multiplier + 'v)>
    where
        Self: 'v,
    {
        self.inner().as_multiplier()
    }

    fn as_negator<'b, 'v>(&'b self) -> Option<&'b (dyn Negator + 'v)>
    where
        Self: 'v,
    {
        self.inner().as_negator()
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        self.inner().as_sizer()
    }

    fn as_subtractor<'b, 'v>(&'b self) -> Option<&'b (dyn Subtractor + 'v)>
    where
        Self: 'v,
    {
        self.inner().as_subtractor()
    }

    fn as_zeroer(&self) -> Option<&dyn Zeroer> {
        self.inner().as_zeroer()
    }

    fn equals(&self, other: &dyn Val) -> bool {
        self.inner().equals(other)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(self.clone())
    }

    fn as_any(&self) -> Option<&dyn Any> {
        self.inner().as_any()
    }

    fn as_builtin<'b, 'v>(&'b self) -> BuiltinRef<'b, 'v>
    where
        Self: 'v,
    {
        self.inner().as_builtin()
    }

    /// Taken by value (a function wanting its own list or map): a copy of the whole.
    fn into_builtin<'v>(self: Box<Self>) -> Option<Builtin<'v>>
    where
        Self: 'v,
    {
        self.inner().clone_as_boxed().into_builtin()
    }
}

impl Indexer for SharedAnswer {
    fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        match self.inner().as_indexer() {
            Some(indexer) => indexer.get(idx),
            None => Err(ExecutionError::function_error(
                "_[_]",
                "the answer cannot be indexed",
            )),
        }
    }

    fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

//! A source's answer as a value in a rule: a handle on the answer's one converted copy.
//!
//! The interpreter's values are boxed trait objects it copies deeply when it owns one; a
//! cached answer handed back as a `cel::Value` was converted into that form on every
//! call (with every map entry hashed again). [`SharedAnswer`] is what a call returns
//! instead: it answers every question the interpreter asks (its type, `.field`, `[i]`,
//! `in`, `size()`, the comprehensions, `==`, the built-in downcasts) with the shared
//! copy's answer, so a call costs a reference count. What a rule takes out of it (`.id`,
//! `.identifier`) is copied, as that element only.
//!
//! The objects in the answer's lists are [`SharedMap`]s: a comprehension over a list
//! (`identifier.filter(i, ...)`) binds a copy of each item it visits, and a copy of a
//! shared object is a reference count, not a new table.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use cel::common::traits::{
    self, Adder, Comparer, Container, Divider, Indexer, Iterable, Modder, Multiplier, Negator,
    Sizer, Subtractor, Zeroer,
};
use cel::common::types::{CelList, CelMap, CelMapKey, CelNull, DYN_TYPE, Type};
use cel::common::value::{Builtin, BuiltinRef, CowVal, Val};
use cel::{ExecutionError, Value};

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

/// An object in a list, built once and shared by its copies: a comprehension over the list
/// (`identifier.exists(i, ...)`) binds a copy of each item it visits, and copying a
/// `CelMap` makes a new table and boxes each value again. It is the map in every other way:
/// it answers to `downcast_ref::<CelMap>()`, equals what the map equals, and so on.
#[derive(Debug, Clone)]
pub struct SharedMap<'a>(Arc<CelMap<'a>>);

impl<'a> SharedMap<'a> {
    /// `value` shared, if it is a map (an object of a source's answer or of a response
    /// entry, as built).
    pub fn of(value: Box<dyn Val + 'a>) -> Box<dyn Val + 'a> {
        match value.downcast_ref::<CelMap>() {
            // Moved out without a copy: an object was just built into this box.
            Some(_) => match value.into_builtin() {
                Some(Builtin::Map(map)) => Box::new(SharedMap(Arc::new(map))),
                Some(_) | None => Box::new(CelNull),
            },
            None => value,
        }
    }
}

impl<'a> Val for SharedMap<'a> {
    fn get_type(&self) -> &Type {
        self.0.get_type()
    }
    fn cel_type() -> &'static Type {
        <CelMap as Val>::cel_type()
    }
    fn as_container(&self) -> Option<&dyn traits::Container> {
        self.0.as_container()
    }
    fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn traits::Indexer + 'w)>
    where
        Self: 'w,
    {
        self.0.as_indexer()
    }
    /// Selecting from a map the interpreter owns moves the member out of it; this one
    /// is shared, so only the member is copied ([`Indexer::steal`] below).
    fn into_indexer<'w>(self: Box<Self>) -> Option<Box<dyn traits::Indexer + 'w>>
    where
        Self: 'w,
    {
        Some(self)
    }
    fn as_iterable<'b, 'w>(&'b self) -> Option<&'b (dyn traits::Iterable + 'w)>
    where
        Self: 'w,
    {
        self.0.as_iterable()
    }
    fn as_sizer(&self) -> Option<&dyn traits::Sizer> {
        self.0.as_sizer()
    }
    fn as_zeroer(&self) -> Option<&dyn traits::Zeroer> {
        self.0.as_zeroer()
    }
    fn equals(&self, other: &dyn Val) -> bool {
        self.0.equals(other)
    }
    fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w>
    where
        Self: 'w,
    {
        Box::new(self.clone())
    }
    fn as_builtin<'b, 'w>(&'b self) -> BuiltinRef<'b, 'w>
    where
        Self: 'w,
    {
        BuiltinRef::Map(&self.0)
    }
    fn into_builtin<'w>(self: Box<Self>) -> Option<Builtin<'w>>
    where
        Self: 'w,
    {
        let map = Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone());
        Some(Builtin::Map(map))
    }
}

impl Indexer for SharedMap<'_> {
    fn get<'b, 'w>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
    where
        Self: 'w,
    {
        self.0.get(idx)
    }

    /// The member copied out. A key the map refuses is refused by the map's own `steal`
    /// (its error differs from `get`'s), on a copy: only on that failing path.
    fn steal<'w>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'w>, ExecutionError>
    where
        Self: 'w,
    {
        match self.0.get(idx) {
            Ok(member) => Ok(member.into_owned()),
            Err(_) => match self.0.clone_as_boxed().into_indexer() {
                Some(map) => map.steal(idx),
                None => Err(ExecutionError::function_error("_[_]", "not a map")),
            },
        }
    }
}

/// An answer converted for the interpreter, as `Box<dyn Val>::try_from` converts it, but
/// with every object in a list a [`SharedMap`].
pub(super) fn evaluable(value: Value) -> Result<Box<dyn Val>, ExecutionError> {
    match value {
        Value::List(items) => {
            let items = Arc::unwrap_or_clone(items)
                .into_iter()
                .map(|item| {
                    let object = matches!(item, Value::Map(_));
                    evaluable(item).map(|item| if object { SharedMap::of(item) } else { item })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Box::new(CelList::from(items)))
        }
        Value::Map(map) => {
            let members = Arc::unwrap_or_clone(map.map)
                .into_iter()
                .map(|(key, member)| evaluable(member).map(|member| (CelMapKey::from(key), member)))
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(Box::new(CelMap::from(members)))
        }
        other => Box::<dyn Val>::try_from(other),
    }
}

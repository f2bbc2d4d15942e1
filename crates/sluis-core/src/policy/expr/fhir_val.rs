//! `request.fhir` as a CEL value without converting the whole parsed request: a handle on
//! it whose fields are built only when an expression reads them (as [`super::flow_val`]
//! does for flows). A rule reading `request.fhir.type` pays for one string, not for the
//! map of every search parameter.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use cel::ExecutionError;
use cel::common::traits::Indexer;
use cel::common::types::{CelString, Kind, Type};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::objects::Key;
use cel::{FunctionContext, Value};

use crate::fhir::{Include, ParsedRequest, SearchParam};

/// The CEL type of `request.fhir`: `type(request.fhir)` names it.
static FHIR_TYPE: Type = Type::simple_type(Kind::Opaque, "sluis.FhirRequest");

/// The fields of `request.fhir`, for load errors.
pub const FIELDS: [&str; 19] = [
    "version",
    "interaction",
    "type",
    "id",
    "version_id",
    "operation",
    "compartment",
    "params",
    "search",
    "include",
    "include_iterate",
    "revinclude",
    "revinclude_iterate",
    "elements",
    "summary",
    "count",
    "sort",
    "param_names",
    "patient",
];

/// The functions called on `request.fhir`.
pub const METHODS: [&str; 3] = ["param", "values", "hasOnly"];

/// The request read as FHIR, and the fields read so far: a decision's rules read the
/// same few fields (`type`, `interaction`, `patient`) again and again, and each is built
/// once per decision and then lent out.
#[derive(Debug)]
pub struct FhirVal {
    request: Arc<ParsedRequest>,
    fields: [OnceLock<Box<dyn Val>>; FIELDS.len()],
    /// `param(name)` of each of the request's parameters, in their order.
    params: Box<[OnceLock<Box<dyn Val>>]>,
}

impl Clone for FhirVal {
    /// The same request; the copy builds its own fields.
    fn clone(&self) -> FhirVal {
        FhirVal::new(self.request.clone())
    }
}

fn text(s: &str) -> Value {
    Value::String(Arc::new(s.to_owned()))
}

fn opt_text(s: Option<&str>) -> Value {
    s.map(text).unwrap_or(Value::Null)
}

fn texts<'s>(items: impl Iterator<Item = &'s str>) -> Value {
    Value::List(Arc::new(items.map(text).collect()))
}

fn groups(values: &[Vec<String>]) -> Value {
    Value::List(Arc::new(
        values
            .iter()
            .map(|group| texts(group.iter().map(String::as_str)))
            .collect(),
    ))
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let map: std::collections::HashMap<Key, Value> = entries
        .into_iter()
        .map(|(k, v)| (Key::String(Arc::new(k.to_owned())), v))
        .collect();
    Value::Map(cel::objects::Map { map: Arc::new(map) })
}

fn includes(items: &[Include], iterate: bool) -> Value {
    texts(
        items
            .iter()
            .filter(|i| i.iterate == iterate)
            .map(|i| i.value.as_str()),
    )
}

fn search(param: &SearchParam) -> Value {
    map(vec![
        ("raw", text(&param.raw)),
        ("name", text(&param.name)),
        ("modifier", opt_text(param.modifier.as_deref())),
        (
            "chain",
            Value::List(Arc::new(
                param
                    .chain
                    .iter()
                    .map(|link| {
                        map(vec![
                            ("param", text(&link.param)),
                            ("type", opt_text(link.target_type.as_deref())),
                        ])
                    })
                    .collect(),
            )),
        ),
        (
            "has",
            Value::List(Arc::new(
                param
                    .has
                    .iter()
                    .map(|link| {
                        map(vec![
                            ("type", text(&link.resource_type)),
                            ("reference", text(&link.reference)),
                        ])
                    })
                    .collect(),
            )),
        ),
        ("has_param", opt_text(param.has_param.as_deref())),
        ("values", groups(&param.values)),
    ])
}

impl FhirVal {
    pub fn new(request: Arc<ParsedRequest>) -> FhirVal {
        FhirVal {
            params: request.params.iter().map(|_| OnceLock::new()).collect(),
            request,
            fields: Default::default(),
        }
    }

    /// `param(name)` of the parameter named exactly `name`, built on its first read.
    fn param(&self, name: &str) -> Option<&(dyn Val + 'static)> {
        let (param, slot) = self
            .request
            .params
            .iter()
            .zip(self.params.iter())
            .find(|(param, _)| param.raw == name)?;
        Some(&**slot.get_or_init(|| groups_val(&param.values)))
    }

    /// The field `name`, built on its first read.
    pub(super) fn field(&self, name: &str) -> Option<&(dyn Val + 'static)> {
        let (_, slot) = FIELDS
            .iter()
            .zip(self.fields.iter())
            .find(|(field, _)| **field == name)?;
        Some(&**slot.get_or_init(|| self.build_val(name)))
    }

    /// The field `name` as the interpreter holds it. The fields rules read on every
    /// decision (strings, `patient`, `compartment`) are built straight, not as a
    /// `cel::Value` converted after (two maps and two copies of each string); the rest
    /// as [`FhirVal::build`] gives them.
    fn build_val(&self, name: &str) -> Box<dyn Val> {
        use cel::common::types::CelNull;
        let r = &*self.request;
        let text = |s: &str| -> Box<dyn Val> { Box::new(CelString::from(s.to_owned())) };
        let opt_text = |s: Option<&str>| s.map_or_else(|| Box::new(CelNull) as Box<dyn Val>, text);
        match name {
            "version" => text(r.version.name()),
            "interaction" => text(r.interaction.code()),
            "type" => opt_text(r.resource_type.as_deref()),
            "id" => opt_text(r.id.as_deref()),
            "version_id" => opt_text(r.version_id.as_deref()),
            "operation" => opt_text(r.operation.as_deref()),
            "summary" => opt_text(r.summary.as_deref()),
            "compartment" => match &r.compartment {
                Some((kind, id)) => map_val([("type", text(kind)), ("id", text(id))]),
                None => Box::new(CelNull),
            },
            "patient" => {
                let patient = r.patient();
                let [id, bsn, problem] = [patient.id, patient.bsn, patient.problem].map(|s| {
                    s.map_or_else(
                        || Box::new(CelNull) as Box<dyn Val>,
                        |s| Box::new(CelString::from(s)),
                    )
                });
                map_val([("id", id), ("bsn", bsn), ("problem", problem)])
            }
            _ => to_val(self.build(name).unwrap_or(Value::Null)),
        }
    }

    /// The field `name` as a `cel::Value`.
    fn build(&self, name: &str) -> Option<Value> {
        let r = &*self.request;
        Some(match name {
            "version" => text(r.version.name()),
            "interaction" => text(r.interaction.code()),
            "type" => opt_text(r.resource_type.as_deref()),
            "id" => opt_text(r.id.as_deref()),
            "version_id" => opt_text(r.version_id.as_deref()),
            "operation" => opt_text(r.operation.as_deref()),
            "compartment" => match &r.compartment {
                Some((kind, id)) => map(vec![("type", text(kind)), ("id", text(id))]),
                None => Value::Null,
            },
            "params" => {
                let map: std::collections::HashMap<Key, Value> = r
                    .params
                    .iter()
                    .map(|p| (Key::String(Arc::new(p.raw.clone())), groups(&p.values)))
                    .collect();
                Value::Map(cel::objects::Map { map: Arc::new(map) })
            }
            "param_names" => texts(r.params.iter().map(|p| p.raw.as_str())),
            "search" => Value::List(Arc::new(r.params.iter().map(search).collect())),
            "include" => includes(&r.include, false),
            "include_iterate" => includes(&r.include, true),
            "revinclude" => includes(&r.revinclude, false),
            "revinclude_iterate" => includes(&r.revinclude, true),
            "elements" => texts(r.elements.iter().map(String::as_str)),
            "summary" => opt_text(r.summary.as_deref()),
            "count" => r.count.map(|c| Value::Int(c.into())).unwrap_or(Value::Null),
            "sort" => texts(r.sort.iter().map(String::as_str)),
            "patient" => {
                let patient = r.patient();
                map(vec![
                    ("id", opt_text(patient.id.as_deref())),
                    ("bsn", opt_text(patient.bsn.as_deref())),
                    ("problem", opt_text(patient.problem.as_deref())),
                ])
            }
            _ => return None,
        })
    }
}

/// A map of `members` built straight as the interpreter's.
fn map_val<const N: usize>(members: [(&'static str, Box<dyn Val>); N]) -> Box<dyn Val> {
    use cel::common::types::{CelMap, CelMapKey};
    Box::new(CelMap::from(
        members
            .into_iter()
            .map(|(name, value)| (CelMapKey::from(name), value))
            .collect::<std::collections::HashMap<_, _>>(),
    ))
}

/// [`groups`] built straight as the interpreter's list of lists.
fn groups_val(values: &[Vec<String>]) -> Box<dyn Val> {
    use cel::common::types::CelList;
    Box::new(CelList::from(
        values
            .iter()
            .map(|group| {
                Box::new(CelList::from(
                    group
                        .iter()
                        .map(|value| Box::new(CelString::from(value.clone())) as Box<dyn Val>)
                        .collect::<Vec<_>>(),
                )) as Box<dyn Val>
            })
            .collect::<Vec<_>>(),
    ))
}

fn to_val(value: Value) -> Box<dyn Val> {
    value
        .try_into()
        .unwrap_or_else(|_| Box::new(cel::common::types::CelNull) as Box<dyn Val>)
}

impl Val for FhirVal {
    fn get_type(&self) -> &Type {
        &FHIR_TYPE
    }

    fn cel_type() -> &'static Type {
        &FHIR_TYPE
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn equals(&self, other: &dyn Val) -> bool {
        other
            .downcast_ref::<FhirVal>()
            .is_some_and(|o| Arc::ptr_eq(&o.request, &self.request))
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

impl StaticVal for FhirVal {}

impl Indexer for FhirVal {
    fn get<'b, 'v>(&'b self, index: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let name = index
            .downcast_ref::<CelString>()
            .map(|s| s.inner())
            .ok_or_else(|| {
                ExecutionError::function_error("_[_]", "request.fhir's fields have names")
            })?;
        self.field(name)
            .map(CowVal::Borrowed)
            .ok_or_else(|| ExecutionError::NoSuchKey(Arc::new(name.to_owned())))
    }

    fn steal<'v>(self: Box<Self>, index: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(index).map(CowVal::into_owned)
    }
}

/// The receiver of `request.fhir.param(...)` and friends, and their one string argument.
fn receiver_and_name<'f>(
    ftx: &'f FunctionContext,
    example: &str,
) -> Result<(&'f FhirVal, &'f str), ExecutionError> {
    let this = ftx
        .this
        .as_ref()
        .and_then(|this| this.downcast_ref::<FhirVal>())
        .ok_or_else(|| {
            ExecutionError::function_error(ftx.name, format!("call it on request.fhir: {example}"))
        })?;
    let name = ftx
        .args
        .first()
        .and_then(|a| a.downcast_ref::<CelString>())
        .map(|s| s.inner())
        .ok_or_else(|| {
            ExecutionError::function_error(ftx.name, format!("pass a parameter name: {example}"))
        })?;
    Ok((this, name))
}

/// `request.fhir.param(name)`: the AND-groups of OR-values of the parameter named
/// exactly `name` (`[]` when absent), lent from the decision's `request.fhir` where it can.
pub fn param<'c, 'cl>(
    ftx: &mut FunctionContext<'c, 'cl>,
) -> Result<CowVal<'c, 'cl>, ExecutionError> {
    let example = "request.fhir.param('category')";
    let name = ftx
        .args
        .first()
        .and_then(|a| a.downcast_ref::<CelString>())
        .map(|s| s.inner().to_owned())
        .ok_or_else(|| {
            ExecutionError::function_error(ftx.name, format!("pass a parameter name: {example}"))
        })?;
    let not_fhir =
        || ExecutionError::function_error("param", format!("call it on request.fhir: {example}"));
    let empty = || CowVal::owned(cel::common::types::CelList::from(Vec::<Box<dyn Val>>::new()));
    match ftx.this.take() {
        Some(CowVal::Borrowed(this)) => {
            let fhir = this.downcast_ref::<FhirVal>().ok_or_else(not_fhir)?;
            Ok(fhir.param(&name).map_or_else(empty, CowVal::Borrowed))
        }
        Some(CowVal::Owned(this)) => {
            let fhir = this.downcast_ref::<FhirVal>().ok_or_else(not_fhir)?;
            Ok(match fhir.request.param(&name) {
                Some(p) => CowVal::Owned(groups_val(&p.values)),
                None => empty(),
            })
        }
        None => Err(not_fhir()),
    }
}

/// `request.fhir.values(name)`: every value of the parameter, AND-groups flattened.
pub fn values(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (fhir, name) = receiver_and_name(ftx, "request.fhir.values('category')")?;
    Ok(texts(
        fhir.request
            .param(name)
            .into_iter()
            .flat_map(|p| p.values.iter().flatten())
            .map(String::as_str),
    ))
}

/// `request.fhir.hasOnly(['a', 'b'])`: every search parameter's raw name is in the list.
pub fn has_only(ftx: &FunctionContext) -> Result<bool, ExecutionError> {
    let fhir = ftx
        .this
        .as_ref()
        .and_then(|this| this.downcast_ref::<FhirVal>())
        .ok_or_else(|| {
            ExecutionError::function_error(
                ftx.name,
                "call it on request.fhir: request.fhir.hasOnly(['patient'])",
            )
        })?;
    let list = ftx
        .args
        .first()
        .and_then(|a| a.downcast_ref::<cel::common::types::CelList>())
        .ok_or_else(|| {
            ExecutionError::function_error(ftx.name, "pass a list of parameter names")
        })?;
    let allowed: Vec<&str> = list
        .inner()
        .iter()
        .filter_map(|v| v.downcast_ref::<CelString>().map(|s| s.inner()))
        .collect();
    Ok(fhir
        .request
        .params
        .iter()
        .all(|p| allowed.contains(&p.raw.as_str())))
}

/// The search prefixes of FHIR R4 (`search.html` §3.1.1.4.x, number/date/quantity).
const PREFIXES: [&str; 9] = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"];

/// The prefix of a number, date or quantity value and the rest: a prefix counts only
/// when a number or date follows it (`ge2020`, `lt-5`), so `apple` has none.
pub fn split_prefix(value: &str) -> (&str, &str) {
    if let (Some(prefix), Some(rest)) = (value.get(..2), value.get(2..))
        && PREFIXES.contains(&prefix)
        && rest
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'))
    {
        return (prefix, rest);
    }
    ("eq", value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field, and `param(name)` of every parameter, built straight is the value
    /// [`FhirVal::build`] and [`groups`] give through `cel::Value`, over requests of every
    /// interaction.
    #[test]
    fn fields_built_straight_are_the_values_built_before() {
        for target in [
            "/fhir/Patient?_id=p1&_include=Patient:general-practitioner&_summary=true",
            "/fhir/Patient/p1",
            "/fhir/Patient/p1/_history/2",
            "/fhir/Patient/p1/Observation?code=a,b&code=c&_count=3&_sort=-date",
            "/fhir/Observation/$lastn?patient=Patient/p1&category=a,b&_elements=id",
            "/fhir/Observation?patient=p1&patient=p2&patient.identifier=x|1",
            "/fhir/Observation?subject:Patient.identifier=bsn|1&_has:Observation:patient:code=x",
            "/fhir/Coverage?patient=p1&_revinclude:iterate=a:b",
            "/fhir/Condition?patient=p1,p2",
            "/fhir/$everything",
            "/fhir/Patient/p1/$everything",
            "/fhir/metadata",
            "/fhir",
        ] {
            let mut request = crate::request::AccessRequest {
                method: "GET".into(),
                ..Default::default()
            };
            request.set_target(target);
            let parsed = crate::fhir::parse(
                &request,
                "/fhir",
                crate::fhir::FhirVersion::R4,
                &crate::fhir::FhirLimits::default(),
            )
            .unwrap();
            let fhir = FhirVal::new(Arc::new(parsed));
            for name in FIELDS {
                let built = Value::try_from(fhir.build_val(name).as_ref()).unwrap();
                assert_eq!(built, fhir.build(name).unwrap(), "{target}: {name}");
            }
            for param in &fhir.request.params {
                let built = Value::try_from(groups_val(&param.values).as_ref()).unwrap();
                assert_eq!(built, groups(&param.values), "{target}: {}", param.raw);
            }
        }
    }
}

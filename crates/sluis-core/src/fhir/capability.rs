//! A CapabilityStatement as an allow-list: a request whose resource type, interaction,
//! search parameters, includes or operation the statement does not list is denied
//! before any rule runs (as knooppunt's PDP does per use case).
//!
//! Read: the union of every `rest` of mode `server` (others ignored): `rest.interaction`,
//! `rest.operation[].name`, `rest.searchParam[].name`, and per `rest.resource[]` its
//! `type`, `interaction[].code`, `searchParam[].name`, `searchInclude`,
//! `searchRevInclude`, `operation[].name`. Unknown members are ignored. Only an
//! operation's `name` is read, which STU3 and R4 spell alike.

use std::collections::{HashMap, HashSet};

use serde_json::Value as Json;

use super::request::{FhirInteraction, FhirVersion, ParsedRequest};

/// The largest statement read (the real ones are under 50 KiB).
pub const MAX_STATEMENT_BYTES: usize = 4 * 1024 * 1024;

/// What a CapabilityStatement allows.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// What reasons call it: the policy's name for the file.
    pub name: String,
    /// From `fhirVersion`, when it names STU3 or R4.
    pub version: Option<FhirVersion>,
    system_interactions: HashSet<String>,
    system_operations: HashSet<String>,
    system_params: HashSet<String>,
    resources: HashMap<String, ResourceCaps>,
}

#[derive(Debug, Clone, Default)]
struct ResourceCaps {
    interactions: HashSet<String>,
    params: HashSet<String>,
    includes: HashSet<String>,
    revincludes: HashSet<String>,
    operations: HashSet<String>,
}

/// What a request asks that the statement does not list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The statement's name.
    pub statement: String,
    /// `resource type`, `interaction`, `search parameter`, `operation`, ...
    pub what: &'static str,
    /// The name not listed: `Patient`, `search-type`, `name:missing`.
    pub name: String,
    /// The resource type it was asked of, if any.
    pub on: Option<String>,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name == "unknown" {
            return write!(
                f,
                "not a FHIR interaction, so not in the CapabilityStatement `{}`",
                self.statement
            );
        }
        write!(
            f,
            "the CapabilityStatement `{}` does not list {} `{}`",
            self.statement, self.what, self.name
        )?;
        if let Some(on) = &self.on {
            write!(f, " on `{on}`")?;
        }
        Ok(())
    }
}

/// `items[].<key>` as strings; anything else skipped.
fn names(value: Option<&Json>, key: &str) -> impl Iterator<Item = String> {
    value
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(move |item| item.get(key).and_then(Json::as_str))
        .map(str::to_owned)
}

/// `items[]` as strings.
fn strings(value: Option<&Json>) -> impl Iterator<Item = String> {
    value
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .map(str::to_owned)
}

impl Capabilities {
    /// Reads a CapabilityStatement (JSON). Errors say what is wrong, for load errors.
    pub fn from_json(name: &str, bytes: &[u8]) -> Result<Capabilities, String> {
        if bytes.len() > MAX_STATEMENT_BYTES {
            return Err(format!(
                "larger than {} MiB",
                MAX_STATEMENT_BYTES / 1024 / 1024
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let json = crate::json::strict_json(text).map_err(|e| match e {
            crate::json::StrictError::Duplicate(key) => format!("member `{key}` given twice"),
            crate::json::StrictError::Syntax => "not JSON".to_string(),
        })?;
        if json.get("resourceType").and_then(Json::as_str) != Some("CapabilityStatement") {
            return Err("not a CapabilityStatement (`resourceType`)".into());
        }
        let mut caps = Capabilities {
            name: name.to_owned(),
            version: json
                .get("fhirVersion")
                .and_then(Json::as_str)
                .and_then(FhirVersion::from_release),
            ..Capabilities::default()
        };
        let mut servers = 0;
        for rest in json
            .get("rest")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if rest.get("mode").and_then(Json::as_str) != Some("server") {
                continue;
            }
            servers += 1;
            caps.system_interactions
                .extend(names(rest.get("interaction"), "code"));
            caps.system_operations
                .extend(names(rest.get("operation"), "name"));
            caps.system_params
                .extend(names(rest.get("searchParam"), "name"));
            for resource in rest
                .get("resource")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                let Some(kind) = resource.get("type").and_then(Json::as_str) else {
                    return Err("a `rest.resource` has no `type`".into());
                };
                let entry = caps.resources.entry(kind.to_owned()).or_default();
                entry
                    .interactions
                    .extend(names(resource.get("interaction"), "code"));
                entry
                    .params
                    .extend(names(resource.get("searchParam"), "name"));
                entry
                    .includes
                    .extend(strings(resource.get("searchInclude")));
                entry
                    .revincludes
                    .extend(strings(resource.get("searchRevInclude")));
                entry
                    .operations
                    .extend(names(resource.get("operation"), "name"));
            }
        }
        if servers == 0 {
            return Err("no `rest` of mode `server`".into());
        }
        Ok(caps)
    }

    /// Whether the statement lists everything `request` asks; the first thing it does not
    /// list otherwise. `:iterate` includes pass only with `allow_iterate`.
    pub fn check(&self, request: &ParsedRequest, allow_iterate: bool) -> Result<(), Unsupported> {
        let unsupported = |what: &'static str, name: &str, on: Option<&str>| Unsupported {
            statement: self.name.clone(),
            what,
            name: name.to_owned(),
            on: on.map(str::to_owned),
        };
        let interaction = request.interaction;
        match interaction {
            FhirInteraction::Unknown => {
                return Err(unsupported("interaction", interaction.code(), None));
            }
            FhirInteraction::Capabilities => {
                return Err(unsupported("interaction", interaction.code(), None));
            }
            _ => {}
        }
        let Some(kind) = request.resource_type.as_deref() else {
            // System level.
            if interaction == FhirInteraction::Operation {
                let op = request.operation.as_deref().unwrap_or_default();
                if !self.system_operations.contains(op) {
                    return Err(unsupported("operation", op, None));
                }
                return Ok(());
            }
            if !self.system_interactions.contains(interaction.code()) {
                return Err(unsupported("interaction", interaction.code(), None));
            }
            if interaction.searches() {
                for param in &request.params {
                    if !(self.system_params.contains(&param.raw)
                        || (plain(param) && self.system_params.contains(&param.name)))
                    {
                        return Err(unsupported("search parameter", &param.raw, None));
                    }
                }
            }
            if let Some(include) = request.include.first().or(request.revinclude.first()) {
                return Err(unsupported("include", &include.value, None));
            }
            return Ok(());
        };
        let Some(resource) = self.resources.get(kind) else {
            return Err(unsupported("resource type", kind, None));
        };
        if interaction == FhirInteraction::Operation {
            let op = request.operation.as_deref().unwrap_or_default();
            if !(resource.operations.contains(op) || self.system_operations.contains(op)) {
                return Err(unsupported("operation", op, Some(kind)));
            }
        } else if !resource.interactions.contains(interaction.code()) {
            return Err(unsupported("interaction", interaction.code(), Some(kind)));
        }
        if interaction.searches() {
            for param in &request.params {
                let listed = |name: &str| {
                    resource.params.contains(name) || self.system_params.contains(name)
                };
                if !(listed(&param.raw) || (plain(param) && listed(&param.name))) {
                    return Err(unsupported("search parameter", &param.raw, Some(kind)));
                }
            }
        }
        for (what, includes, listed) in [
            ("include", &request.include, &resource.includes),
            ("revinclude", &request.revinclude, &resource.revincludes),
        ] {
            for include in includes {
                if include.iterate && !allow_iterate {
                    return Err(unsupported(
                        if what == "include" {
                            "iterated include"
                        } else {
                            "iterated revinclude"
                        },
                        &include.value,
                        Some(kind),
                    ));
                }
                if !listed.contains(&include.value) {
                    return Err(unsupported(what, &include.value, Some(kind)));
                }
            }
        }
        Ok(())
    }
}

/// A parameter without modifier, chain or `_has`, which a statement lists by its name.
fn plain(param: &super::SearchParam) -> bool {
    param.modifier.is_none() && param.chain.is_empty() && param.has.is_empty()
}

#[cfg(test)]
mod tests;

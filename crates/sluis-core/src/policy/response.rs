//! Response rules: which resources of an upstream's answer the caller may see.
//!
//! Per entry (a Bundle's `entry[]`, or a single resource as `{"resource": ...}`), like
//! request rules deny overrides and the default is to withhold:
//! 1. a `resource_types` miss withholds it;
//! 2. any `deny` rule true, or failing, denies the whole answer;
//! 3. any `withhold` rule true, or failing, withholds it;
//! 4. the first `keep` rule true keeps it; none (or only failures): withheld.
//!
//! Rules read `entry` and `response` (`{status, bundle_type}`) besides every variable of
//! the request decision (request, token, caller, flows, data).

use std::sync::Arc;

use serde_json::Value;

use super::Reporter;
use super::diagnostic::DiagnosticKind as Kind;
use super::expr::entry_val::{self, BundleTrees, EntryFields, EntryValue, TreeAt, TreeRef};
use super::expr::{Expr, Vars, json_val};
use super::positions::Step;
use super::spec::{
    ResponseRuleSpec, ResponseRulesSpec, Unreadable as OnUnreadable, WithheldNotice,
};
use crate::response::bundle::{self, Body};
use crate::response::{FILTERED_HEADERS, ResponseParts, ResponseVerdict};

/// A policy's compiled `response_rules`.
#[derive(Debug)]
pub struct ResponseRules {
    resource_types: Vec<String>,
    pub(super) rules: Vec<ResponseRule>,
    notice: WithheldNotice,
    unreadable: OnUnreadable,
    unreadable_status: u16,
    max_entries: usize,
    /// What the rules read of an entry, and what judging reads itself (the resource's
    /// type, the search mode): all an entry is built into.
    entry_fields: EntryFields,
}

#[derive(Debug)]
pub(super) struct ResponseRule {
    id: Arc<str>,
    effect: ResponseEffect,
    pub(super) condition: Expr,
    status: u16,
    message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseEffect {
    Keep,
    Withhold,
    Deny,
}

/// The most entries `max_entries` may allow.
pub const MAX_ENTRIES: usize = 10_000;

/// What the rules made of one entry, judged on its own (an AuthZEN response evaluation,
/// `sluis explain`).
#[derive(Debug, Clone, PartialEq)]
pub enum EntryVerdict {
    /// The first `keep` rule that held.
    Keep { rule: Arc<str> },
    /// Withheld by this `withhold` rule, or (`None`) because its type is not listed or no
    /// `keep` rule held.
    Withhold {
        rule: Option<Arc<str>>,
        reason: String,
    },
    /// A `deny` rule held (or failed): the whole answer is denied.
    Deny {
        rule: Arc<str>,
        status: u16,
        reason: String,
    },
}

impl EntryVerdict {
    pub fn is_keep(&self) -> bool {
        matches!(self, EntryVerdict::Keep { .. })
    }

    /// The rule that decided; `None` when no rule did (the entry was withheld by default).
    pub fn rule(&self) -> Option<&str> {
        match self {
            EntryVerdict::Keep { rule } | EntryVerdict::Deny { rule, .. } => Some(rule),
            EntryVerdict::Withhold { rule, .. } => rule.as_deref(),
        }
    }
}

/// What the rules made of one answer, for the gateway and for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseJudgement {
    pub verdict: ResponseVerdict,
    /// The rule that decided (`response` for a filter or pass, the deny rule otherwise).
    pub rule: Arc<str>,
    pub reason: String,
    pub kept: usize,
    pub withheld: usize,
}

impl ResponseRules {
    pub(super) fn compile(spec: ResponseRulesSpec, report: &mut Reporter) -> ResponseRules {
        let top = |key: &str| [Step::from("response_rules"), Step::from(key)];
        if spec.max_entries == 0 || spec.max_entries > MAX_ENTRIES {
            report.error(
                Kind::InvalidValue,
                &top("max_entries"),
                format!("`response_rules.max_entries` must be 1 to {MAX_ENTRIES}"),
            );
        }
        if !(400..=599).contains(&spec.unreadable_status) {
            report.error(
                Kind::InvalidValue,
                &top("unreadable_status"),
                format!(
                    "`response_rules.unreadable_status` {} is not a 4xx or 5xx",
                    spec.unreadable_status
                ),
            );
        }
        let mut rules: Vec<ResponseRule> = Vec::new();
        for (index, value) in spec.rules.into_iter().enumerate() {
            let rule_id = value
                .get("id")
                .and_then(|id| id.as_str())
                .map(str::to_owned);
            let at = [
                Step::from("response_rules"),
                Step::from("rules"),
                Step::Index(index),
            ];
            let name = rule_id.unwrap_or_else(|| format!("response #{}", index + 1));
            let rule: ResponseRuleSpec = match serde_yaml_ng::from_value(value) {
                Ok(rule) => rule,
                Err(e) => {
                    report.at_error(
                        Kind::InvalidValue,
                        Some(&name),
                        &at,
                        crate::yaml_error_message(&e),
                    );
                    continue;
                }
            };
            if rules.iter().any(|r| *r.id == *rule.id) {
                report.at_error(
                    Kind::DuplicateId,
                    Some(&name),
                    &at,
                    "duplicate response rule id".into(),
                );
                continue;
            }
            let (effect, source) = match (&rule.keep, &rule.withhold, &rule.deny) {
                (Some(s), None, None) => (ResponseEffect::Keep, s),
                (None, Some(s), None) => (ResponseEffect::Withhold, s),
                (None, None, Some(s)) => (ResponseEffect::Deny, s),
                _ => {
                    report.at_error(
                        Kind::InvalidValue,
                        Some(&name),
                        &at,
                        "a response rule needs exactly one of `keep`, `withhold` or `deny`".into(),
                    );
                    continue;
                }
            };
            if effect != ResponseEffect::Deny && (rule.status.is_some() || rule.message.is_some()) {
                report.at_error(
                    Kind::InvalidValue,
                    Some(&name),
                    &at,
                    "`status` and `message` belong to deny rules".into(),
                );
            }
            let status = rule.status.unwrap_or(403);
            if !(400..=599).contains(&status) {
                report.at_error(
                    Kind::InvalidValue,
                    Some(&name),
                    &at,
                    format!("deny status {status} is not a 4xx or 5xx"),
                );
            }
            match Expr::compile(source) {
                Ok(condition) => rules.push(ResponseRule {
                    id: Arc::from(rule.id.as_str()),
                    effect,
                    condition,
                    status,
                    message: rule.message,
                }),
                Err(e) => {
                    let key = match effect {
                        ResponseEffect::Keep => "keep",
                        ResponseEffect::Withhold => "withhold",
                        ResponseEffect::Deny => "deny",
                    };
                    let path: Vec<Step> = at.iter().cloned().chain([Step::from(key)]).collect();
                    report.cel_error(
                        Some(&name),
                        &path,
                        &e,
                        format!("invalid CEL `{source}`: {}", e.message),
                    );
                }
            }
        }
        if !rules.iter().any(|r| r.effect == ResponseEffect::Keep) {
            report.error(
                Kind::InvalidValue,
                &top("rules"),
                "`response_rules` has no `keep` rule, so every entry would be withheld".into(),
            );
        }
        let mut entry_fields = EntryFields::default();
        entry_fields.add(&["resource", "resourceType"]);
        entry_fields.add(&["search", "mode"]);
        for rule in &rules {
            entry_fields.merge(&rule.condition.entry_fields);
        }
        ResponseRules {
            entry_fields,
            resource_types: spec.resource_types,
            rules,
            notice: spec.withheld_notice,
            unreadable: spec.unreadable,
            unreadable_status: spec.unreadable_status,
            max_entries: spec.max_entries,
        }
    }

    /// The expressions of the rules, for the policy's load checks.
    pub(super) fn expressions(&self) -> impl Iterator<Item = &Expr> {
        self.rules.iter().map(|r| &r.condition)
    }

    /// Judges `parts` under the request decision's variables. `deny` builds the policy's
    /// denial (its uniform `deny_response` when it has one).
    pub(super) fn judge(
        &self,
        vars: &Vars,
        parts: &ResponseParts<'_>,
        deny: &dyn Fn(&str, u16, &str, String) -> crate::decision::Deny,
    ) -> ResponseJudgement {
        let judgement = |verdict, rule: &str, reason: String, kept, withheld| ResponseJudgement {
            verdict,
            rule: Arc::from(rule),
            reason,
            kept,
            withheld,
        };
        if parts.body.is_empty() {
            // 204, 304, HEAD: nothing to judge, and an ETag would vouch for data never sent.
            return judgement(
                ResponseVerdict::Pass {
                    remove_headers: vec!["etag"],
                },
                "response",
                "empty body".into(),
                0,
                0,
            );
        }
        // All entries' trees in one list (see `BundleTrees`).
        let mut trees = BundleTrees::new();
        let read = bundle::readable_headers(parts).and_then(|()| {
            bundle::read(parts.body, self.max_entries, |reader| {
                trees.read_entry(reader, &self.entry_fields)
            })
        });
        let trees = trees.finish();
        let body = match read {
            Ok(body) => body,
            Err(why) => {
                let reason = format!("unreadable answer: {why}");
                let verdict = match self.unreadable {
                    OnUnreadable::Pass => ResponseVerdict::Pass {
                        remove_headers: Vec::new(),
                    },
                    OnUnreadable::Deny => ResponseVerdict::Deny(deny(
                        "response-unreadable",
                        self.unreadable_status,
                        "the answer could not be checked",
                        reason.clone(),
                    )),
                };
                return judgement(verdict, "response-unreadable", reason, 0, 0);
            }
        };
        let bundle_type = match &body {
            Body::Bundle { members, .. } => members.get("type").cloned().unwrap_or(Value::Null),
            Body::Resource(_) => Value::Null,
        };
        let response = json_val(&serde_json::json!({
            "status": parts.status,
            "bundle_type": bundle_type,
        }));
        let single;
        let (members, entries, judged) = match body {
            Body::Bundle { members, entries } => (Some(members), entries, Vec::new()),
            Body::Resource(resource) => {
                single = serde_json::json!({ "resource": resource });
                let entry = entry_val::entry_of_value(&single, &self.entry_fields);
                (None, Vec::new(), vec![entry])
            }
        };
        let read = entries
            .iter()
            .map(|e| trees.entry(e.read))
            .chain(judged.iter().map(|e| e.tree.root()));
        let mut keep = Vec::with_capacity(entries.len() + judged.len());
        let mut reasons: Vec<String> = Vec::new();
        for (index, entry) in read.enumerate() {
            match self.judge_entry(vars, entry, &*response) {
                Entry::Keep(_) => keep.push(true),
                Entry::Withhold(_, why) => {
                    if reasons.len() < 3 {
                        reasons.push(format!("entry {index}: {why}"));
                    }
                    keep.push(false);
                }
                Entry::Deny(rule, why) => {
                    let reason = format!("entry {index}: {why}");
                    let denial = deny(
                        &rule.id,
                        rule.status,
                        rule.message.as_deref().unwrap_or("access denied by policy"),
                        reason.clone(),
                    );
                    return judgement(ResponseVerdict::Deny(denial), &rule.id, reason, 0, 0);
                }
            }
        }
        let kept = keep.iter().filter(|k| **k).count();
        let withheld = keep.len() - kept;
        let summary = if reasons.is_empty() {
            format!("{kept} kept")
        } else {
            format!("{kept} kept, {withheld} withheld ({})", reasons.join("; "))
        };
        let Some(members) = members else {
            // A single resource is kept whole or not shown at all.
            return if kept == 1 {
                judgement(
                    ResponseVerdict::Pass {
                        remove_headers: Vec::new(),
                    },
                    "response",
                    summary,
                    1,
                    0,
                )
            } else {
                let denial = deny(
                    "response-withheld",
                    403,
                    "access denied by policy",
                    summary.clone(),
                );
                judgement(
                    ResponseVerdict::Deny(denial),
                    "response-withheld",
                    summary,
                    0,
                    1,
                )
            };
        };
        if withheld == 0 {
            return judgement(
                ResponseVerdict::Pass {
                    remove_headers: Vec::new(),
                },
                "response",
                summary,
                kept,
                0,
            );
        }
        let notice = self.notice == WithheldNotice::OperationOutcome;
        let matched = |at: &TreeAt| {
            trees
                .entry(*at)
                .member_text("search", "mode")
                .is_none_or(|m| m == "match")
        };
        match bundle::write_filtered(members, entries, &keep, matched, notice) {
            Ok(body) => {
                let set_headers = match self.notice {
                    WithheldNotice::Header => vec![("x-sluis-withheld".into(), "true".into())],
                    _ => Vec::new(),
                };
                judgement(
                    ResponseVerdict::Filter {
                        body,
                        kept,
                        withheld,
                        set_headers,
                        remove_headers: FILTERED_HEADERS.to_vec(),
                    },
                    "response",
                    summary,
                    kept,
                    withheld,
                )
            }
            Err(e) => {
                let reason = format!("{summary}; {e}");
                let denial = deny(
                    "response-withheld",
                    403,
                    "access denied by policy",
                    reason.clone(),
                );
                judgement(
                    ResponseVerdict::Deny(denial),
                    "response-withheld",
                    reason,
                    0,
                    withheld,
                )
            }
        }
    }

    /// Judges each of `entries` (Bundle entries: `{"resource": ...}`) on its own, as
    /// parts of an answer described by `response` (`{status, bundle_type}`). Unlike
    /// [`ResponseRules::judge`] every entry is judged, also after a `deny`.
    pub(super) fn judge_each(
        &self,
        vars: &Vars,
        entries: &[Value],
        response: &Value,
    ) -> Vec<EntryVerdict> {
        let response = json_val(response);
        entries
            .iter()
            .map(|entry| {
                let entry = entry_val::entry_of_value(entry, &self.entry_fields);
                match self.judge_entry(vars, entry.tree.root(), &*response) {
                    Entry::Keep(rule) => EntryVerdict::Keep {
                        rule: rule.id.clone(),
                    },
                    Entry::Withhold(rule, why) => EntryVerdict::Withhold {
                        rule: rule.map(|r| r.id.clone()),
                        reason: why.to_string(),
                    },
                    Entry::Deny(rule, reason) => EntryVerdict::Deny {
                        rule: rule.id.clone(),
                        status: rule.status,
                        reason,
                    },
                }
            })
            .collect()
    }

    /// The rules' ids, in order.
    pub fn rule_ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.rules.iter().map(|r| &r.id)
    }

    /// The most entries one answer may have.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    fn judge_entry<'e>(
        &self,
        vars: &Vars,
        entry: TreeRef<'e>,
        response: &dyn cel::common::value::Val,
    ) -> Entry<'_, 'e> {
        // Converted to CEL values only if a rule needs the interpreter; its resource type
        // found once, for `resource_types` and every rule's guard.
        let value = EntryValue::at(entry);
        let resource_type = value.resource_type();
        if !self.resource_types.is_empty()
            && !resource_type.is_some_and(|t| self.resource_types.iter().any(|a| a == t))
        {
            return Entry::Withhold(None, Why::NotListed(resource_type.unwrap_or("(none)")));
        }
        let eval = |rule: &ResponseRule| rule.condition.eval_bool_for_entry(vars, &value, response);
        let of = |effect| self.rules.iter().filter(move |r| r.effect == effect);
        // Deny rules first: one of them decides for the whole answer.
        for rule in of(ResponseEffect::Deny) {
            match eval(rule) {
                Ok(false) => {}
                Ok(true) => return Entry::Deny(rule, format!("deny rule `{}` matched", rule.id)),
                Err(e) => {
                    return Entry::Deny(
                        rule,
                        format!(
                            "deny rule `{}` failed to evaluate, failing closed: {e}",
                            rule.id
                        ),
                    );
                }
            }
        }
        for rule in of(ResponseEffect::Withhold) {
            match eval(rule) {
                Ok(false) => {}
                Ok(true) => return Entry::Withhold(Some(rule), Why::Matched(&rule.id)),
                Err(e) => return Entry::Withhold(Some(rule), Why::Failed(&rule.id, e)),
            }
        }
        let mut failures = Vec::new();
        for rule in of(ResponseEffect::Keep) {
            match eval(rule) {
                Ok(true) => return Entry::Keep(rule),
                Ok(false) => {}
                Err(e) => failures.push(format!("keep rule `{}` failed: {e}", rule.id)),
            }
        }
        Entry::Withhold(None, Why::NoKeep(failures))
    }
}

/// What became of one entry: `'r` borrows the rules, `'e` the entry as read.
enum Entry<'r, 'e> {
    Keep(&'r ResponseRule),
    Withhold(Option<&'r ResponseRule>, Why<'r, 'e>),
    Deny(&'r ResponseRule, String),
}

/// Why an entry was withheld, written out only where it is told (the first few of an
/// answer): a `String` per withheld entry was an allocation each, mostly thrown away.
enum Why<'r, 'e> {
    /// Its type is not in `resource_types`.
    NotListed(&'e str),
    /// This `withhold` rule held.
    Matched(&'r str),
    /// This `withhold` rule failed, failing closed.
    Failed(&'r str, String),
    /// No `keep` rule held; these failed.
    NoKeep(Vec<String>),
}

impl std::fmt::Display for Why<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::NotListed(kind) => write!(f, "resource type `{kind}` is not in `resource_types`"),
            Why::Matched(rule) => write!(f, "withhold rule `{rule}` matched"),
            Why::Failed(rule, e) => {
                write!(
                    f,
                    "withhold rule `{rule}` failed to evaluate, failing closed: {e}"
                )
            }
            Why::NoKeep(failures) if failures.is_empty() => f.write_str("no keep rule matched"),
            Why::NoKeep(failures) => write!(f, "no keep rule matched; {}", failures.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests;

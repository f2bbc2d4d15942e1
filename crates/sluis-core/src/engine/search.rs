//! The AuthZEN Search API as an engine question: which subjects, resources or actions
//! a search's evaluations allow. Each candidate the fitting policies list
//! ([`crate::policy::search`]) is decided as an ordinary evaluation, so a search answers
//! exactly what the same evaluations, asked one by one, would.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::{Credentials, Engine, Unavailable};
use crate::audit::{DecisionRecord, SearchCounts};
use crate::policy::search::{Candidate, MAX_CANDIDATES, SearchError, SearchKind};
use crate::request::{AccessRequest, Door, Evaluation};

/// Why a search has no answer: the question cannot be searched, or the engine cannot
/// decide.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchFailure {
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl Engine {
    /// The candidates a search of `kind` finds: those whose evaluation (the `template`
    /// with the searched entity filled in) the engine allows, in the order the policies
    /// list them, each once. No policy deciding such evaluations: none found (an unknown
    /// type is not an error to AuthZEN). A fitting policy that cannot list candidates of
    /// this kind: [`SearchError::Unsupported`], rather than an answer missing its matches.
    pub async fn search(
        &self,
        kind: SearchKind,
        template: &Evaluation,
    ) -> Result<Vec<Candidate>, SearchFailure> {
        let time = std::time::SystemTime::now();
        let started = std::time::Instant::now();
        let policies = self.policies();
        let mut tries = Vec::new();
        let mut searched: Option<std::sync::Arc<str>> = None;
        for policy in policies
            .policies
            .iter()
            .filter(|p| p.fits_search(kind, template))
        {
            searched.get_or_insert_with(|| policy.id.clone());
            tries.extend(policy.search_candidates(kind, template)?);
            if tries.len() > MAX_CANDIDATES {
                return Err(SearchError::TooLarge.into());
            }
        }
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        for candidate in tries {
            if !seen.insert(candidate.id.clone()) {
                continue;
            }
            let request = AccessRequest {
                evaluation: Some(evaluation_for(kind, template, &candidate)),
                door: Door("authzen"),
                ..Default::default()
            };
            let decision = self
                .decide_as(&request, &Credentials::Request, None)
                .await?;
            if decision.is_allow() {
                found.push(candidate);
            }
        }
        if let Some(log) = &self.log {
            // One record per search, not one per candidate: counts, no ids.
            let kind_name = match kind {
                SearchKind::Subject => "subject",
                SearchKind::Resource => "resource",
                SearchKind::Action => "action",
            };
            let record = DecisionRecord {
                time,
                door: "authzen",
                request_id: None,
                traceparent: None,
                trace_id: None,
                policies: Some(policies.clone()),
                policy: searched,
                rule: Some(std::sync::Arc::from("search")),
                outcome: "search",
                status: 200,
                reason: format!(
                    "{kind_name} search: {} of {} candidates allowed",
                    found.len(),
                    seen.len()
                ),
                caller: None,
                method: String::new(),
                host: String::new(),
                path: String::new(),
                query: String::new(),
                latency: started.elapsed(),
                shadow: None,
                candidate: None,
                response: None,
                search: Some(SearchCounts {
                    kind: kind_name,
                    candidates: seen.len(),
                    found: found.len(),
                }),
            };
            log.record(record).await;
        }
        Ok(found)
    }
}

/// `template` with the searched entity made `candidate`: its type kept, its id (name)
/// the candidate's, its properties the candidate's when it has any, else the template's.
pub fn evaluation_for(
    kind: SearchKind,
    template: &Evaluation,
    candidate: &Candidate,
) -> Evaluation {
    let mut evaluation = template.clone();
    let (slot, key) = match kind {
        SearchKind::Subject => (&mut evaluation.subject, "id"),
        SearchKind::Resource => (&mut evaluation.resource, "id"),
        SearchKind::Action => (&mut evaluation.action, "name"),
    };
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Some(entity) = slot.as_object_mut() {
        entity.insert(key.into(), Value::String(candidate.id.clone()));
        if let Some(properties) = &candidate.properties {
            entity.insert("properties".into(), Value::Object(properties.clone()));
        }
    }
    evaluation
}

/// Most results one page holds, and what a request without `page.limit` gets.
pub const MAX_PAGE: usize = 1000;

/// A Search API request, read: what to search and which page.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub kind: SearchKind,
    /// The evaluation every candidate fills in: the searched entity carries its type
    /// only (an action search's action is empty).
    pub template: Evaluation,
    /// Results to skip: from `page.token`.
    pub offset: usize,
    /// Results on this page at most.
    pub limit: usize,
    /// Whether the request asked for paging at all (a `page` object): only then, or
    /// when results are left over, does the answer carry a `page`.
    pub paged: bool,
    /// What the request asks, without its `page`: a page token is only good for it.
    pub fingerprint: String,
}

/// Reads a Search API request body (a JSON object) for `kind`. The spec's required
/// fields: a subject search needs `subject.type`, `action.name`, `resource.type` and
/// `.id`; a resource search `subject.type` and `.id`, `action.name`, `resource.type`; an
/// action search `subject.type` and `.id`, `resource.type` and `.id`. The searched
/// entity's id (or the action) is ignored when sent. Errors name the field.
pub fn read_query(kind: SearchKind, body: &Map<String, Value>) -> Result<SearchQuery, String> {
    let entity = |name: &str, required: &[&str], ignored: &str| -> Result<Value, String> {
        let value = match body.get(name) {
            None | Some(Value::Null) => return Err(format!("missing `{name}`")),
            Some(value) => value,
        };
        let object = value
            .as_object()
            .ok_or_else(|| format!("`{name}` must be an object"))?;
        for field in required {
            match object.get(*field) {
                None | Some(Value::Null) => return Err(format!("missing `{name}.{field}`")),
                Some(Value::String(text)) if text.is_empty() => {
                    return Err(format!("`{name}.{field}` is empty"));
                }
                Some(Value::String(_)) => {}
                Some(_) => return Err(format!("`{name}.{field}` must be a string")),
            }
        }
        if let Some(properties) = object.get("properties")
            && !(properties.is_object() || properties.is_null())
        {
            return Err(format!("`{name}.properties` must be an object"));
        }
        let mut object = object.clone();
        object.remove(ignored);
        Ok(Value::Object(object))
    };
    let (subject, action, resource) = match kind {
        SearchKind::Subject => (
            entity("subject", &["type"], "id")?,
            entity("action", &["name"], "")?,
            entity("resource", &["type", "id"], "")?,
        ),
        SearchKind::Resource => (
            entity("subject", &["type", "id"], "")?,
            entity("action", &["name"], "")?,
            entity("resource", &["type"], "id")?,
        ),
        SearchKind::Action => (
            entity("subject", &["type", "id"], "")?,
            Value::Object(Map::new()),
            entity("resource", &["type", "id"], "")?,
        ),
    };
    let context = match body.get("context") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(context @ Value::Object(_)) => context.clone(),
        Some(_) => return Err("`context` must be an object".into()),
    };
    let template = Evaluation {
        subject,
        action,
        resource,
        context,
    };
    let fingerprint = fingerprint(kind, &template);
    let (mut offset, mut limit, mut paged) = (0, MAX_PAGE, false);
    match body.get("page") {
        None | Some(Value::Null) => {}
        Some(Value::Object(page)) => {
            paged = true;
            match page.get("limit") {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(0) => {}
                    Some(n) => limit = usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE),
                    None => return Err("`page.limit` must be a whole number".into()),
                },
                Some(_) => return Err("`page.limit` must be a number".into()),
            }
            match page.get("token") {
                None | Some(Value::Null) => {}
                Some(Value::String(token)) if token.is_empty() => {}
                Some(Value::String(token)) => offset = open_token(token, &fingerprint)?,
                Some(_) => return Err("`page.token` must be a string".into()),
            }
        }
        Some(_) => return Err("`page` must be an object".into()),
    }
    Ok(SearchQuery {
        kind,
        template,
        offset,
        limit,
        paged,
        fingerprint,
    })
}

/// 16 hex digits of SHA-256 over the search without its page.
fn fingerprint(kind: SearchKind, template: &Evaluation) -> String {
    use sha2::{Digest, Sha256};
    let text = serde_json::json!([
        kind.entity(),
        template.subject,
        template.action,
        template.resource,
        template.context
    ])
    .to_string();
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A page token: where the next page starts, bound to the search it belongs to.
/// Not a secret: a caller who edits the offset only skips results it may ask for anyway.
pub fn page_token(offset: usize, fingerprint: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{offset}.{fingerprint}"))
}

fn open_token(token: &str, fingerprint: &str) -> Result<usize, String> {
    use base64::Engine as _;
    let bad = || "`page.token` is not a token this PDP gave".to_string();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (offset, bound) = text.split_once('.').ok_or_else(bad)?;
    if bound != fingerprint {
        return Err(
            "`page.token` belongs to a different search: repeat the search's first request".into(),
        );
    }
    offset.parse().map_err(|_| bad())
}

/// One page of `found` for `query`: the results, and the token of the next page (empty
/// at the end).
pub fn page<'a>(query: &SearchQuery, found: &'a [Candidate]) -> (&'a [Candidate], String) {
    let start = query.offset.min(found.len());
    let end = start.saturating_add(query.limit).min(found.len());
    let next = if end < found.len() {
        page_token(end, &query.fingerprint)
    } else {
        String::new()
    };
    (found.get(start..end).unwrap_or_default(), next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn query(kind: SearchKind, body: Value) -> Result<SearchQuery, String> {
        read_query(kind, &object(body))
    }

    #[test]
    fn required_fields_follow_the_spec_and_the_searched_id_is_dropped() {
        let r = json!({"type": "record", "id": "1"});
        let ok = query(
            SearchKind::Subject,
            json!({"subject": {"type": "user", "id": "x"}, "action": {"name": "view"}, "resource": r}),
        )
        .unwrap();
        assert_eq!(ok.template.subject, json!({"type": "user"}));
        assert_eq!((ok.offset, ok.limit, ok.paged), (0, MAX_PAGE, false));
        assert_eq!(
            query(
                SearchKind::Subject,
                json!({"subject": {"type": "user"}, "resource": r})
            ),
            Err("missing `action`".into())
        );
        assert_eq!(
            query(
                SearchKind::Resource,
                json!({"subject": {"type": "user"}, "action": {"name": "v"}, "resource": {"type": "record"}})
            ),
            Err("missing `subject.id`".into())
        );
        assert_eq!(
            query(
                SearchKind::Action,
                json!({"subject": {"type": "user", "id": "a"}})
            ),
            Err("missing `resource`".into())
        );
        assert_eq!(
            query(
                SearchKind::Action,
                json!({"subject": {"type": "user", "id": "a"}, "resource": r, "page": {"limit": -1}})
            ),
            Err("`page.limit` must be a whole number".into())
        );
    }

    fn candidates(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                id: i.to_string(),
                properties: None,
            })
            .collect()
    }

    /// JSON values shaped like search requests: the spec's keys, any values below them.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            "[a-z0-9!]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("type".to_string()),
                        Just("id".to_string()),
                        Just("name".to_string()),
                        Just("properties".to_string()),
                        Just("limit".to_string()),
                        Just("token".to_string()),
                        "[a-z]{1,4}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the body, reading it answers (a query or a message naming a field),
        /// never panics; an accepted query never carries the searched entity's id.
        #[test]
        fn any_body_is_read_or_refused(
            parts in prop::collection::btree_map(
                prop_oneof![Just("subject"), Just("action"), Just("resource"), Just("context"), Just("page")],
                json_value(),
                0..5,
            )
        ) {
            let map: Map<String, Value> = parts.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            for kind in [SearchKind::Subject, SearchKind::Resource, SearchKind::Action] {
                match read_query(kind, &map) {
                    Ok(q) => {
                        prop_assert!(q.limit >= 1 && q.limit <= MAX_PAGE);
                        match kind {
                            SearchKind::Subject => prop_assert!(q.template.subject.get("id").is_none()),
                            SearchKind::Resource => prop_assert!(q.template.resource.get("id").is_none()),
                            SearchKind::Action => prop_assert_eq!(&q.template.action, &json!({})),
                        }
                    }
                    Err(message) => prop_assert!(message.contains('`'), "{}", message),
                }
            }
        }

        /// Any page size walks every result once, in order, and ends with an empty token;
        /// a token never opens another search.
        #[test]
        fn pages_reassemble_the_answer(n in 0usize..60, limit in 1u64..12, other in "[a-z]{1,8}") {
            let body = |token: &str| json!({
                "subject": {"type": "user", "id": "a"}, "action": {"name": "view"},
                "resource": {"type": "record"}, "page": {"limit": limit, "token": token},
            });
            let found = candidates(n);
            let mut token = String::new();
            let mut walked = Vec::new();
            let mut pages = 0;
            loop {
                let q = query(SearchKind::Resource, body(&token)).unwrap();
                let (results, next) = page(&q, &found);
                walked.extend(results.iter().cloned());
                pages += 1;
                if next.is_empty() { break; }
                let mut changed = body(&next);
                changed["action"]["name"] = json!(other.clone() + "!");
                prop_assert!(query(SearchKind::Resource, changed).is_err());
                token = next;
                prop_assert!(pages <= n + 1);
            }
            prop_assert_eq!(walked, found);
        }
    }
}

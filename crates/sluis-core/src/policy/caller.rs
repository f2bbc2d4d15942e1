//! The caller's party identifiers: the `caller` variable of policies.
//!
//! A token names the party it was issued to in several ways, depending on the network:
//! iWlz RFC0014 tokens say `client_id: uzovi:5000`, or `sub: agbcode:012345678`, or carry
//! the code as an aggregated claim (`_claim_names` / `_claim_sources`, see
//! [`crate::authn::aggregated`]); a party acting for another has its own id in `act.sub`.
//! A policy's `caller` block names the identifiers it needs and where each may be found;
//! rules then compare `caller.uzovi` with what the request asks for, without knowing
//! which form the token used.
//!
//! ```yaml
//! caller:
//!   uzovi: {prefix: "uzovi:", from: [client_id, sub, claims]}
//!   agb:   {prefix: "agbcode:", from: [client_id, sub, act, claims]}
//! ```
//!
//! Every source that holds a value must agree. When two disagree the identifier is
//! *conflicting*: it is left out of the `caller` map, so reading it is an evaluation
//! error, which fails closed (a deny rule that reads it denies, an allow rule does not
//! allow). Taking the first source instead would let whoever controls a later-listed
//! source be overridden silently, or override silently; refusing is the safe answer to a
//! token that contradicts itself.
//!
//! The identifiers are resolved once per decision, on first use, and only for policies
//! whose expressions read `caller`.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::spec::CallerIdentifierSpec;
use crate::authn::Identity;

/// A policy's `caller` block, checked.
#[derive(Debug, Default)]
pub struct Caller {
    identifiers: Vec<Identifier>,
    /// Which block this is, for an identity's cache of its `caller` value: unique to each
    /// block compiled in this process (0, the default, is the empty block's, whose value
    /// is the same whatever the policy).
    id: u64,
}

/// The next [`Caller::id`].
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Debug)]
struct Identifier {
    name: String,
    prefix: String,
    sources: Vec<Source>,
}

/// Where an identifier may be found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    ClientId,
    Sub,
    /// `act.sub`.
    Act,
    /// An aggregated claim of this name.
    Aggregated(String),
    /// A plain claim of this name.
    Claim(String),
}

impl Source {
    fn parse(text: &str, identifier: &str, claim: Option<&str>) -> Result<Source, String> {
        Ok(match text {
            "client_id" => Source::ClientId,
            "sub" => Source::Sub,
            "act" => Source::Act,
            "claims" => Source::Aggregated(claim.unwrap_or(identifier).to_owned()),
            _ => match text.strip_prefix("claim:") {
                Some(name) if !name.is_empty() => Source::Claim(name.to_owned()),
                _ => {
                    return Err(format!(
                        "`{text}` is not a source (sources: client_id, sub, act, claims, claim:NAME)"
                    ));
                }
            },
        })
    }

    fn label(&self) -> String {
        match self {
            Source::ClientId => "client_id".into(),
            Source::Sub => "sub".into(),
            Source::Act => "act.sub".into(),
            Source::Aggregated(name) => format!("aggregated claim `{name}`"),
            Source::Claim(name) => format!("claim `{name}`"),
        }
    }
}

/// What the sources of one identifier say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No source holds a value (of the right form).
    Nothing,
    /// Every source that holds a value holds this one, prefix stripped.
    Value(String),
    /// Sources disagree: (source, value) of each.
    Conflict(Vec<(String, String)>),
}

impl Caller {
    /// Which block this is (see the field).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Checks a policy's `caller` block; each problem is one message.
    pub fn compile(spec: BTreeMap<String, CallerIdentifierSpec>) -> Result<Caller, Vec<String>> {
        let mut problems = Vec::new();
        let mut identifiers = Vec::new();
        for (name, identifier) in spec {
            let mut chars = name.chars();
            let valid_name = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                problems.push(format!(
                    "caller identifier `{name}` is not a CEL name (letters, digits, `_`)"
                ));
                continue;
            }
            if identifier.from.is_empty() {
                problems.push(format!(
                    "caller identifier `{name}`: `from` lists no source"
                ));
            }
            if identifier.claim.is_some() && !identifier.from.iter().any(|s| s == "claims") {
                problems.push(format!(
                    "caller identifier `{name}`: `claim` names the aggregated claim, but `from` has no `claims`"
                ));
            }
            let mut sources = Vec::new();
            for text in &identifier.from {
                match Source::parse(text, &name, identifier.claim.as_deref()) {
                    Ok(source) if sources.contains(&source) => problems.push(format!(
                        "caller identifier `{name}`: source `{text}` is listed twice"
                    )),
                    Ok(source) => sources.push(source),
                    Err(e) => problems.push(format!("caller identifier `{name}`: {e}")),
                }
            }
            identifiers.push(Identifier {
                name,
                prefix: identifier.prefix,
                sources,
            });
        }
        if problems.is_empty() {
            let id = match identifiers.is_empty() {
                true => 0,
                false => NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            };
            Ok(Caller { identifiers, id })
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.identifiers.is_empty()
    }

    /// The identifier names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.identifiers.iter().map(|i| i.name.as_str())
    }

    /// What each identifier's sources say about `identity`; all nothing without one.
    pub fn resolve(&self, identity: Option<&Identity>) -> Vec<(&str, Found)> {
        self.identifiers
            .iter()
            .map(|identifier| {
                let found = match identity {
                    Some(identity) => identifier.resolve(identity),
                    None => Found::Nothing,
                };
                (identifier.name.as_str(), found)
            })
            .collect()
    }

    /// The resolution in words, for explain output.
    pub fn describe(&self, identity: Option<&Identity>) -> String {
        let parts: Vec<String> = self
            .resolve(identity)
            .into_iter()
            .map(|(name, found)| match found {
                Found::Nothing => format!("{name}: null (no source holds one)"),
                Found::Value(value) => format!("{name}: `{value}`"),
                Found::Conflict(values) => format!(
                    "{name}: conflicting ({}), so reading it fails",
                    values
                        .iter()
                        .map(|(source, value)| format!("{source} says `{value}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
            .collect();
        parts.join("; ")
    }
}

impl Identifier {
    fn resolve(&self, identity: &Identity) -> Found {
        // The sources' labels are written only for a conflict (a `format!` each).
        let mut seen: Vec<(&Source, String)> = Vec::new();
        for source in &self.sources {
            let value = match source {
                Source::ClientId => identity.client_id.as_deref().and_then(|v| self.marked(v)),
                Source::Sub => identity.sub.as_deref().and_then(|v| self.marked(v)),
                Source::Act => identity
                    .act()
                    .and_then(|act| act.get("sub"))
                    .and_then(Json::as_str)
                    .and_then(|v| self.marked(v)),
                Source::Aggregated(name) => identity
                    .aggregated_claims()
                    .get(name)
                    .and_then(|v| self.claimed(v)),
                Source::Claim(name) => identity.claims.get(name).and_then(|v| self.claimed(v)),
            };
            if let Some(value) = value {
                seen.push((source, value));
            }
        }
        if seen
            .iter()
            .skip(1)
            .all(|(_, v)| Some(v) == seen.first().map(|(_, f)| f))
        {
            return match seen.into_iter().next() {
                None => Found::Nothing,
                Some((_, first)) => Found::Value(first),
            };
        }
        let seen: Vec<(String, String)> = seen
            .into_iter()
            .map(|(source, value)| (source.label(), value))
            .collect();
        tracing::warn!(
            identifier = %self.name,
            sources = %seen.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(", "),
            "the token's sources of a caller identifier disagree: it is left unset, rules reading it fail closed"
        );
        Found::Conflict(seen)
    }

    /// An identifier written with its prefix (`uzovi:5000`): the rest, when there is one.
    fn marked(&self, value: &str) -> Option<String> {
        value
            .strip_prefix(self.prefix.as_str())
            .filter(|rest| !rest.is_empty())
            .map(str::to_owned)
    }

    /// An identifier as a claim holds it: a string (prefix stripped when present) or an
    /// integer; anything else does not count.
    fn claimed(&self, value: &Json) -> Option<String> {
        let text = match value {
            Json::String(text) => text
                .strip_prefix(self.prefix.as_str())
                .unwrap_or(text)
                .to_owned(),
            Json::Number(number) if number.is_i64() || number.is_u64() => number.to_string(),
            _ => return None,
        };
        (!text.is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;

    fn caller(yaml: &str) -> Result<Caller, Vec<String>> {
        Caller::compile(serde_yaml_ng::from_str(yaml).unwrap())
    }

    fn identity(claims: Json, aggregated: Json) -> Identity {
        let claims = claims.as_object().unwrap().clone();
        let string = |name: &str| claims.get(name).and_then(Json::as_str).map(str::to_owned);
        let (sub, client_id) = (string("sub"), string("client_id"));
        let identity = Identity {
            client_id,
            claims,
            ..Identity::for_tests("iwlz", "auth.nid", sub.as_deref())
        };
        let _ = identity
            .aggregated
            .set(aggregated.as_object().unwrap().clone());
        identity
    }

    const IWLZ: &str = r#"
uzovi: {prefix: "uzovi:", from: [client_id, sub, claims]}
agb: {prefix: "agbcode:", from: [client_id, sub, act, claims]}
"#;

    fn found(caller: &Caller, identity: &Identity) -> Vec<(String, Found)> {
        caller
            .resolve(Some(identity))
            .into_iter()
            .map(|(n, f)| (n.to_owned(), f))
            .collect()
    }

    fn value(text: &str) -> Found {
        Found::Value(text.into())
    }

    #[test]
    fn identifiers_come_from_prefixed_ids_and_claims() {
        let caller = caller(IWLZ).unwrap();
        // RFC0014 §4.1.4.2: acting for uzovi 5000; the aggregated claim agrees.
        let actor = identity(
            json!({"sub": "20001000001131", "client_id": "uzovi:5000", "act": {"sub": "20001000001131"}}),
            json!({"uzovi": "5000"}),
        );
        assert_eq!(
            found(&caller, &actor),
            vec![
                ("agb".into(), Found::Nothing),
                ("uzovi".into(), value("5000"))
            ]
        );
        // §4.1.4.1: the party itself, its AGB code only in the aggregated claims.
        let party = identity(
            json!({"sub": "20001000001131", "client_id": "20001000001131"}),
            json!({"agb": "012345123"}),
        );
        assert_eq!(
            found(&caller, &party),
            vec![
                ("agb".into(), value("012345123")),
                ("uzovi".into(), Found::Nothing)
            ]
        );
        // An actor's own id counts when it carries the prefix.
        let acting_agb = identity(
            json!({"client_id": "x", "act": {"sub": "agbcode:012345678"}}),
            json!({}),
        );
        assert_eq!(found(&caller, &acting_agb)[0].1, value("012345678"));
    }

    #[test]
    fn values_without_the_prefix_do_not_count() {
        let caller = caller(IWLZ).unwrap();
        for client_id in ["5000", "uzovi:", "UZOVI:5000", "agbcode:5000"] {
            let token = identity(json!({"client_id": client_id}), json!({}));
            assert_eq!(found(&caller, &token)[1].1, Found::Nothing, "{client_id}");
        }
        // Claims hold the identifier itself, with or without its prefix; numbers count.
        for claim in [json!("5000"), json!("uzovi:5000"), json!(5000)] {
            let token = identity(json!({}), json!({"uzovi": claim}));
            assert_eq!(found(&caller, &token)[1].1, value("5000"), "{claim}");
        }
        for claim in [json!(""), json!(true), json!(["5000"]), json!(5000.5)] {
            let token = identity(json!({}), json!({"uzovi": claim}));
            assert_eq!(found(&caller, &token)[1].1, Found::Nothing, "{claim}");
        }
    }

    #[test]
    fn disagreeing_sources_conflict_and_agreeing_ones_do_not() {
        let caller = caller(IWLZ).unwrap();
        let agreeing = identity(
            json!({"client_id": "uzovi:5000", "sub": "uzovi:5000"}),
            json!({"uzovi": "5000"}),
        );
        assert_eq!(found(&caller, &agreeing)[1].1, value("5000"));
        let disagreeing = identity(json!({"client_id": "uzovi:5000"}), json!({"uzovi": "5529"}));
        assert_eq!(
            found(&caller, &disagreeing)[1].1,
            Found::Conflict(vec![
                ("client_id".into(), "5000".into()),
                ("aggregated claim `uzovi`".into(), "5529".into())
            ])
        );
        assert!(caller.describe(Some(&disagreeing)).contains("conflicting"));
    }

    #[test]
    fn plain_and_renamed_claims() {
        let caller = caller(
            "ura: {from: ['claim:organization_ura', claims], claim: ura_code}\nany: {from: [sub]}",
        )
        .unwrap();
        let token = identity(
            json!({"organization_ura": "90000001", "sub": "whatever"}),
            json!({"ura_code": "90000001"}),
        );
        assert_eq!(
            found(&caller, &token),
            vec![
                ("any".into(), value("whatever")),
                ("ura".into(), value("90000001"))
            ]
        );
        assert_eq!(
            caller.resolve(None),
            vec![("any", Found::Nothing), ("ura", Found::Nothing)]
        );
    }

    #[test]
    fn bad_blocks_say_what_is_wrong() {
        let problems = caller(
            "'bad-name': {from: [sub]}\nx: {from: []}\ny: {from: [sub, sub, token, 'claim:']}\nz: {from: [sub], claim: c}",
        )
        .unwrap_err();
        let text = problems.join("\n");
        for expected in [
            "`bad-name` is not a CEL name",
            "`x`: `from` lists no source",
            "`y`: source `sub` is listed twice",
            "`y`: `token` is not a source",
            "`y`: `claim:` is not a source",
            "`z`: `claim` names the aggregated claim, but `from` has no `claims`",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }
}

//! The kinds of source: how a call's arguments become a request, and how an answer is
//! read. Arguments are checked when the call is made, before any network: a bad one is a
//! failure naming keys only.

use std::path::Path;
use std::sync::Arc;

use cel::Value;
use serde_json::Value as Json;

use super::LookupFailure;
use super::settings::{HttpMethod, KindConfig, SourceAuth, SourceConfig};

/// A kind with its settings.
pub(super) enum Kind {
    Http {
        method: HttpMethod,
        url: String,
    },
    Fhir {
        base_url: String,
        search_method: HttpMethod,
        max_results: u32,
    },
    Userinfo {
        endpoint: String,
    },
    Mitz {
        endpoint: String,
        defaults: std::collections::BTreeMap<String, String>,
        /// The data holders asked for; empty: any.
        data_holders: Vec<String>,
    },
}

/// The question's inputs that name the data holder: a call that gives one empty says "the
/// data holder is not named here" and gets the source's default (a policy cannot leave a
/// key out of a CEL map literal conditionally, so it passes `''` for the PEP's holder when
/// the PEP named none). Only these: an empty requester or BSN must stay a failure, never
/// become a configured value.
const HOLDER_KEYS: [&str; 2] = ["author_ura", "author_facility_type"];

/// The inputs of a Mitz call ([`super::mitz::MitzQuestion`]).
pub const MITZ_KEYS: [&str; 10] = [
    "bsn",
    "requester_ura",
    "requester_facility_type",
    "subject_role",
    "provider_id",
    "mandated_id",
    "author_ura",
    "author_facility_type",
    "event_code",
    "purpose_of_use",
];

/// What one look-up asks, built from a call's arguments.
#[derive(Debug)]
pub enum Query {
    /// `search`: a FHIR search by GET, answered with a searchset.
    Get {
        url: String,
        search: bool,
    },
    PostJson {
        url: String,
        body: Json,
    },
    PostForm {
        url: String,
        form: Vec<(String, String)>,
    },
    /// Mitz: the closed question, built (and its inputs checked) when the call was made.
    Mitz {
        url: String,
        body: String,
    },
    /// Userinfo: the caller's token, and the `sub` the answer must have.
    Userinfo {
        url: String,
        token: Arc<str>,
        sub: Option<String>,
    },
}

/// How Sluis authenticates itself, with its secrets read.
pub(super) enum Auth {
    None,
    Bearer(String),
    ClientCredentials {
        token_endpoint: String,
        client_id: String,
        secret: String,
        scope: Option<String>,
        /// The access token and when to fetch a new one; one refresh at a time.
        token: tokio::sync::Mutex<Option<(String, std::time::Instant)>>,
    },
}

/// What an answer gave.
pub(super) struct Parsed {
    pub value: Value,
    pub negative: bool,
    pub cacheable: bool,
}

const FHIR_SUMMARIES: [&str; 5] = ["true", "text", "data", "count", "false"];

impl Kind {
    pub(super) fn new(config: &KindConfig) -> Result<Kind, String> {
        Ok(match config {
            KindConfig::Http { method, url } => Kind::Http {
                method: *method,
                url: url.clone(),
            },
            KindConfig::Fhir {
                base_url,
                search_method,
                max_results,
            } => Kind::Fhir {
                base_url: base_url.trim_end_matches('/').to_owned(),
                search_method: *search_method,
                max_results: *max_results,
            },
            KindConfig::Userinfo { endpoint } => Kind::Userinfo {
                endpoint: endpoint.clone(),
            },
            KindConfig::Mitz {
                endpoint,
                defaults,
                data_holders,
            } => {
                if let Some(unknown) = defaults.keys().find(|k| !MITZ_KEYS.contains(&k.as_str())) {
                    return Err(format!(
                        "`defaults` has no input `{unknown}` (inputs: {})",
                        MITZ_KEYS.join(", ")
                    ));
                }
                if let Some(bad) = data_holders
                    .iter()
                    .find(|ura| ura.len() != 8 || !ura.bytes().all(|b| b.is_ascii_digit()))
                {
                    return Err(format!("`data_holders`: `{bad}` is not a URA (8 digits)"));
                }
                if let Some(default) = defaults.get("author_ura")
                    && !data_holders.is_empty()
                    && !data_holders.contains(default)
                {
                    return Err(format!(
                        "`defaults.author_ura` `{default}` is not one of `data_holders`"
                    ));
                }
                Kind::Mitz {
                    endpoint: endpoint.clone(),
                    defaults: defaults.clone(),
                    data_holders: data_holders.clone(),
                }
            }
        })
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Kind::Http { .. } => "http",
            Kind::Fhir { .. } => "fhir",
            Kind::Userinfo { .. } => "userinfo",
            Kind::Mitz { .. } => "mitz",
        }
    }

    /// The query `args` (canonical JSON) ask. `token`/`sub`: the caller's, for userinfo.
    pub(super) fn query(
        &self,
        args: &Json,
        token: Option<&Arc<str>>,
        sub: Option<&str>,
    ) -> Result<Query, LookupFailure> {
        let bad = |message: String| LookupFailure::Arguments(message);
        let empty = serde_json::Map::new();
        let map = match args {
            Json::Object(map) => map,
            Json::Null => &empty,
            _ => return Err(bad("pass a map, e.g. `{'read': 'Patient/1'}`".into())),
        };
        match self {
            Kind::Mitz {
                endpoint,
                defaults,
                data_holders,
            } => {
                let mut inputs = defaults.clone();
                for (key, value) in map {
                    if !MITZ_KEYS.contains(&key.as_str()) {
                        return Err(bad(format!(
                            "unknown key `{key}` (keys: {})",
                            MITZ_KEYS.join(", ")
                        )));
                    }
                    let Json::String(value) = value else {
                        return Err(bad(format!("`{key}` must be a string")));
                    };
                    if value.is_empty() && HOLDER_KEYS.contains(&key.as_str()) {
                        continue;
                    }
                    inputs.insert(key.clone(), value.clone());
                }
                let mut take = |key: &str| inputs.remove(key);
                let required = |value: Option<String>, key: &str| {
                    value.ok_or_else(|| {
                        bad(format!("Mitz needs `{key}` (in the call or `defaults`)"))
                    })
                };
                use super::mitz::MitzCode;
                let question = super::mitz::MitzQuestion {
                    patient_bsn: required(take("bsn"), "bsn")?,
                    author_ura: required(take("author_ura"), "author_ura")?,
                    author_facility_type: MitzCode::facility_type(required(
                        take("author_facility_type"),
                        "author_facility_type",
                    )?),
                    event_code: MitzCode::event_code(required(take("event_code"), "event_code")?),
                    role: MitzCode::role(required(take("subject_role"), "subject_role")?),
                    requesting_practitioner: take("provider_id"),
                    mandated: take("mandated_id"),
                    requesting_ura: required(take("requester_ura"), "requester_ura")?,
                    requesting_facility_type: MitzCode::facility_type(required(
                        take("requester_facility_type"),
                        "requester_facility_type",
                    )?),
                    purpose_of_use: MitzCode::purpose_of_use(required(
                        take("purpose_of_use"),
                        "purpose_of_use",
                    )?),
                };
                // A holder this deployment does not answer for is never asked about: the
                // answer would be about records it does not keep.
                if !data_holders.is_empty() && !data_holders.contains(&question.author_ura) {
                    return Err(bad(
                        "the data holder (`author_ura`) is not one of the source's `data_holders`"
                            .into(),
                    ));
                }
                // The error names the field, never its value.
                let body = super::mitz::build_request(
                    &question,
                    &super::mitz::MitzRequestSettings {
                        to: endpoint.clone(),
                    },
                )
                .map_err(|e| bad(e.to_string()))?;
                Ok(Query::Mitz {
                    url: endpoint.clone(),
                    body,
                })
            }
            Kind::Userinfo { endpoint } => {
                if !map.is_empty() {
                    return Err(bad("userinfo takes no arguments: `sources.NAME()`".into()));
                }
                let token = token.ok_or_else(|| {
                    bad(
                        "userinfo needs the caller's bearer token (none, or a DPoP-bound one)"
                            .into(),
                    )
                })?;
                Ok(Query::Userinfo {
                    url: endpoint.clone(),
                    token: token.clone(),
                    sub: sub.map(str::to_owned),
                })
            }
            Kind::Http { method, url } => {
                let mut out = String::new();
                let mut rest = url.as_str();
                while let Some(open) = rest.find('{') {
                    let (before, after) = rest.split_at(open);
                    out.push_str(before);
                    let after = after.get(1..).unwrap_or("");
                    let Some(close) = after.find('}') else {
                        out.push('{');
                        rest = after;
                        continue;
                    };
                    let (name, tail) = after.split_at(close);
                    let value = match map.get(name) {
                        Some(Json::String(s)) => s.clone(),
                        Some(Json::Number(n)) => n.to_string(),
                        Some(Json::Bool(b)) => b.to_string(),
                        Some(_) => return Err(bad(format!("`{name}` must be a string or number"))),
                        None => return Err(bad(format!("the URL needs `{name}`"))),
                    };
                    out.push_str(
                        &percent_encoding::utf8_percent_encode(&value, SEGMENT).to_string(),
                    );
                    rest = tail.get(1..).unwrap_or("");
                }
                out.push_str(rest);
                Ok(match method {
                    HttpMethod::Get => Query::Get {
                        url: out,
                        search: false,
                    },
                    HttpMethod::Post => Query::PostJson {
                        url: out,
                        body: args.clone(),
                    },
                })
            }
            Kind::Fhir {
                base_url,
                search_method,
                max_results,
            } => {
                for key in map.keys() {
                    if !["read", "search", "params", "elements", "summary"].contains(&key.as_str())
                    {
                        return Err(bad(format!(
                            "unknown key `{key}` (keys: read, search, params, elements, summary)"
                        )));
                    }
                }
                let mut extra: Vec<(String, String)> = Vec::new();
                if let Some(elements) = map.get("elements") {
                    let Json::Array(elements) = elements else {
                        return Err(bad("`elements` must be a list of strings".into()));
                    };
                    let mut names = Vec::new();
                    for element in elements {
                        match element {
                            Json::String(e) if valid_element(e) => names.push(e.as_str()),
                            _ => {
                                return Err(bad("`elements` holds an invalid element name".into()));
                            }
                        }
                    }
                    extra.push(("_elements".into(), names.join(",")));
                }
                if let Some(summary) = map.get("summary") {
                    match summary {
                        Json::String(s) if FHIR_SUMMARIES.contains(&s.as_str()) => {
                            extra.push(("_summary".into(), s.clone()))
                        }
                        _ => {
                            return Err(bad(format!(
                                "`summary` must be one of {}",
                                FHIR_SUMMARIES.join(", ")
                            )));
                        }
                    }
                }
                match (map.get("read"), map.get("search")) {
                    (Some(Json::String(read)), None) => {
                        if map.contains_key("params") {
                            return Err(bad("`params` belongs to `search`".into()));
                        }
                        let (kind, id) = read
                            .split_once('/')
                            .ok_or_else(|| bad("`read` must be `Type/id`".into()))?;
                        if !valid_type(kind) || !valid_id(id) {
                            return Err(bad(
                                "`read` must be `Type/id` with a FHIR type and id".into()
                            ));
                        }
                        let mut url = format!("{base_url}/{kind}/{id}");
                        if !extra.is_empty() {
                            url.push('?');
                            url.push_str(&form(&extra));
                        }
                        Ok(Query::Get { url, search: false })
                    }
                    (None, Some(Json::String(kind))) => {
                        if !valid_type(kind) {
                            return Err(bad("`search` must be a FHIR resource type".into()));
                        }
                        let mut params: Vec<(String, String)> = Vec::new();
                        match map.get("params") {
                            None => {}
                            Some(Json::Object(given)) => {
                                for (name, value) in given {
                                    if !valid_param(name) {
                                        return Err(bad(format!(
                                            "invalid search parameter name `{name}`"
                                        )));
                                    }
                                    match value {
                                        Json::String(v) => params.push((name.clone(), v.clone())),
                                        Json::Number(n) => {
                                            params.push((name.clone(), n.to_string()))
                                        }
                                        _ => {
                                            return Err(bad(format!(
                                                "search parameter `{name}` must be a string"
                                            )));
                                        }
                                    }
                                }
                            }
                            Some(_) => return Err(bad("`params` must be a map".into())),
                        }
                        params.extend(extra);
                        params.push(("_count".into(), max_results.to_string()));
                        Ok(match search_method {
                            HttpMethod::Post => Query::PostForm {
                                url: format!("{base_url}/{kind}/_search"),
                                form: params,
                            },
                            HttpMethod::Get => Query::Get {
                                url: format!("{base_url}/{kind}?{}", form(&params)),
                                search: true,
                            },
                        })
                    }
                    _ => Err(bad(
                        "give exactly one of `read` ('Type/id') or `search` ('Type'), as a string"
                            .into(),
                    )),
                }
            }
        }
    }

    /// Reads an answer.
    pub(super) fn parse(
        &self,
        query: &Query,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Parsed, LookupFailure> {
        let search = matches!(
            query,
            Query::PostForm { .. } | Query::Get { search: true, .. }
        );
        match (self, status) {
            (Kind::Http { .. }, 404) | (Kind::Fhir { .. }, 404 | 410) if !search => {
                return Ok(Parsed {
                    value: Value::Null,
                    negative: true,
                    cacheable: true,
                });
            }
            (_, 200) => {}
            (_, status) => return Err(LookupFailure::Status(status)),
        }
        if let Kind::Mitz { .. } = self {
            let media = content_type
                .and_then(|c| c.split(';').next())
                .map(|c| c.trim().to_ascii_lowercase());
            if !matches!(
                media.as_deref(),
                Some("text/xml" | "application/soap+xml" | "application/xml")
            ) {
                return Err(LookupFailure::ContentType(
                    "text/xml or application/soap+xml",
                ));
            }
            let decision = super::mitz::parse_response(body)
                .map_err(|_| LookupFailure::Invalid("not a Mitz answer with one decision"))?;
            use super::mitz::MitzDecision;
            let mut map = std::collections::HashMap::new();
            map.insert(
                cel::objects::Key::String(Arc::new("decision".to_owned())),
                Value::String(Arc::new(decision.as_str().to_owned())),
            );
            return Ok(Parsed {
                value: Value::Map(cel::objects::Map { map: Arc::new(map) }),
                negative: matches!(decision, MitzDecision::Deny | MitzDecision::NotApplicable),
                // Mitz could not decide: ask again next time.
                cacheable: decision != MitzDecision::Indeterminate,
            });
        }
        let (wanted, fhir) = match self {
            Kind::Fhir { .. } => ("application/fhir+json or application/json", true),
            _ => ("application/json", false),
        };
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        let ok = match media.as_deref() {
            Some("application/json") => true,
            Some("application/fhir+json") => fhir,
            _ => false,
        };
        if !ok {
            return Err(LookupFailure::ContentType(wanted));
        }
        let json = parse_json(body)?;
        match (self, query) {
            (Kind::Fhir { .. }, _) if search => {
                let is_bundle = json.get("resourceType").and_then(Json::as_str) == Some("Bundle")
                    && json.get("type").and_then(Json::as_str) == Some("searchset");
                if !is_bundle {
                    return Err(LookupFailure::Invalid(
                        "a search did not answer a searchset Bundle",
                    ));
                }
                let next = json
                    .get("link")
                    .and_then(Json::as_array)
                    .is_some_and(|links| {
                        links
                            .iter()
                            .any(|l| l.get("relation").and_then(Json::as_str) == Some("next"))
                    });
                if next {
                    return Err(LookupFailure::Invalid("the search has more than one page"));
                }
                let mut json = json;
                let empty = json
                    .get("entry")
                    .and_then(Json::as_array)
                    .is_none_or(Vec::is_empty);
                if let Json::Object(map) = &mut json {
                    map.entry("entry")
                        .or_insert_with(|| Json::Array(Vec::new()));
                }
                Ok(Parsed {
                    value: to_cel(&json)?,
                    negative: empty,
                    cacheable: true,
                })
            }
            (Kind::Fhir { .. }, _) => {
                if json.get("resourceType").and_then(Json::as_str).is_none() {
                    return Err(LookupFailure::Invalid(
                        "a read did not answer a FHIR resource",
                    ));
                }
                Ok(Parsed {
                    value: to_cel(&json)?,
                    negative: false,
                    cacheable: true,
                })
            }
            (Kind::Userinfo { .. }, Query::Userinfo { sub, .. }) => {
                let answered = json.get("sub").and_then(Json::as_str);
                if answered.is_none() || (sub.is_some() && answered != sub.as_deref()) {
                    return Err(LookupFailure::Invalid(
                        "the userinfo `sub` differs from the token's",
                    ));
                }
                Ok(Parsed {
                    value: to_cel(&json)?,
                    negative: false,
                    cacheable: true,
                })
            }
            _ => Ok(Parsed {
                value: to_cel(&json)?,
                negative: false,
                cacheable: true,
            }),
        }
    }
}

/// A body as strict JSON (duplicate members refused).
pub(super) fn parse_json(body: &[u8]) -> Result<Json, LookupFailure> {
    let text = std::str::from_utf8(body).map_err(|_| LookupFailure::Invalid("not UTF-8"))?;
    crate::json::strict_json(text).map_err(|_| LookupFailure::Invalid("not JSON"))
}

pub(super) fn to_cel(json: &Json) -> Result<Value, LookupFailure> {
    cel::to_value(json).map_err(|_| LookupFailure::Invalid("not representable in CEL"))
}

/// Everything but unreserved characters is encoded: an argument is one path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn form(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// `^[A-Z][A-Za-z]{1,63}$`
fn valid_type(text: &str) -> bool {
    let mut chars = text.chars();
    (2..=64).contains(&text.len())
        && chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphabetic())
}

/// FHIR id: `^[A-Za-z0-9\-.]{1,64}$`, and not `.` or `..`.
fn valid_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && text != "."
        && text != ".."
}

fn valid_param(text: &str) -> bool {
    let mut chars = text.chars();
    (1..=64).contains(&text.len())
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-'))
}

fn valid_element(text: &str) -> bool {
    let mut chars = text.chars();
    (1..=64).contains(&text.len())
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
}

/// The client and authentication of a source. Every file and secret it reads is also fed
/// to `read`, so a reload can tell whether anything the client holds changed.
pub(super) fn client(
    config: &SourceConfig,
    base_dir: &Path,
    read: &mut sha2::Sha256,
) -> Result<(reqwest::Client, Auth), String> {
    use sha2::Digest;
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.timeout);
    if let Some(ca) = &config.ca_certificate {
        let path = base_dir.join(ca);
        let pem =
            std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        read.update((pem.len() as u64).to_le_bytes());
        read.update(&pem);
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("`{}` holds no PEM certificate: {e}", path.display()))?;
        builder = builder.tls_certs_only(roots);
    }
    let mut secret_text = |secret: &crate::authn::settings::Secret| {
        let bytes = secret.resolve(base_dir)?;
        read.update((bytes.len() as u64).to_le_bytes());
        read.update(&bytes);
        String::from_utf8(bytes).map_err(|_| "secret is not UTF-8".to_owned())
    };
    let auth = match &config.client_auth {
        SourceAuth::None => Auth::None,
        SourceAuth::Bearer { token } => Auth::Bearer(secret_text(token)?),
        SourceAuth::ClientCredentials {
            token_endpoint,
            client_id,
            client_secret,
            scope,
        } => Auth::ClientCredentials {
            token_endpoint: token_endpoint.clone(),
            client_id: client_id.clone(),
            secret: secret_text(client_secret)?,
            scope: scope.clone(),
            token: tokio::sync::Mutex::new(None),
        },
        SourceAuth::Mtls {
            certificate,
            private_key,
        } => {
            let path = base_dir.join(certificate);
            let mut pem = std::fs::read(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            pem.push(b'\n');
            pem.extend(private_key.resolve(base_dir)?);
            read.update((pem.len() as u64).to_le_bytes());
            read.update(&pem);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("mtls certificate or key: {e}"))?;
            builder = builder.identity(identity);
            Auth::None
        }
    };
    let client = builder
        .build()
        .map_err(|e| format!("cannot build an http client: {e}"))?;
    Ok((client, auth))
}

/// The request for `query`, authenticated.
pub(super) async fn request(
    client: &reqwest::Client,
    auth: &Auth,
    query: &Query,
) -> Result<reqwest::RequestBuilder, LookupFailure> {
    let builder = match query {
        Query::Get { url, .. } => client.get(url),
        Query::PostJson { url, body } => client.post(url).json(body),
        Query::PostForm { url, form: pairs } => client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(pairs)),
        Query::Mitz { url, body } => {
            return Ok(client
                .post(url)
                .header("content-type", "text/xml; charset=utf-8")
                .header("accept", "application/soap+xml, text/xml")
                .body(body.clone()));
        }
        Query::Userinfo { url, token, .. } => {
            return Ok(client
                .get(url)
                .header("accept", "application/json")
                .bearer_auth(&**token));
        }
    }
    .header("accept", "application/fhir+json, application/json");
    Ok(match auth {
        Auth::None => builder,
        Auth::Bearer(token) => builder.bearer_auth(token),
        Auth::ClientCredentials { .. } => builder.bearer_auth(access_token(client, auth).await?),
    })
}

/// The client_credentials access token, fetched again 30 s before it expires.
async fn access_token(client: &reqwest::Client, auth: &Auth) -> Result<String, LookupFailure> {
    let Auth::ClientCredentials {
        token_endpoint,
        client_id,
        secret,
        scope,
        token,
    } = auth
    else {
        return Err(LookupFailure::Other("no client credentials".into()));
    };
    let mut held = token.lock().await;
    if let Some((token, until)) = &*held
        && std::time::Instant::now() < *until
    {
        return Ok(token.clone());
    }
    let mut pairs = vec![("grant_type".to_owned(), "client_credentials".to_owned())];
    if let Some(scope) = scope {
        pairs.push(("scope".into(), scope.clone()));
    }
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let response = client
        .post(token_endpoint)
        .basic_auth(encode(client_id), Some(encode(secret)))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(form(&pairs))
        .send()
        .await
        .map_err(super::classify)?;
    if response.status().as_u16() != 200 {
        return Err(LookupFailure::Other(format!(
            "the token endpoint answered HTTP {}",
            response.status().as_u16()
        )));
    }
    let body = super::read_limited(response, 64 * 1024).await?;
    let json = parse_json(&body)?;
    let access = json
        .get("access_token")
        .and_then(Json::as_str)
        .ok_or(LookupFailure::Invalid(
            "the token endpoint gave no access_token",
        ))?
        .to_owned();
    let lifetime = json.get("expires_in").and_then(Json::as_u64).unwrap_or(60);
    let until = std::time::Instant::now()
        + std::time::Duration::from_secs(lifetime.saturating_sub(30).max(1));
    *held = Some((access.clone(), until));
    Ok(access)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mitz(data_holders: &[&str]) -> Result<Kind, String> {
        Kind::new(&KindConfig::Mitz {
            endpoint: "https://mitz.invalid/xacml3".into(),
            defaults: [
                ("author_ura", "00000659"),
                ("author_facility_type", "Z3"),
                ("event_code", "GGC002"),
                ("purpose_of_use", "TREAT"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            data_holders: data_holders.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// The custodian the question asks about (its envelope read back).
    fn asked_holder(kind: &Kind, author: Option<&str>) -> Result<(String, String), String> {
        let mut args = json!({"bsn": "999999990", "requester_ura": "24173480",
            "requester_facility_type": "Z3", "subject_role": "01.015"});
        if let Some(author) = author {
            args["author_ura"] = json!(author);
            args["author_facility_type"] = json!("");
        }
        match kind.query(&args, None, None) {
            Ok(Query::Mitz { body, .. }) => {
                let question = super::super::mitz::parse_request(body.as_bytes())
                    .map_err(|e| e.to_string())?
                    .question;
                Ok((question.author_ura, question.author_facility_type.code))
            }
            Ok(other) => Err(format!("not a Mitz query: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn the_question_names_the_holder_the_call_names_else_the_default() {
        let any = mitz(&[]).unwrap();
        assert_eq!(
            asked_holder(&any, None).unwrap(),
            ("00000659".into(), "Z3".into())
        );
        // An empty holder is "not named here": the default, never an empty URA.
        assert_eq!(
            asked_holder(&any, Some("")).unwrap(),
            ("00000659".into(), "Z3".into())
        );
        assert_eq!(
            asked_holder(&any, Some("00000666")).unwrap(),
            ("00000666".into(), "Z3".into())
        );
        // A malformed one given is refused, not replaced.
        assert!(asked_holder(&any, Some("666")).is_err());
    }

    #[test]
    fn a_holder_outside_data_holders_is_never_asked() {
        let served = mitz(&["00000659", "00000666"]).unwrap();
        assert_eq!(
            asked_holder(&served, Some("00000666")).unwrap().0,
            "00000666"
        );
        assert_eq!(asked_holder(&served, None).unwrap().0, "00000659");
        let error = asked_holder(&served, Some("00000777")).unwrap_err();
        assert!(error.contains("`data_holders`"), "{error}");
        assert!(
            !error.contains("00000777"),
            "the value is not in the error: {error}"
        );
    }

    #[test]
    fn an_empty_requester_or_bsn_never_takes_a_default() {
        let kind = Kind::new(&KindConfig::Mitz {
            endpoint: "https://mitz.invalid/xacml3".into(),
            defaults: [("requester_ura", "00000659"), ("bsn", "999999990")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            data_holders: Vec::new(),
        })
        .unwrap();
        for key in ["requester_ura", "bsn"] {
            let args = json!({key: "", "author_ura": "00000659", "author_facility_type": "Z3",
                "requester_facility_type": "Z3", "subject_role": "01.015",
                "event_code": "GGC002", "purpose_of_use": "TREAT"});
            assert!(kind.query(&args, None, None).is_err(), "{key}");
        }
    }

    #[test]
    fn data_holders_are_checked_at_load() {
        let error = |holders: &[&str]| mitz(holders).err().unwrap_or_default();
        assert!(error(&["659"]).contains("not a URA"));
        assert!(error(&["00000666"]).contains("`defaults.author_ura`"));
    }
}

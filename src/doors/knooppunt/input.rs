//! The `/pdp` request body read into the request the engine decides and the relayed
//! claims. Only `sluis-core`, serde and `form_urlencoded`: the fuzz target
//! `knooppunt_pdp` includes this file as it is.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::{Map, Value};

use sluis_core::request::{AccessRequest, Door};

/// The context keys copied into the request's context.
pub const CONTEXT_KEYS: [&str; 4] = [
    "connection_type_code",
    "data_holder_organization_id",
    "data_holder_facility_type",
    "patient_bsn",
];

/// At most this many request headers are read.
const MAX_HEADERS: usize = 100;

/// The request document, read.
#[derive(Debug)]
pub struct Input {
    pub request: AccessRequest,
    /// The token's claims as the PEP's introspection gave them.
    pub claims: Map<String, Value>,
}

#[derive(Deserialize)]
struct Document {
    input: InputSpec,
}

#[derive(Deserialize)]
struct InputSpec {
    subject: Map<String, Value>,
    request: RequestSpec,
    #[serde(default)]
    context: Map<String, Value>,
}

#[derive(Deserialize)]
struct RequestSpec {
    method: String,
    path: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    query_params: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    header: BTreeMap<String, Value>,
    #[serde(default)]
    body: String,
}

/// Reads a `/pdp` request body into the request the engine decides (`base_path` put in
/// front of its path) and the relayed claims.
pub fn parse(body: &[u8], base_path: &str) -> Result<Input, String> {
    let document: Document = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let InputSpec {
        subject,
        request,
        context,
    } = document.input;
    let method = request.method.to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err("`request.method` must be an HTTP method".into());
    }
    if !request.path.starts_with('/') {
        return Err("`request.path` must start with `/`".into());
    }
    let (path, inline_query) = match request.path.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (request.path.clone(), String::new()),
    };
    let given = [
        !inline_query.is_empty(),
        !request.query.is_empty(),
        !request.query_params.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err("the query is given more than once (`path`, `query`, `query_params`)".into());
    }
    let query = if !request.query_params.is_empty() {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (name, values) in &request.query_params {
            for value in values {
                serializer.append_pair(name, value);
            }
        }
        serializer.finish()
    } else if !request.query.is_empty() {
        request.query.trim_start_matches('?').to_owned()
    } else {
        inline_query
    };
    if request.header.len() > MAX_HEADERS {
        return Err(format!("more than {MAX_HEADERS} headers"));
    }
    let mut headers = sluis_core::request::HeadersBuilder::default();
    for (name, value) in &request.header {
        let joined = match value {
            Value::String(text) => text.clone(),
            Value::Array(values) => values
                .iter()
                .map(|v| v.as_str().ok_or(()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|()| format!("header `{name}` has a value that is not a string"))?
                .join(","),
            _ => return Err(format!("header `{name}` is not a string or a list")),
        };
        // Two spellings of one name: the later one's value, as a map keeps it.
        headers.push_lowercased(name, &joined);
    }
    let mut headers = headers.build(sluis_core::request::Repeats::Replace);
    // The token is the PEP's business: what it verified comes as `subject`.
    headers.remove("authorization");
    headers.remove("dpop");
    let mut copied = HashMap::new();
    for key in CONTEXT_KEYS {
        match context.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => {
                copied.insert(key.to_owned(), text.clone());
            }
            Some(_) => return Err(format!("`context.{key}` must be a string")),
        }
    }
    let full_path = if path == "/" && !base_path.is_empty() {
        base_path.to_owned()
    } else {
        format!("{base_path}{path}")
    };
    let request = AccessRequest {
        method,
        scheme: "https".into(),
        path: full_path,
        query,
        protocol: request.protocol,
        headers,
        body: request.body,
        context: copied,
        door: Door("knooppunt-pdp"),
        ..AccessRequest::default()
    };
    Ok(Input {
        request,
        claims: claims(subject)?,
    })
}

/// The token's claims from `subject`: flat, or the older `{type, id, properties}` whose
/// `client_qualifications` are the scopes.
fn claims(mut subject: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let Some(properties) = subject.remove("properties") else {
        return Ok(subject);
    };
    let Value::Object(mut claims) = properties else {
        return Err("`subject.properties` must be an object".into());
    };
    if let Some(qualifications) = claims.remove("client_qualifications") {
        let Value::Array(list) = qualifications else {
            return Err("`client_qualifications` must be a list".into());
        };
        let scopes: Option<Vec<&str>> = list.iter().map(Value::as_str).collect();
        let scopes = scopes.ok_or("`client_qualifications` must be strings")?;
        claims.insert("scope".into(), Value::String(scopes.join(" ")));
    }
    // The older shape predates `active` and `exp` in it: what the PEP relays is its word
    // that the token is active, and it must still say until when.
    for key in ["active", "exp", "iss", "aud", "iat"] {
        if let Some(value) = subject.remove(key) {
            claims.entry(key).or_insert(value);
        }
    }
    Ok(claims)
}

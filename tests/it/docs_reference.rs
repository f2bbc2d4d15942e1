//! The reference documentation keeps up with the code: every key of the config file's
//! JSON Schema is in `docs/configuration.md`, every metric a running server exports is in
//! `docs/operations.md`, and the README keeps to what a newcomer needs.

use sluis_test_kit as kit;

use kit::{POLICY, Server, Setup, config_yaml, repo_path};

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `node` with its `$ref`s followed, and the alternatives of an `anyOf`/`oneOf` (an
/// `Option<T>`, an untagged enum) that are not `null`.
fn variants<'a>(
    schema: &'a serde_json::Value,
    node: &'a serde_json::Value,
) -> Vec<&'a serde_json::Value> {
    let mut node = node;
    for _ in 0..20 {
        let Some(reference) = node.get("$ref").and_then(|r| r.as_str()) else {
            break;
        };
        let name = reference.rsplit('/').next().unwrap();
        node = &schema["$defs"][name];
    }
    match node.get("anyOf").or_else(|| node.get("oneOf")) {
        Some(alternatives) => alternatives
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|alternative| variants(schema, alternative))
            .filter(|alternative| alternative.get("type") != Some(&serde_json::json!("null")))
            .collect(),
        None => vec![node],
    }
}

/// Every key as a dotted path (`issuers[].jwks.url`, `x.<name>` for a map's entries).
fn keys(
    schema: &serde_json::Value,
    node: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
    depth: usize,
) {
    assert!(depth < 12, "schema nested too deep at {path}");
    for variant in variants(schema, node) {
        if let Some(properties) = variant.get("properties").and_then(|p| p.as_object()) {
            for (key, child) in properties {
                let full = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if !out.contains(&full) {
                    out.push(full.clone());
                }
                keys(schema, child, &full, out, depth + 1);
            }
        }
        if let Some(items) = variant.get("items") {
            keys(schema, items, &format!("{path}[]"), out, depth + 1);
        }
        if let Some(extra) = variant
            .get("additionalProperties")
            .filter(|e| e.is_object())
        {
            keys(schema, extra, &format!("{path}.<name>"), out, depth + 1);
        }
    }
}

#[test]
fn every_config_key_is_documented() {
    let schema: serde_json::Value =
        serde_json::from_str(&read("schema/config.schema.json")).unwrap();
    let mut all = Vec::new();
    keys(&schema, &schema, "", &mut all, 0);
    assert!(all.len() > 100, "only {} keys found: {all:?}", all.len());
    for expected in [
        "listeners.tls.admin.certificate",
        "issuers[].jwks.url",
        "store.url",
    ] {
        assert!(
            all.iter().any(|k| k == expected),
            "{expected} not found in {all:?}"
        );
    }
    let doc = read("docs/configuration.md");
    let missing: Vec<&String> = all
        .iter()
        .filter(|key| !doc.contains(&format!("| `{key}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:?}: run scripts/config-doc.py"
    );
}

#[tokio::test]
async fn every_metric_is_documented() {
    let config = format!(
        "{}decision_log:\n  sink: file\n  path: decisions.log\ncandidate:\n  policies: [policies]\n",
        config_yaml("127.0.0.1:0", "127.0.0.1:0")
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    let text = reqwest::get(format!("http://{}/metrics", server.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // `# TYPE sluis_x counter`: counters are exported as `sluis_x_total`.
    let metrics: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap();
            match parts.next() {
                Some("counter") => format!("{name}_total"),
                _ => name.to_owned(),
            }
        })
        .collect();
    assert!(metrics.len() >= 10, "{text}");
    let doc = read("docs/operations.md");
    let missing: Vec<&String> = metrics
        .iter()
        .filter(|name| !doc.contains(&format!("`{name}`")) && !doc.contains(&format!("`{name}{{")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md lacks the metrics {missing:?}"
    );
    // A family without samples yet is not exported: every name registered in the source
    // must be documented too (`sluis_` + name, `_total` for counters).
    let source = read("crates/sluis-core/src/metrics.rs");
    let registered: Vec<&str> = source
        .split("registry.register(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .collect();
    assert!(registered.len() >= 20, "{registered:?}");
    let undocumented: Vec<&&str> = registered
        .iter()
        .filter(|name| {
            ["`", "{", "_total`", "_total{"]
                .iter()
                .all(|after| !doc.contains(&format!("`sluis_{name}{after}")))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "docs/operations.md lacks the registered metrics {undocumented:?}"
    );
}

#[test]
fn the_readme_stays_short_and_links_every_reference_page() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines: reference belongs in docs/"
    );
    for page in [
        "docs/configuration.md",
        "docs/operations.md",
        "docs/troubleshooting.md",
        "docs/security.md",
        "docs/policy-language.md",
        "docs/gateways.md",
        "docs/deployment.md",
        "docs/flows.md",
    ] {
        assert!(
            readme.contains(&format!("]({page})")),
            "README.md does not link {page}"
        );
        assert!(repo_path(page).exists(), "{page} is missing");
    }
    assert!(
        readme.contains("scripts/test.sh"),
        "README.md lost the test command"
    );
}

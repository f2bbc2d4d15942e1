//! JSON Schemas of the files people write — config, policies, policy tests — generated
//! from the Rust types that read them, so editors can complete and check YAML and the
//! schemas cannot drift from the code: `sluis schema --check schema/` (run in CI) fails
//! when a committed schema differs from what the types generate.

use std::path::Path;

use serde_json::Value as Json;

/// File name and schema of every document type.
pub fn generate() -> Vec<(&'static str, Json)> {
    vec![
        (
            "config.schema.json",
            serde_json::to_value(schemars::schema_for!(sluis_config::Config)),
        ),
        (
            "policy.schema.json",
            serde_json::to_value(schemars::schema_for!(sluis_core::policy::spec::PolicyFile)),
        ),
        (
            "policy-test.schema.json",
            serde_json::to_value(schemars::schema_for!(sluis_policy_tools::TestFile)),
        ),
    ]
    .into_iter()
    .map(|(name, schema)| (name, schema.unwrap_or(Json::Null)))
    .collect()
}

fn render(schema: &Json) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes every schema into `dir`.
pub fn write(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    for (name, schema) in generate() {
        let path = dir.join(name);
        std::fs::write(&path, render(&schema))
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    }
    Ok(())
}

/// Compares the schemas in `dir` with the generated ones; each difference is reported.
pub fn check(dir: &Path) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for (name, schema) in generate() {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == render(&schema) => {}
            Ok(_) => problems.push(format!(
                "`{}` is out of date with the code: run `sluis schema --write {}`",
                path.display(),
                dir.display()
            )),
            Err(e) => problems.push(format!("cannot read `{}`: {e}", path.display())),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_schemas_match_the_code() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
        assert_eq!(check(&dir), Ok(()));
    }

    #[test]
    fn a_field_added_without_regenerating_is_caught() {
        // Stand-in for "a field was added to the types": the committed file lacks one.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path()).unwrap();
        let path = dir.path().join("policy.schema.json");
        let mut schema: Json =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        schema["$defs"]["PolicySpec"]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("scopes");
        std::fs::write(&path, render(&schema)).unwrap();
        let problems = check(dir.path()).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("policy.schema.json` is out of date"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_policy_schema_describes_rules() {
        let schema = &generate()[1].1;
        let rule = &schema["$defs"]["RuleSpec"]["properties"];
        assert!(
            rule.get("allow").is_some() && rule.get("deny").is_some(),
            "{rule}"
        );
    }
}

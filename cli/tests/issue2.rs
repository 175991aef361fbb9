//! `rehost inspect` as pipelines use it (issue 2): exit codes, the `--json` contract against
//! `inspect/schema/report.schema.json`, and quiet exit on a broken pipe.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

fn rehost() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rehost"))
}

fn schema() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../inspect/schema/report.schema.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Validates `v` against the subset of JSON Schema our schema uses: type, const, enum, required,
/// properties with additionalProperties false, items, prefixItems, oneOf and local $ref.
fn validate(v: &Value, s: &Value, root: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return validate(v, &root["$defs"][name], root, at, errors);
    }
    if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
        let ok = alts.iter().filter(|a| {
            let mut e = Vec::new();
            validate(v, a, root, at, &mut e);
            e.is_empty()
        });
        if ok.count() != 1 {
            errors.push(format!("{at}: matches not exactly one of oneOf"));
        }
        return;
    }
    if let Some(c) = s.get("const")
        && v != c
    {
        errors.push(format!("{at}: {v} != const {c}"));
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errors.push(format!("{at}: {v} not in {e:?}"));
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let matches = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        if !matches {
            errors.push(format!("{at}: {v} is not of type {types:?}"));
            return;
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(r.as_str().unwrap()) {
                errors.push(format!("{at}: missing required {r}"));
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(val, ps, root, &format!("{at}.{k}"), errors),
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: unexpected property {k}"));
                }
                None => {}
            }
        }
    }
    if let Some(arr) = v.as_array() {
        if let Some(prefix) = s.get("prefixItems").and_then(Value::as_array) {
            for (i, (item, ps)) in arr.iter().zip(prefix).enumerate() {
                validate(item, ps, root, &format!("{at}[{i}]"), errors);
            }
        }
        if let Some(items) = s.get("items") {
            for (i, item) in arr.iter().enumerate() {
                validate(item, items, root, &format!("{at}[{i}]"), errors);
            }
        }
    }
}

#[test]
fn issue2_inspect_json_matches_schema_for_every_image() {
    let schema = schema();
    for name in images::names() {
        let img = images::build(name).unwrap();
        let out = rehost()
            .arg("inspect")
            .arg("--json")
            .arg(&img)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: stdout is not one JSON object: {e}"));
        let mut errors = Vec::new();
        validate(&v, &schema, &schema, "$", &mut errors);
        assert!(errors.is_empty(), "{name}: schema violations: {errors:#?}");
        let want = if v["operating_systems"].as_array().unwrap().is_empty() {
            1
        } else {
            0
        };
        assert_eq!(out.status.code(), Some(want), "{name}: exit code");
    }
}

#[test]
fn issue2_validator_rejects_what_it_should() {
    let schema = schema();
    let mut errors = Vec::new();
    validate(
        &serde_json::json!({"schema_version": 2}),
        &schema,
        &schema,
        "$",
        &mut errors,
    );
    assert!(errors.iter().any(|e| e.contains("const")), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("missing required")),
        "{errors:?}"
    );
}

#[test]
fn issue2_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let out = rehost().arg("inspect").arg(&blank).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "no OS found exits 1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no-os-found"));

    let out = rehost()
        .args(["inspect", "/nonexistent/disk.img"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "unreadable disk exits 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("rehost: cannot open /nonexistent/disk.img"),
        "error names the disk: {err}"
    );

    let out = rehost()
        .args(["inspect", "--format", "vmdk9"])
        .arg(&blank)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error exits 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected raw or qcow2"));

    let out = rehost().arg("inspect").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "missing argument exits 2");
}

#[test]
fn issue2_broken_pipe_exits_quietly() {
    let img = images::build("debian12-vmware").unwrap();
    let mut child = rehost()
        .arg("inspect")
        .arg(&img)
        .arg(&img)
        .arg(&img)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close our end at once: every write of the child fails with EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

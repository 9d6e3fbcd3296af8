//! Real output held to the schemas published in docs/schema/ (which a unit test of
//! kcmp-trace-common keeps equal to the types that write the output).

use std::path::Path;

use serde_json::Value;

/// The validator of docs/schema/`file`.
fn validator(file: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/schema")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let schema: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{} is not a schema: {e}", path.display()))
}

/// A violation, where it is, and for a `oneOf` why each branch failed; without the value
/// (a recording's line runs to megabytes).
fn describe(e: &jsonschema::ValidationError) -> String {
    use jsonschema::error::ValidationErrorKind::{AnyOf, OneOfNotValid};
    let mut text = format!(
        "{} at {:?} (schema {})",
        e.masked(),
        e.instance_path().to_string(),
        e.schema_path()
    );
    if let OneOfNotValid { context } | AnyOf { context } = e.kind() {
        for inner in context.iter().flatten() {
            text += &format!(" [{}]", describe(inner));
        }
    }
    text
}

/// Panics unless `json` is what docs/schema/`file` describes, naming every violation.
fn check(validator: &jsonschema::Validator, file: &str, what: &str, json: &Value) {
    let errors: Vec<String> = validator.iter_errors(json).map(|e| describe(&e)).collect();
    assert!(
        errors.is_empty(),
        "{what} does not fit docs/schema/{file}: {}",
        errors.join("; ")
    );
}

/// One JSON document against docs/schema/`file`.
pub fn assert_valid(file: &str, json: &Value) {
    check(&validator(file), file, "the output", json);
}

/// Every line of `text` against docs/schema/`file`. Returns how many there were.
pub fn assert_lines_valid(file: &str, text: &str) -> usize {
    let validator = validator(file);
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let json: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line}", i + 1));
        check(&validator, file, &format!("line {}", i + 1), &json);
        n += 1;
    }
    n
}

/// `watch --json`'s output: the plan line, then reports (intervals, the total).
pub fn assert_watch_valid(out: &str) {
    let (plan, reports) = out.split_once('\n').expect("a plan line and reports");
    assert_lines_valid("watch-plan.json", plan);
    assert!(
        assert_lines_valid("watch-report.json", reports) > 0,
        "no report in {out}"
    );
}

/// A recording: its header, then readings and calls.
pub fn assert_recording_valid(path: &Path) {
    let text = std::fs::read_to_string(path).expect("the recording");
    let (header, lines) = text.split_once('\n').expect("a header and lines");
    assert_lines_valid("recording-header.json", header);
    assert!(
        assert_lines_valid("recording-line.json", lines) > 0,
        "no reading in {}",
        path.display()
    );
}

/// The daemon's `/events` lines: calls, and notices in place of calls a client missed.
pub fn assert_event_stream_valid(lines: &[String]) {
    let (calls, notices) = (
        validator("events-line.json"),
        validator("events-dropped.json"),
    );
    for (i, line) in lines.iter().enumerate() {
        let json: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line}", i + 1));
        let what = format!("line {}", i + 1);
        match json.get("dropped") {
            Some(_) => check(&notices, "events-dropped.json", &what, &json),
            None => check(&calls, "events-line.json", &what, &json),
        }
    }
}

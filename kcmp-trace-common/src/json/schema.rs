//! The JSON Schemas of what consumers parse, one per format, generated from the types that
//! write it: `kcmp-trace generate schemas DIR` writes them, and `docs/schema/` keeps them.
//! They describe the JSON as written (every key that is always written is required).

use schemars::{JsonSchema, Schema, generate::SchemaSettings};

use super::{
    bench::BenchReport,
    event::{DropNotice, EventRecord, EventsSummary},
    lines::{Comparison, PlanLine, ReportLine},
    recording::{Header, RecordingLine},
    snapshot::Snapshot,
    stress::StressReport,
};

/// One published format: its schema's file name and the type that writes it
/// (docs/usage.md says which output each is).
pub struct Format {
    /// The schema's file name, `NAME.json`.
    pub file: &'static str,
    schema: fn() -> Schema,
}

fn schema_of<T: JsonSchema>() -> Schema {
    SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>()
}

/// Every published format.
pub const FORMATS: [Format; 11] = [
    Format {
        file: "events-line.json",
        schema: schema_of::<EventRecord<'static>>,
    },
    Format {
        file: "events-summary.json",
        schema: schema_of::<EventsSummary>,
    },
    Format {
        file: "events-dropped.json",
        schema: schema_of::<DropNotice>,
    },
    Format {
        file: "watch-plan.json",
        schema: schema_of::<PlanLine>,
    },
    Format {
        file: "watch-report.json",
        schema: schema_of::<ReportLine<'static>>,
    },
    Format {
        file: "report-compare.json",
        schema: schema_of::<Comparison<'static>>,
    },
    Format {
        file: "snapshot.json",
        schema: schema_of::<Snapshot<'static>>,
    },
    Format {
        file: "recording-header.json",
        schema: schema_of::<Header>,
    },
    Format {
        file: "recording-line.json",
        schema: schema_of::<RecordingLine<'static>>,
    },
    Format {
        file: "stress.json",
        schema: schema_of::<StressReport>,
    },
    Format {
        file: "bench.json",
        schema: schema_of::<BenchReport>,
    },
];

impl Format {
    /// The schema as its file holds it: pretty JSON and a newline.
    pub fn text(&self) -> String {
        let mut text = serde_json::to_string_pretty(&(self.schema)())
            .unwrap_or_else(|e| unreachable!("a schema is JSON: {e}"));
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// What the schemas in docs/schema must be, and how to make them so.
    const REGENERATE: &str =
        "regenerate them from the workspace root: cargo xtask run -- generate schemas docs/schema";

    #[test]
    fn the_kept_schemas_are_the_types_schemas() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema");
        let differ: Vec<&str> = FORMATS
            .iter()
            .filter(|f| std::fs::read_to_string(dir.join(f.file)).ok() != Some(f.text()))
            .map(|f| f.file)
            .collect();
        assert!(
            differ.is_empty(),
            "docs/schema/{{{}}} missing or not what the types write: {REGENERATE}",
            differ.join(",")
        );
        let mut kept: Vec<String> = std::fs::read_dir(&dir)
            .expect("docs/schema")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        kept.sort();
        let mut published: Vec<&str> = FORMATS.iter().map(|f| f.file).collect();
        published.sort();
        assert_eq!(kept, published, "a schema no format writes in docs/schema");
    }

    #[test]
    fn always_written_keys_are_required() {
        let schema = schema_of::<crate::json::report::Quantiles>();
        let required = schema.get("required").expect("required keys");
        // Nullable, and required all the same: written as null when empty.
        assert_eq!(
            required,
            &serde_json::json!(["count", "p50", "p90", "p99", "max"])
        );
        let missing = serde_json::from_str::<crate::json::report::Quantiles>(
            r#"{"count":0,"p50":null,"p90":null,"p99":null}"#,
        );
        assert!(
            missing
                .expect_err("max is missing")
                .to_string()
                .contains("missing field `max`")
        );
    }
}

//! Checks the fake's JSON against Microsoft's own OpenAPI description of
//! Graph v1.0 (the component schemas of `shared/ref/msgraph`'s calendar
//! subset, extracted to `openapi/schemas.json` by `openapi/extract.py`):
//! types, required and nullable properties, enums and formats, through
//! `$ref` and `allOf`. Extra properties are allowed, as in the subset
//! (Graph sends `@odata.*` annotations the schemas do not list).

use chrono::{DateTime, NaiveDate, NaiveTime};
use serde_json::Value;

/// The schemas.
pub(crate) struct Schemas {
    all: Value,
}

const PREFIX: &str = "#/components/schemas/";

impl Schemas {
    /// The vendored schemas.
    pub(crate) fn load() -> Schemas {
        let doc: Value = serde_json::from_str(include_str!("../openapi/schemas.json"))
            .expect("the vendored schemas are JSON");
        Schemas {
            all: doc["schemas"].clone(),
        }
    }

    /// The violations of `v` against schema `name` (empty when it fits).
    pub(crate) fn check(&self, name: &str, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        match self.all.get(name) {
            Some(s) => self.walk(s, v, "$", &mut out, 0),
            None => out.push(format!("no schema named {name}")),
        }
        out
    }

    fn walk(&self, s: &Value, v: &Value, path: &str, out: &mut Vec<String>, depth: u32) {
        if depth > 32 {
            return;
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix(PREFIX).and_then(|n| self.all.get(n)) {
                Some(target) => self.walk(target, v, path, out, depth + 1),
                None => out.push(format!("{path}: unresolvable $ref {r}")),
            }
            return;
        }
        if v.is_null() {
            if s.get("nullable") != Some(&Value::Bool(true))
                && (s.get("type").is_some() || s.get("allOf").is_some())
            {
                out.push(format!("{path}: null where the schema allows none"));
            }
            return;
        }
        if let Some(parts) = s.get("allOf").and_then(Value::as_array) {
            for p in parts {
                self.walk(p, v, path, out, depth + 1);
            }
        }
        let ok = match s.get("type").and_then(Value::as_str) {
            None => true,
            Some("object") => v.is_object(),
            Some("array") => v.is_array(),
            Some("string") => v.is_string(),
            Some("boolean") => v.is_boolean(),
            Some("integer") => v.is_i64() || v.is_u64(),
            Some("number") => v.is_number(),
            Some(_) => true,
        };
        if !ok {
            out.push(format!("{path}: expected {}, found {}", s["type"], kind(v)));
            return;
        }
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            if !values.contains(v) {
                out.push(format!(
                    "{path}: {v} is not one of {}",
                    Value::Array(values.clone())
                ));
            }
        }
        if let (Some(f), Some(text)) = (s.get("format").and_then(Value::as_str), v.as_str()) {
            let fits = match f {
                "date-time" => DateTime::parse_from_rfc3339(text).is_ok(),
                "date" => NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
                "time" => NaiveTime::parse_from_str(text, "%H:%M:%S%.f").is_ok(),
                _ => true,
            };
            if !fits {
                out.push(format!("{path}: {text:?} is not a {f}"));
            }
        }
        if let (Some(n), Some(min)) = (v.as_f64(), s.get("minimum").and_then(Value::as_f64)) {
            if n < min {
                out.push(format!("{path}: {n} is below {min}"));
            }
        }
        if let (Some(n), Some(max)) = (v.as_f64(), s.get("maximum").and_then(Value::as_f64)) {
            if n > max {
                out.push(format!("{path}: {n} is above {max}"));
            }
        }
        if let Some(obj) = v.as_object() {
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(k) = r.as_str() {
                    if !obj.contains_key(k) {
                        out.push(format!("{path}: required property {k} is missing"));
                    }
                }
            }
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, x) in obj {
                    if let Some(ps) = props.get(k) {
                        self.walk(ps, x, &format!("{path}.{k}"), out, depth + 1);
                    }
                }
            }
        }
        if let (Some(items), Some(list)) = (s.get("items"), v.as_array()) {
            for (i, x) in list.iter().enumerate() {
                self.walk(items, x, &format!("{path}[{i}]"), out, depth + 1);
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_checked_through_refs_enums_nullability_and_formats() {
        let s = Schemas::load();
        let good = json!({"id": "x", "type": "occurrence", "showAs": "busy", "seriesMasterId": null,
            "start": {"dateTime": "2026-01-01T10:00:00.0000000", "timeZone": "UTC"},
            "createdDateTime": "2026-01-01T10:00:00.123Z"});
        assert_eq!(
            s.check("microsoft.graph.event", &good),
            Vec::<String>::new()
        );
        let bad =
            json!({"id": 5, "type": "weekly", "recurrence": null, "createdDateTime": "yesterday"});
        let v = s.check("microsoft.graph.event", &bad);
        assert_eq!(v.len(), 4, "{v:#?}");
        let err = json!({"error": {"code": "ErrorItemNotFound"}});
        assert_eq!(
            s.check("microsoft.graph.ODataErrors.ODataError", &err)
                .len(),
            1,
            "message is required"
        );
    }
}

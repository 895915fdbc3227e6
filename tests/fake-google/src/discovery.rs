//! Google's discovery document for Calendar v3, read as data: the schemas
//! that response bodies must match, and per method its scopes, parameters
//! and request/response schema names. The document is not a JSON Schema, so
//! this module walks it by hand: `type`, `format`, `enum`, `properties`
//! (no unknown properties), `additionalProperties` maps, `items` and `$ref`.
//!
//! The bundled copy is `discovery/calendar-v3.json` (revision 20260519,
//! identical to `shared/ref/google-calendar-v3-discovery.json`).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{Map, Value};

/// The bundled discovery document's text.
const CALENDAR_V3: &str = include_str!("../discovery/calendar-v3.json");

/// A discovery document that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The text is not JSON.
    #[error("discovery document is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON lacks a part the validator needs.
    #[error("discovery document has no {0}")]
    Missing(&'static str),
}

/// One method of the API, as the discovery document describes it.
#[derive(Debug, Clone)]
pub struct Method {
    /// Method id, e.g. `calendar.events.list`.
    pub id: String,
    /// HTTP verb, e.g. `GET`.
    pub http_method: String,
    /// Path template relative to the service path, e.g. `calendars/{calendarId}/events`.
    pub path: String,
    /// OAuth scopes of which the caller needs at least one (full URLs).
    pub scopes: Vec<String>,
    /// Schema name of the response body, when the method has one.
    pub response: Option<String>,
    /// Schema name of the request body, when the method takes one.
    pub request: Option<String>,
    /// Parameter descriptions keyed by name (path and query).
    pub parameters: Map<String, Value>,
}

/// One way a JSON value differs from the schema it should match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Violation {
    /// Where in the value, e.g. `$.items[0].start.dateTime`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// A query parameter whose value the method does not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterError {
    /// The parameter's name.
    pub name: String,
    /// Google-style message for the error body.
    pub message: String,
}

/// A parsed discovery document.
#[derive(Debug)]
pub struct Discovery {
    schemas: Map<String, Value>,
    global_parameters: Map<String, Value>,
    methods: HashMap<String, Method>,
    scopes: Vec<String>,
}

impl Discovery {
    /// The bundled Calendar v3 document, parsed once.
    pub fn calendar_v3() -> &'static Discovery {
        static DOC: OnceLock<Discovery> = OnceLock::new();
        DOC.get_or_init(|| {
            Discovery::from_text(CALENDAR_V3).expect("the bundled discovery document parses")
        })
    }

    /// Parses a discovery document from its text.
    pub fn from_text(text: &str) -> Result<Self, DiscoveryError> {
        Self::from_json(&serde_json::from_str(text)?)
    }

    /// Reads a discovery document from parsed JSON.
    pub fn from_json(doc: &Value) -> Result<Self, DiscoveryError> {
        let schemas = doc
            .get("schemas")
            .and_then(Value::as_object)
            .ok_or(DiscoveryError::Missing("schemas"))?
            .clone();
        let global_parameters = doc
            .get("parameters")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut methods = HashMap::new();
        if let Some(resources) = doc.get("resources").and_then(Value::as_object) {
            collect_methods(resources, &mut methods);
        }
        let scopes = doc
            .pointer("/auth/oauth2/scopes")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        Ok(Self {
            schemas,
            global_parameters,
            methods,
            scopes,
        })
    }

    /// The method with this id (`calendar.events.list`), if the document has it.
    pub fn method(&self, id: &str) -> Option<&Method> {
        self.methods.get(id)
    }

    /// Every OAuth scope the API defines (full URLs).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// Whether the document defines a schema of this name.
    pub fn has_schema(&self, name: &str) -> bool {
        self.schemas.contains_key(name)
    }

    /// Checks `value` against the named schema; an empty list means it matches.
    pub fn validate(&self, schema: &str, value: &Value) -> Vec<Violation> {
        let mut out = Vec::new();
        match self.schemas.get(schema) {
            Some(s) => self.check(s, value, "$", &mut out),
            None => out.push(Violation {
                path: "$".into(),
                message: format!("no schema named {schema}"),
            }),
        }
        out
    }

    /// Checks query parameters against a method's parameter list (and the
    /// API-wide ones): booleans, integers with their bounds, enums, date-time
    /// format. Unknown parameters pass, as they do at Google.
    pub fn check_query(
        &self,
        method: &str,
        query: &[(String, String)],
    ) -> Result<(), ParameterError> {
        let Some(m) = self.methods.get(method) else {
            return Ok(());
        };
        for (name, raw) in query {
            let Some(spec) = m
                .parameters
                .get(name)
                .or_else(|| self.global_parameters.get(name))
            else {
                continue;
            };
            if spec.get("location").and_then(Value::as_str) == Some("path") {
                continue;
            }
            check_parameter(name, spec, raw)?;
        }
        Ok(())
    }

    fn check(&self, schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
        let mut push = |message: String| {
            out.push(Violation {
                path: path.to_string(),
                message,
            })
        };
        if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
            match self.schemas.get(name) {
                Some(target) => self.check(target, value, path, out),
                None => push(format!("reference to unknown schema {name}")),
            }
            return;
        }
        let ty = schema.get("type").and_then(Value::as_str);
        if value.is_null() && ty != Some("any") {
            push("null where the schema expects a value (Google omits absent fields)".into());
            return;
        }
        match ty {
            Some("string") => {
                let Some(s) = value.as_str() else {
                    push(format!("expected a string, found {}", kind_of(value)));
                    return;
                };
                if let Some(format) = schema.get("format").and_then(Value::as_str) {
                    if let Err(m) = check_string_format(format, s) {
                        push(m);
                    }
                }
                check_enum(schema, s, &mut push);
            }
            Some("integer") => {
                let Some(n) = value.as_i64().or_else(|| value.as_u64().map(|u| u as i64)) else {
                    push(format!("expected an integer, found {}", kind_of(value)));
                    return;
                };
                match schema.get("format").and_then(Value::as_str) {
                    Some("int32") if i32::try_from(n).is_err() => {
                        push(format!("{n} is outside int32"))
                    }
                    Some("uint32") if u32::try_from(n).is_err() => {
                        push(format!("{n} is outside uint32"))
                    }
                    _ => {}
                }
            }
            Some("number") if !value.is_number() => {
                push(format!("expected a number, found {}", kind_of(value)));
            }
            Some("boolean") if !value.is_boolean() => {
                push(format!("expected a boolean, found {}", kind_of(value)));
            }
            Some("number" | "boolean") => {}
            Some("array") => {
                let Some(items) = value.as_array() else {
                    push(format!("expected an array, found {}", kind_of(value)));
                    return;
                };
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &format!("{path}[{i}]"), out);
                    }
                }
            }
            Some("object") => {
                let Some(obj) = value.as_object() else {
                    push(format!("expected an object, found {}", kind_of(value)));
                    return;
                };
                let props = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties");
                if props.is_none() && additional.is_none() {
                    return;
                }
                for (key, v) in obj {
                    let child = format!("{path}.{key}");
                    if let Some(p) = props.and_then(|p| p.get(key)) {
                        self.check(p, v, &child, out);
                    } else if let Some(a) = additional {
                        self.check(a, v, &child, out);
                    } else {
                        out.push(Violation {
                            path: child,
                            message: "property not in the schema".into(),
                        });
                    }
                }
            }
            Some("any") => {}
            Some(other) => push(format!("schema has unknown type {other}")),
            None => {}
        }
    }
}

fn collect_methods(resources: &Map<String, Value>, out: &mut HashMap<String, Method>) {
    for resource in resources.values() {
        if let Some(methods) = resource.get("methods").and_then(Value::as_object) {
            for m in methods.values() {
                let Some(id) = m.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let string = |k: &str| {
                    m.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                let reference = |k: &str| {
                    m.get(k)
                        .and_then(|r| r.get("$ref"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                out.insert(
                    id.to_string(),
                    Method {
                        id: id.to_string(),
                        http_method: string("httpMethod"),
                        path: string("path"),
                        scopes: m
                            .get("scopes")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default(),
                        response: reference("response"),
                        request: reference("request"),
                        parameters: m
                            .get("parameters")
                            .and_then(Value::as_object)
                            .cloned()
                            .unwrap_or_default(),
                    },
                );
            }
        }
        if let Some(nested) = resource.get("resources").and_then(Value::as_object) {
            collect_methods(nested, out);
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_enum(schema: &Value, s: &str, push: &mut impl FnMut(String)) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.iter().any(|a| a.as_str() == Some(s)) {
            push(format!("{s:?} is not one of the enum values"));
        }
    }
}

fn check_string_format(format: &str, s: &str) -> Result<(), String> {
    let ok = match format {
        "int64" => s.parse::<i64>().is_ok(),
        "uint64" => s.parse::<u64>().is_ok(),
        "int32" => s.parse::<i32>().is_ok(),
        "uint32" => s.parse::<u32>().is_ok(),
        "date-time" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() && s.len() == 10,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} is not a valid {format}"))
    }
}

fn check_parameter(name: &str, spec: &Value, raw: &str) -> Result<(), ParameterError> {
    let err = |message: String| ParameterError {
        name: name.to_string(),
        message,
    };
    match spec.get("type").and_then(Value::as_str) {
        Some("boolean") => {
            if raw != "true" && raw != "false" {
                return Err(err(format!("Invalid boolean value: '{raw}'.")));
            }
        }
        Some("integer") => {
            let n: i64 = raw
                .parse()
                .map_err(|_| err(format!("Invalid integer value: '{raw}'.")))?;
            let bound = |k: &str| {
                spec.get(k)
                    .and_then(Value::as_str)
                    .and_then(|b| b.parse::<i64>().ok())
            };
            if let Some(min) = bound("minimum") {
                if n < min {
                    return Err(err(format!(
                        "Invalid value '{raw}'. Values must be within the range: [{min}, ...]"
                    )));
                }
            }
            if let Some(max) = bound("maximum") {
                if n > max {
                    return Err(err(format!(
                        "Invalid value '{raw}'. Values must be within the range: [..., {max}]"
                    )));
                }
            }
        }
        _ => {
            if let Some(allowed) = spec.get("enum").and_then(Value::as_array) {
                if !allowed.iter().any(|a| a.as_str() == Some(raw)) {
                    let alternatives: Vec<&str> =
                        allowed.iter().filter_map(Value::as_str).collect();
                    return Err(err(format!(
                        "Invalid value '{raw}'. Values must match the following regular expression: '({})'",
                        alternatives.join("|")
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> &'static Discovery {
        Discovery::calendar_v3()
    }

    #[test]
    fn bundled_document_has_the_methods_the_fake_serves() {
        for id in [
            "calendar.calendarList.list",
            "calendar.events.list",
            "calendar.events.get",
            "calendar.events.insert",
            "calendar.events.patch",
            "calendar.events.update",
            "calendar.events.delete",
            "calendar.events.watch",
            "calendar.events.instances",
            "calendar.channels.stop",
            "calendar.freebusy.query",
        ] {
            assert!(doc().method(id).is_some(), "{id}");
        }
        let list = doc().method("calendar.events.list").unwrap();
        assert_eq!(list.response.as_deref(), Some("Events"));
        assert!(list
            .scopes
            .contains(&"https://www.googleapis.com/auth/calendar.readonly".to_string()));
    }

    #[test]
    fn a_well_formed_event_validates() {
        let event = json!({
            "kind": "calendar#event", "id": "abc12", "etag": "\"1\"", "status": "confirmed",
            "start": {"dateTime": "2024-01-15T10:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"date": "2024-01-16"},
            "attendees": [{"email": "a@example.com", "responseStatus": "accepted"}],
            "extendedProperties": {"private": {"k": "v"}},
            "reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 10}]},
            "sequence": 0,
        });
        assert_eq!(doc().validate("Event", &event), vec![]);
    }

    #[test]
    fn a_wrong_type_is_caught() {
        let v = doc().validate("Event", &json!({"sequence": "3"}));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].path, "$.sequence");
        let v = doc().validate("Channel", &json!({"expiration": 1700000000000u64}));
        assert_eq!(v[0].path, "$.expiration", "int64 is a string in discovery");
        let v = doc().validate(
            "Events",
            &json!({"items": [{"start": {"dateTime": "2024-01-15 10:00"}}]}),
        );
        assert_eq!(v[0].path, "$.items[0].start.dateTime");
        let v = doc().validate(
            "Event",
            &json!({"extendedProperties": {"private": {"k": 1}}}),
        );
        assert_eq!(
            v[0].path, "$.extendedProperties.private.k",
            "additionalProperties are typed"
        );
        let v = doc().validate("Event", &json!({"summary": null}));
        assert_eq!(v.len(), 1, "null is not a value Google sends");
    }

    #[test]
    fn an_unknown_field_is_caught_at_any_depth() {
        let v = doc().validate("Event", &json!({"summery": "x"}));
        assert_eq!(
            v,
            vec![Violation {
                path: "$.summery".into(),
                message: "property not in the schema".into()
            }]
        );
        let v = doc().validate(
            "FreeBusyResponse",
            &json!({"calendars": {"a@b": {"busy": [{"start": "2024-01-01T00:00:00Z", "stop": "x"}]}}}),
        );
        assert_eq!(v[0].path, "$.calendars.a@b.busy[0].stop");
    }

    #[test]
    fn a_bad_enum_value_is_caught() {
        // Calendar v3's schemas list no enums (only parameters do), so use a
        // small document of the same form.
        let d = Discovery::from_json(&json!({
            "schemas": {"Thing": {"id": "Thing", "type": "object", "properties": {
                "color": {"type": "string", "enum": ["red", "blue"]},
                "child": {"$ref": "Thing"},
            }}}
        }))
        .unwrap();
        assert_eq!(
            d.validate(
                "Thing",
                &json!({"color": "red", "child": {"color": "blue"}})
            ),
            vec![]
        );
        let v = d.validate("Thing", &json!({"child": {"color": "green"}}));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].path, "$.child.color");
    }

    #[test]
    fn parameters_are_checked_against_the_method() {
        let q = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(doc()
            .check_query("calendar.events.list", &q("orderBy", "startTime"))
            .is_ok());
        assert_eq!(
            doc()
                .check_query("calendar.events.list", &q("orderBy", "start"))
                .unwrap_err()
                .name,
            "orderBy"
        );
        assert!(doc()
            .check_query("calendar.events.list", &q("singleEvents", "yes"))
            .is_err());
        assert!(doc()
            .check_query("calendar.events.list", &q("maxResults", "0"))
            .is_err());
        assert!(doc()
            .check_query("calendar.events.list", &q("eventTypes", "meeting"))
            .is_err());
        assert!(doc()
            .check_query("calendar.events.list", &q("whatever", "x"))
            .is_ok());
    }
}

//! Checks JSON against `api/schema.json`, the shapes the JS gateway is promised.
//! Only the keywords that file uses are understood (`$ref`, `allOf`, `type`, `enum`,
//! `minimum`, `properties`, `required`, `items`); annotations are ignored. Stricter
//! than JSON Schema in one way: a field the schema does not document is an error, so
//! the document cannot fall behind the API.

use std::collections::BTreeSet;

use serde_json::Value;

pub struct Schema {
    root: Value,
}

impl Schema {
    pub fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/api/schema.json");
        let text = std::fs::read_to_string(path).expect("api/schema.json");
        Self {
            root: serde_json::from_str(&text).expect("api/schema.json is JSON"),
        }
    }

    /// Panics with every way `v` differs from `$defs/<def>`.
    pub fn assert(&self, def: &str, v: &Value) {
        let errors = self.check(def, v);
        assert!(errors.is_empty(), "{def}: {errors:#?}\n{v:#}");
    }

    pub fn check(&self, def: &str, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(self.def(def), v, def, true, &mut out);
        out
    }

    /// `v` against a schema fragment (one taken from `root_def`).
    pub fn check_with(&self, s: &Value, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(s, v, "value", true, &mut out);
        out
    }

    pub fn root_def(&self, name: &str) -> &Value {
        self.def(name)
    }

    fn def(&self, name: &str) -> &Value {
        let s = &self.root["$defs"][name];
        assert!(s.is_object(), "no $defs/{name} in api/schema.json");
        s
    }

    fn resolve<'a>(&'a self, s: &'a Value) -> Option<&'a Value> {
        let r = s.get("$ref")?.as_str()?;
        Some(self.def(r.strip_prefix("#/$defs/").expect("local $ref")))
    }

    /// Every property name `s` documents, through `$ref` and `allOf`.
    fn documented(&self, s: &Value, out: &mut BTreeSet<String>) {
        if let Some(p) = s.get("properties").and_then(Value::as_object) {
            out.extend(p.keys().cloned());
        }
        if let Some(t) = self.resolve(s) {
            self.documented(t, out);
        }
        for sub in s
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.documented(sub, out);
        }
    }

    fn walk(&self, s: &Value, v: &Value, at: &str, strict: bool, out: &mut Vec<String>) {
        if let Some(t) = self.resolve(s) {
            self.walk(t, v, at, false, out);
        }
        for sub in s
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.walk(sub, v, at, false, out);
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                _ => panic!("{at}: bad type keyword"),
            };
            if !types.iter().any(|t| is_type(v, t)) {
                out.push(format!("{at}: {v} is not {types:?}"));
            }
        }
        if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
            if !allowed.contains(v) {
                out.push(format!("{at}: {v} is not one of {allowed:?}"));
            }
        }
        if let (Some(min), Some(x)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
            if x < min {
                out.push(format!("{at}: {x} < minimum {min}"));
            }
        }
        if let Some(obj) = v.as_object() {
            for name in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = name.as_str().expect("required names");
                if !obj.contains_key(name) {
                    out.push(format!("{at}: required field {name} missing"));
                }
            }
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    if let Some(field) = obj.get(name) {
                        self.walk(sub, field, &format!("{at}.{name}"), true, out);
                    }
                }
            }
            if strict {
                let mut known = BTreeSet::new();
                self.documented(s, &mut known);
                if !known.is_empty() {
                    for name in obj.keys().filter(|k| !known.contains(*k)) {
                        out.push(format!("{at}: field {name} is not documented"));
                    }
                }
            }
        }
        if let (Some(items), Some(list)) = (s.get("items"), v.as_array()) {
            for (i, item) in list.iter().enumerate() {
                self.walk(items, item, &format!("{at}[{i}]"), true, out);
            }
        }
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown JSON Schema type {other}"),
    }
}

//! `{{ jq }}` templates over a run's trigger data, as Port renders an action's invocation method: a string
//! that is one template whole becomes the template's value (an object, a number...); a string with text
//! around templates has each replaced by its value as text (strings as they are, anything else as JSON);
//! objects and arrays are rendered member by member. Each expression is checked and bounded as calculations
//! are ([`crate::derived::jq`]).

use serde_json::Value;

use crate::derived::jq;

/// The largest rendered value, serialised.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;

/// Renders every template in `v` over `data`; the error names the expression that failed.
pub fn render(v: &Value, data: &Value) -> Result<Value, String> {
    let out = render_value(v, data)?;
    let size = serde_json::to_vec(&out).map_or(usize::MAX, |b| b.len());
    if size > MAX_RENDERED_BYTES {
        return Err(format!("the rendered templates are {size} bytes; the limit is {MAX_RENDERED_BYTES}"));
    }
    Ok(out)
}

fn render_value(v: &Value, data: &Value) -> Result<Value, String> {
    match v {
        Value::String(s) => render_str(s, data),
        Value::Array(items) => items.iter().map(|i| render_value(i, data)).collect::<Result<_, _>>().map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| render_value(v, data).map(|v| (k.clone(), v)))
            .collect::<Result<_, _>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

fn eval(code: &str, data: &Value) -> Result<Value, String> {
    jq::compile(code).and_then(|p| p.run(data)).map_err(|e| format!("`{{{{ {code} }}}}`: {e}"))
}

/// A string's templates rendered.
pub fn render_str(s: &str, data: &Value) -> Result<Value, String> {
    let trimmed = s.trim();
    if let Some(inner) = trimmed.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
        if !inner.contains("{{") && !inner.contains("}}") {
            return eval(inner.trim(), data);
        }
    }
    if !s.contains("{{") {
        return Ok(Value::String(s.to_string()));
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err("a `{{` without `}}`".into());
        };
        match eval(after[..close].trim(), data)? {
            Value::String(text) => out.push_str(&text),
            Value::Null => {}
            other => out.push_str(&other.to_string()),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_templates_keep_their_type_and_mixed_ones_make_text() {
        let data = json!({"inputs": {"name": "pay", "replicas": 3, "tags": ["a"]}, "run": {"id": "r_1"}});
        let body = json!({"name": "{{ .inputs.name }}", "n": "{{.inputs.replicas}}", "tags": "{{ .inputs.tags }}",
            "text": "svc {{ .inputs.name }} x{{ .inputs.replicas }} {{ .missing }}!", "plain": 4,
            "list": ["{{ .run.id }}"]});
        assert_eq!(
            render(&body, &data),
            Ok(json!({"name": "pay", "n": 3, "tags": ["a"], "text": "svc pay x3 !", "plain": 4, "list": ["r_1"]}))
        );
        assert!(render(&json!("{{ .a | range(10) }}"), &data).is_err(), "checked like calculations");
        assert!(render(&json!("x {{ .a"), &data).is_err());
        let err = render(&json!("{{ error(\"boom\") }}"), &data).expect_err("fails");
        assert!(err.contains("boom") || err.contains("error"), "{err}");
    }

    proptest::proptest! {
        /// Any string (braces, jq fragments, unicode) renders or is refused with a message; never a panic,
        /// and a string without `{{` is itself.
        #[test]
        fn any_template_renders_or_is_refused(s in "([a-z. |\"{}()\\[\\]0-9]|\\{\\{|\\}\\}|é){0,40}") {
            let data = json!({"inputs": {"a": 1, "b": "x"}, "run": {"id": "r_1"}});
            match render(&json!(s), &data) {
                Ok(v) => if !s.contains("{{") { proptest::prop_assert_eq!(v, json!(s)); },
                Err(e) => proptest::prop_assert!(!e.is_empty()),
            }
        }
    }
}

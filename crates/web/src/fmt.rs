//! Turning catalog values into safe HTML: every string that reaches a page unescaped comes from here, and
//! everything user-given in it goes through [`esc`].
//!
//! Values render by their property's type and format: URLs as links (http/https only), markdown rendered with
//! raw HTML shown as text, date-times as "3 hours ago" with the exact time on hover, enum values as coloured
//! badges, booleans as yes/no, arrays as lists, objects and YAML as code blocks.

use berth_model::Timestamp;
use serde_json::Value;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "3 hours ago" / "in 2 days" for `t` seen at `now`.
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let secs = (now.millis() - t.millis()) / 1000;
    let (n, future) = (secs.unsigned_abs(), secs < 0);
    let (v, unit) = match n {
        0..=44 => return "just now".into(),
        45..=3599 => (n.div_ceil(60).max(1), "minute"),
        3600..=86_399 => (n / 3600, "hour"),
        86_400..=2_591_999 => (n / 86_400, "day"),
        2_592_000..=31_535_999 => (n / 2_592_000, "month"),
        _ => (n / 31_536_000, "year"),
    };
    let plural = if v == 1 { "" } else { "s" };
    if future { format!("in {v} {unit}{plural}") } else { format!("{v} {unit}{plural} ago") }
}

/// A `<time>` element: relative text, the exact UTC time on hover.
pub fn time_html(t: Timestamp, now: Timestamp) -> String {
    let exact = t.to_rfc3339();
    format!(r#"<time datetime="{0}" title="{0}">{1}</time>"#, esc(&exact), esc(&relative(t, now)))
}

/// Markdown to HTML; raw HTML in the source is shown as text, and only http(s)/mailto/relative links survive.
pub fn markdown(src: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, Tag};
    let parser = Parser::new_ext(src, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).map(|ev| match ev {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        Event::Start(Tag::Link { link_type, dest_url, title, id }) if !safe_url(&dest_url) => {
            Event::Start(Tag::Link { link_type, dest_url: "#".into(), title, id })
        }
        Event::Start(Tag::Image { link_type, dest_url, title, id }) if !safe_url(&dest_url) => {
            Event::Start(Tag::Image { link_type, dest_url: "#".into(), title, id })
        }
        other => other,
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, parser);
    out
}

fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("mailto:")
        || lower.starts_with('/')
        || lower.starts_with('#')
}

/// A colour class (0-7) for an enum value: explicit `enumColors` win, else a stable hash of the value.
fn badge_class(def: &Value, value: &str) -> String {
    if let Some(colour) = def.get("enumColors").and_then(|c| c.get(value)).and_then(Value::as_str) {
        let known = ["blue", "green", "red", "orange", "yellow", "purple", "pink", "gray", "lightGray", "darkGray"];
        if known.contains(&colour) {
            return format!("badge badge-{}", colour.to_ascii_lowercase());
        }
    }
    let h = value.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    format!("badge badge-{}", h % 8)
}

/// A property value as HTML, by its definition (`def`: the property's JSON schema).
pub fn value_html(def: Option<&Value>, v: &Value, now: Timestamp) -> String {
    let format = def.and_then(|d| d.get("format")).and_then(Value::as_str).unwrap_or("");
    let is_enum = def.is_some_and(|d| d.get("enum").is_some());
    match v {
        Value::Null => r#"<span class="muted">—</span>"#.into(),
        Value::Bool(b) => {
            if *b {
                r#"<span class="bool yes">✓ yes</span>"#.into()
            } else {
                r#"<span class="bool no">✗ no</span>"#.into()
            }
        }
        Value::Number(n) => {
            if is_enum {
                format!(r#"<span class="{}">{n}</span>"#, badge_class(def.unwrap_or(&Value::Null), &n.to_string()))
            } else {
                n.to_string()
            }
        }
        Value::String(s) => match format {
            _ if is_enum => {
                format!(r#"<span class="{}">{}</span>"#, badge_class(def.unwrap_or(&Value::Null), s), esc(s))
            }
            "url" if safe_url(s) => {
                format!(r#"<a href="{0}" rel="noopener noreferrer" target="_blank">{0}</a>"#, esc(s))
            }
            "email" | "idn-email" => format!(r#"<a href="mailto:{0}">{0}</a>"#, esc(s)),
            "date-time" => match Timestamp::parse(s) {
                Some(t) => time_html(t, now),
                None => esc(s),
            },
            "markdown" => format!(r#"<div class="markdown">{}</div>"#, markdown(s)),
            "yaml" => format!(r#"<pre class="code">{}</pre>"#, esc(s)),
            _ => esc(s),
        },
        Value::Array(items) => {
            let item_def = def.and_then(|d| d.get("items"));
            let lis: Vec<String> = items.iter().map(|i| format!("<li>{}</li>", value_html(item_def, i, now))).collect();
            format!(r#"<ul class="list">{}</ul>"#, lis.join(""))
        }
        Value::Object(_) => {
            let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
            format!(r#"<pre class="code">{}</pre>"#, esc(&pretty))
        }
    }
}

/// An icon to show as text: emoji and other symbols only (Port-style icon names such as `Microservice` have no
/// glyph here, so they show nothing rather than a word).
pub fn glyph(icon: Option<&str>) -> String {
    match icon {
        Some(i) if !i.is_empty() && i.chars().count() <= 8 && !i.is_ascii() => i.to_string(),
        _ => String::new(),
    }
}

/// A value for a table cell: like [`value_html`], but long text formats (markdown, YAML, objects) shrink to
/// one line of plain text.
pub fn cell_html(def: Option<&Value>, v: &Value, now: Timestamp) -> String {
    let format = def.and_then(|d| d.get("format")).and_then(Value::as_str).unwrap_or("");
    let long = matches!(format, "markdown" | "yaml") || v.is_object();
    if !long {
        return value_html(def, v, now);
    }
    let text = short(v).split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = text.chars().take(80).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    format!(r#"<span class="muted">{}{more}</span>"#, esc(&cut))
}

/// A short plain-text form of a value, for table cells and diffs.
pub fn short(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escaping_and_markdown_are_safe() {
        assert_eq!(esc(r#"<script>"x"&'y'</script>"#), "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;");
        let md = markdown("# Hi\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) **b** <b>raw</b>");
        assert!(!md.contains("<script>"), "{md}");
        assert!(!md.contains("javascript:"), "{md}");
        assert!(md.contains("<strong>b</strong>") && md.contains("<h1>Hi</h1>"), "{md}");
    }

    #[test]
    fn values_render_by_format() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let url = json!({"type": "string", "format": "url"});
        assert!(value_html(Some(&url), &json!("https://x.io"), now).contains(r#"href="https://x.io""#));
        assert!(!value_html(Some(&url), &json!("javascript:alert(1)"), now).contains("href"));
        let dt = json!({"type": "string", "format": "date-time"});
        let t = Timestamp::from_millis(now.millis() - 3 * 3600 * 1000).to_rfc3339();
        assert!(value_html(Some(&dt), &json!(t), now).contains("3 hours ago"));
        let en = json!({"type": "string", "enum": ["a"], "enumColors": {"a": "green"}});
        assert!(value_html(Some(&en), &json!("a"), now).contains("badge-green"));
        assert!(value_html(None, &json!(true), now).contains("yes"));
        assert!(value_html(None, &json!({"k": "<b>"}), now).contains("&lt;b&gt;"));
        assert_eq!(relative(Timestamp::from_millis(now.millis() + 2 * 86_400_000), now), "in 2 days");
    }
}

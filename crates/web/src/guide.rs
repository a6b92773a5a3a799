//! `/guide`: the guide in `docs/src` (an mdBook), inside the binary and served by every Berth, for anyone
//! (it holds nothing of the catalog). `/guide` is its table of contents (the book's `SUMMARY.md`),
//! `/guide/{page}` a page, its Markdown rendered with links between pages (`concepts.md#access`) turned into
//! `/guide/concepts#access`. Raw HTML in the pages is shown as text, as everywhere in the UI.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::page::{UiError, UiResult};

/// The pages, in the book's order: `(slug, title, markdown)`.
pub const PAGES: [(&str, &str, &str); 9] = [
    ("introduction", "Introduction", include_str!("../../../docs/src/introduction.md")),
    ("quick-start", "Quick start", include_str!("../../../docs/src/quick-start.md")),
    ("concepts", "Concepts", include_str!("../../../docs/src/concepts.md")),
    ("port-clients", "Port's clients against Berth", include_str!("../../../docs/src/port-clients.md")),
    ("migrating", "Moving from Backstage or Port", include_str!("../../../docs/src/migrating.md")),
    ("operations", "Operations", include_str!("../../../docs/src/operations.md")),
    ("single-sign-on", "Single sign-on", include_str!("../../../docs/src/single-sign-on.md")),
    ("configuration", "Configuration reference", include_str!("../../../docs/src/configuration.md")),
    ("api", "API reference", include_str!("../../../docs/src/api.md")),
];

/// The book's table of contents, as the guide's first page links it.
pub const SUMMARY: &str = include_str!("../../../docs/src/SUMMARY.md");

/// A link between pages (`x.md`, `x.md#part`) as the served guide writes it.
fn served(dest: &str) -> Option<String> {
    let (file, anchor) = dest.split_once('#').map_or((dest, None), |(f, a)| (f, Some(a)));
    let slug = file.strip_suffix(".md")?;
    if slug.contains(['/', ':']) {
        return None;
    }
    Some(match anchor {
        Some(a) => format!("/guide/{slug}#{a}"),
        None => format!("/guide/{slug}"),
    })
}

/// A page's Markdown as HTML: links between pages rewritten, raw HTML as text, only safe links kept.
pub fn render(markdown: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, Tag};
    let parser = Parser::new_ext(markdown, Options::ENABLE_TABLES).map(|ev| match ev {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        Event::Start(Tag::Link { link_type, dest_url, title, id }) => {
            let dest = served(&dest_url).map(Into::into).unwrap_or(dest_url);
            let safe = ["http://", "https://", "mailto:", "/", "#"].iter().any(|p| dest.starts_with(p));
            Event::Start(Tag::Link { link_type, dest_url: if safe { dest } else { "#".into() }, title, id })
        }
        other => other,
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, parser);
    out
}

fn page(title: &str, body: &str) -> Response {
    let nav: String = PAGES
        .iter()
        .map(|(slug, t, _)| format!(r#"<li><a href="/guide/{slug}">{}</a></li>"#, crate::fmt::esc(t)))
        .collect();
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Berth guide</title><link rel="stylesheet" href="{css}"></head>
<body><div class="guide"><nav class="side" aria-label="Guide"><a href="/guide">Berth guide</a><ul>{nav}</ul><p><a href="/">Back to the portal</a></p></nav>
<main id="main" class="guide-page">{body}</main></div></body></html>"#,
        title = crate::fmt::esc(title),
        css = crate::assets::CSS_PATH,
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// `/guide`: the table of contents.
pub async fn index() -> Response {
    page("Contents", &render(SUMMARY))
}

/// `/guide/{page}`.
pub async fn show(Path(slug): Path<String>) -> UiResult<Response> {
    let (_, title, markdown) = PAGES
        .iter()
        .find(|(s, _, _)| *s == slug)
        .ok_or_else(|| UiError::not_found(format!("the guide has no page {slug:?}")))?;
    Ok(page(title, &render(markdown)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_between_pages_are_served_ones_and_every_page_is_in_the_summary() {
        assert_eq!(served("concepts.md#access").as_deref(), Some("/guide/concepts#access"));
        assert_eq!(served("https://example.com/x.md"), None);
        let html = render("[a](concepts.md) [b](https://port.io) [c](javascript:alert(1)) <script>x</script>");
        assert!(html.contains(r#"href="/guide/concepts""#) && html.contains(r#"href="https://port.io""#), "{html}");
        assert!(html.contains(r##"href="#""##) && html.contains("&lt;script&gt;"), "{html}");
        for (slug, _, markdown) in PAGES {
            assert!(SUMMARY.contains(&format!("({slug}.md)")), "{slug} is in SUMMARY.md");
            // Every link to another page names one that exists.
            for (at, _) in markdown.match_indices(".md") {
                let start = markdown[..at].rfind(['(', '[', ' ', '`']).map_or(0, |i| i + 1);
                let target = &markdown[start..at];
                if !target.is_empty() && !target.contains(['/', ':', '*']) && markdown[..start].ends_with('(') {
                    assert!(PAGES.iter().any(|(s, _, _)| *s == target), "{slug} links to {target}.md");
                }
            }
        }
    }
}

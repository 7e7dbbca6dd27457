//! What every HTML page of the emulator shares (the dashboard and the products' payer pages): the page layout and
//! its stylesheet (built in: no CDN, no external fonts, works offline), content negotiation, time and money
//! formatting, and the same-origin guard for forms that change state.
//!
//! Pages are [`maud`] templates: compile-time HTML that escapes every interpolated value, so merchant input
//! (descriptions, references, `Vipps-System-*` values, URLs, webhook bodies) stays text.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The stylesheet of every page (system fonts only).
const CSS: &str = r#"
:root { --fg:#1b1b1f; --muted:#5b5b66; --line:#d9d9e0; --bg:#f6f6f9; --card:#fff; --brand:#ff5b24; --ok:#1a7f37; --bad:#b42318; --info:#1f5fbf; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header.top { background:#1b1b1f; color:#fff; padding:.6rem 1rem; display:flex; gap:1.2rem; align-items:center; flex-wrap:wrap; }
header.top a { color:#fff; text-decoration:none; }
header.top a[aria-current="page"] { border-bottom:2px solid var(--brand); }
header.top .brand { font-weight:700; color:var(--brand); }
main { padding:1rem; max-width:1200px; margin:0 auto; }
h1 { font-size:1.4rem; margin:.2rem 0 1rem; } h2 { font-size:1.1rem; margin:1.4rem 0 .6rem; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:1rem; margin-bottom:1rem; }
.grid { display:grid; grid-template-columns:repeat(auto-fit,minmax(260px,1fr)); gap:1rem; }
table { border-collapse:collapse; width:100%; background:var(--card); }
th, td { text-align:left; padding:.35rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:.85rem; color:var(--muted); font-weight:600; }
td code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:.85rem; word-break:break-all; }
pre { background:#f0f0f4; padding:.5rem; overflow:auto; font-size:.8rem; white-space:pre-wrap; word-break:break-all; }
form.inline { display:inline; }
form.filters { display:flex; gap:.6rem; flex-wrap:wrap; align-items:flex-end; margin-bottom:1rem; }
label { display:flex; flex-direction:column; font-size:.85rem; color:var(--muted); gap:.2rem; }
input, select { font:inherit; padding:.3rem .4rem; border:1px solid var(--line); border-radius:4px; }
button, .button { font:inherit; padding:.35rem .8rem; border-radius:6px; border:1px solid var(--line); background:#fff; cursor:pointer; text-decoration:none; color:var(--fg); display:inline-block; }
button.primary, .button.primary { background:var(--brand); color:#fff; border-color:var(--brand); }
button.danger { color:var(--bad); }
button:focus-visible, a:focus-visible, input:focus-visible, select:focus-visible { outline:3px solid var(--info); outline-offset:2px; }
.state { font-weight:600; font-size:.8rem; padding:.1rem .4rem; border-radius:4px; background:#eee; }
.state-AUTHORIZED, .state-delivered { background:#dcf5e3; color:var(--ok); }
.state-ABORTED, .state-EXPIRED, .state-TERMINATED, .state-given_up, .state-failed { background:#fde4e1; color:var(--bad); }
.state-CREATED, .state-retry { background:#e3ecfb; color:var(--info); }
.muted { color:var(--muted); } .error { color:var(--bad); } .ok { color:var(--ok); }
.pager { display:flex; gap:1rem; margin:1rem 0; }
dl.fields { display:grid; grid-template-columns:max-content 1fr; gap:.3rem 1rem; margin:0; }
dl.fields dt { color:var(--muted); } dl.fields dd { margin:0; word-break:break-word; }
#live { font-size:.8rem; color:#bbb; margin-left:auto; }
/* The payer's pages: a phone-sized card, like the vendor's landing page and app. */
body.payer { background:#ececf1; }
.phone { max-width:420px; margin:2rem auto; background:#fff; border-radius:18px; box-shadow:0 4px 24px rgba(0,0,0,.12); padding:1.5rem; }
.phone .merchant { font-size:1.1rem; font-weight:700; }
.phone .amount { font-size:2rem; font-weight:700; margin:.6rem 0; }
.phone .actions { display:flex; gap:.8rem; margin-top:1.2rem; }
.phone .actions button { flex:1; padding:.7rem; font-size:1rem; }
.phone .countdown { color:var(--muted); font-size:.9rem; }
.phone .notice { padding:.8rem; border-radius:8px; background:#fde4e1; color:var(--bad); margin:.8rem 0; }
.phone .notice.ok { background:#dcf5e3; color:var(--ok); }
.appbar { background:var(--brand); color:#fff; margin:-1.5rem -1.5rem 1rem; padding:.8rem 1.5rem; border-radius:18px 18px 0 0; font-weight:700; }
"#;

/// A whole page: `<head>` with the built-in stylesheet, an optional navigation bar, and the content.
pub(crate) fn page(title: &str, body_class: &str, nav: Option<Markup>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · Vipps MobilePay emulator" }
                style { (PreEscaped(CSS)) }
            }
            body class=(body_class) {
                @if let Some(n) = nav { (n) }
                main id="main" { (content) }
            }
        }
    }
}

/// An HTML answer with the headers every page carries (no framing by other sites, no caching of live state).
pub(crate) fn respond(status: u16, m: Markup) -> Response {
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    (
        status,
        [
            (http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (http::header::CACHE_CONTROL, "no-store"),
            (http::header::X_FRAME_OPTIONS, "DENY"),
            (
                http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline' 'self'; frame-ancestors 'none'",
            ),
        ],
        m.into_string(),
    )
        .into_response()
}

/// An error page (a browser asked; the JSON controls answer problem+json instead).
pub(crate) fn error_page(status: u16, title: &str, detail: &str) -> Response {
    respond(
        status,
        page(
            title,
            "",
            None,
            html! {
                div class="card" role="alert" {
                    h1 { (title) }
                    p { (detail) }
                }
            },
        ),
    )
}

/// Whether a request prefers HTML (a browser navigating), judged by its `Accept` header.
pub(crate) fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Emulator time (ms) as `2026-12-03 02:30:00 UTC`.
pub(crate) fn time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.format(&f).unwrap_or_default()
}

/// Minor units as `1 234.50 NOK`.
pub(crate) fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    let whole = (m / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push('\u{a0}');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02} {currency}", m % 100)
}

/// Why a state-changing request is refused as cross-site, if it is.
///
/// A browser sends `Origin` with every `POST` and, in current browsers, `Sec-Fetch-Site`; a request made by a
/// page of another site names that site, and is refused, because any page the tester opens can post forms to
/// `localhost`. Requests without either header come from programs (curl, tests), which no web page can drive.
pub(crate) fn cross_site(headers: &http::HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return Some(format!("Sec-Fetch-Site is `{site}`"));
        }
    }
    let origin = headers.get(http::header::ORIGIN)?;
    let Ok(origin) = origin.to_str() else {
        return Some("the Origin header is not readable".into());
    };
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = url::Url::parse(origin).ok().and_then(|u| {
        let h = u.host_str()?.to_owned();
        Some(match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h,
        })
    });
    match origin_host {
        Some(oh) if oh.eq_ignore_ascii_case(host) => None,
        _ => Some(format!("Origin `{origin}` is not this emulator (`{host}`)")),
    }
}

/// Middleware for routes whose `POST`s change state from a browser form: refuses cross-site requests with 403.
pub(crate) async fn same_origin(req: Request, next: Next) -> Response {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        if let Some(why) = cross_site(req.headers()) {
            tracing::info!(path = req.uri().path(), %why, "refused a cross-site form post");
            return error_page(
                403,
                "Cross-site request refused",
                &format!(
                    "This button only works from the emulator's own pages ({why}). Another web page tried to change \
                     the emulator's state."
                ),
            );
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use vipps_test_support::table::{Case, check, expect_eq};

    use super::*;

    #[derive(Debug)]
    struct Row {
        name: &'static str,
        headers: &'static [(&'static str, &'static str)],
        refused: bool,
    }

    impl Case for Row {
        fn name(&self) -> String {
            self.name.into()
        }
    }

    #[test]
    fn the_guard_refuses_other_sites() {
        let rows = [
            Row {
                name: "a program without browser headers",
                headers: &[("host", "127.0.0.1:8080")],
                refused: false,
            },
            Row {
                name: "same origin",
                headers: &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://127.0.0.1:8080"),
                    ("sec-fetch-site", "same-origin"),
                ],
                refused: false,
            },
            Row {
                name: "another site by Origin",
                headers: &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "https://evil.example"),
                ],
                refused: true,
            },
            Row {
                name: "another port is another origin",
                headers: &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://127.0.0.1:9999"),
                ],
                refused: true,
            },
            Row {
                name: "cross-site by fetch metadata",
                headers: &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")],
                refused: true,
            },
            Row {
                name: "an opaque origin",
                headers: &[("host", "127.0.0.1:8080"), ("origin", "null")],
                refused: true,
            },
        ];
        check(&rows, |r| {
            let mut h = http::HeaderMap::new();
            for (k, v) in r.headers {
                h.insert(
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                );
            }
            expect_eq("refused", cross_site(&h).is_some(), r.refused)
        });
    }

    #[test]
    fn money_and_escaping() {
        assert_eq!(money(123_456, "NOK"), "1\u{a0}234.56 NOK");
        assert_eq!(money(5, "EUR"), "0.05 EUR");
        let m = page("x", "", None, html! { p { ("<script>alert(1)</script>") } }).into_string();
        assert!(m.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!m.contains("<script>alert"));
    }
}

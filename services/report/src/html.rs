//! The report as one HTML file that opens offline (`netmeter report --html FILE`): the
//! [`Report`] embedded as JSON, the chart library, the page's script and style, and the licences
//! of what is inlined — no request leaves the file. The script (`assets/report.js`) draws the
//! header, the cards, the charts and every section's tables and SQL from the JSON, so the numbers
//! are formatted in one place; this module only assembles the page and keeps the data from
//! breaking out of its `<script>` element.
//!
//! Why Apache ECharts, in a custom build: the page needs a stacked chart over time, bars, a
//! zone-to-zone heatmap and a sankey, all with tooltips, legends that hide a series, and sizes
//! that follow the window. ECharts has all four with those interactions (uPlot, at ~50 KB, has
//! no sankey or heatmap; drawing SVG ourselves would be the lightest, ~20 KB, but would make us
//! write and maintain the sankey layout, tooltips and legends). Its full `echarts.min.js` is
//! 1.1 MB; `assets/echarts/build.sh` bundles only the charts and components the page uses
//! (`assets/echarts/entry.js`) with the SVG renderer (vector output in print and saved PDFs):
//! 627 KB, 213 KB gzipped. The page of the test fixture is 735 KB (238 KB gzipped), which
//! opens at once and mails fine.
//!
//! The bundle, its build script and the licences (ECharts' Apache-2.0 and NOTICE, and the BSD
//! and 0BSD code inside it) are vendored under `assets/echarts/`; the page repeats the licence
//! texts at its foot, since the file travels without the repository.

use crate::model::Report;

/// The chart library: Apache ECharts, the parts `assets/echarts/entry.js` names.
const ECHARTS: &str = include_str!("../assets/echarts/echarts-6.1.0.custom.min.js");
const PAGE_SCRIPT: &str = include_str!("../assets/report.js");
const PAGE_STYLE: &str = include_str!("../assets/report.css");

/// What the page inlines, with its licence texts (shown at the page's foot).
const LICENCES: [(&str, &str); 5] = [
    (
        "Apache ECharts 6.1.0 — Apache License 2.0",
        include_str!("../assets/echarts/LICENSE"),
    ),
    (
        "Apache ECharts — NOTICE",
        include_str!("../assets/echarts/NOTICE"),
    ),
    (
        "d3 (parts inside ECharts) — BSD 3-Clause",
        include_str!("../assets/echarts/LICENSE-d3"),
    ),
    (
        "ZRender 6.1.0 (inside ECharts) — BSD 3-Clause",
        include_str!("../assets/echarts/LICENSE-zrender"),
    ),
    (
        "tslib 2.3.0 (inside ECharts) — 0BSD",
        include_str!("../assets/echarts/LICENSE-tslib"),
    ),
];

/// The page for `report`, complete in one string.
pub fn render(report: &Report) -> String {
    // A `Report` is plain data (strings, numbers, JSON values): serializing it cannot fail.
    let json = serde_json::to_string(report).expect("a Report serializes to JSON");
    let title = format!(
        "netmeter report {} – {} UTC",
        escape_text(&report.from),
        escape_text(&report.to)
    );
    let mut licences = String::new();
    for (name, text) in LICENCES {
        licences.push_str(&format!(
            "<details><summary>{}</summary><pre>{}</pre></details>\n",
            escape_text(name),
            escape_text(text)
        ));
    }
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="netmeter report">
<title>{title}</title>
<style>
{style}</style>
</head>
<body>
<main id="page"></main>
<noscript><p>The charts and tables of this report are drawn by the script in the file: open it
with scripts allowed, or use <code>netmeter report --json</code>.</p></noscript>
<footer id="licences"><p>Countries and networks of internet addresses: data of
<a href='https://nro.net'>the NRO</a>, <a href='https://routeviews.org'>RouteViews</a> and
<a href='https://db-ip.com'>IP Geolocation by DB-IP</a> (CC BY 4.0), via
<a href='https://github.com/sapics/ip-location-db'>ip-location-db</a>, converted by netmeter.</p>
<p>Charts drawn with Apache ECharts, inlined in this file under these
licences:</p>
{licences}</footer>
<script type="application/json" id="report">{json}</script>
<script>
{echarts}
</script>
<script>
{script}</script>
</body>
</html>
"#,
        style = inline(PAGE_STYLE, "</style"),
        json = script_json(&json),
        echarts = inline(ECHARTS, "</script"),
        script = inline(PAGE_SCRIPT, "</script"),
    )
}

/// JSON text that can sit inside `<script type="application/json">`: `<` only occurs inside
/// JSON strings, where `\u003c` means the same, so no `</script>` or `<!--` in the data can end
/// or change the element.
fn script_json(json: &str) -> String {
    json.replace('<', "\\u003c")
}

/// Inlined code, checked not to contain what would end its element. The assets are ours or
/// vendored and tested, so this only trips when one is replaced by something that would break
/// the page.
fn inline<'a>(code: &'a str, end: &str) -> &'a str {
    assert!(
        !code.to_ascii_lowercase().contains(end),
        "an inlined asset contains {end}"
    );
    code
}

/// Text for HTML element content.
fn escape_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, Filters, Kind, Section, Table};

    fn report_with(text: &str) -> Report {
        Report {
            generated_at: "2026-01-05T12:00:00Z".into(),
            from: "2026-01-05 10:00:00".into(),
            to: "2026-01-05 12:00:00".into(),
            previous_from: "2026-01-05 08:00:00".into(),
            bucket: 600,
            filters: Filters::default(),
            sections: vec![Section {
                id: "overview",
                title: "Overview".into(),
                question: "What did traffic cost?".into(),
                note: String::new(),
                tables: vec![Table {
                    id: "by_class",
                    title: "By class".into(),
                    sql: "SELECT 1".into(),
                    columns: vec![Column {
                        name: "class",
                        kind: Kind::Text,
                    }],
                    rows: vec![vec![serde_json::Value::String(text.into())]],
                }],
            }],
        }
    }

    /// The JSON between `<script type="application/json" id="report">` and its end tag.
    fn embedded(page: &str) -> &str {
        let start = page
            .find(r#"<script type="application/json" id="report">"#)
            .expect("the report element");
        let rest = &page[start..];
        let body = &rest[rest.find('>').unwrap() + 1..];
        &body[..body.find("</script>").unwrap()]
    }

    #[test]
    fn data_cannot_close_its_script_element() {
        let hostile = "</script><script>alert(1)</script><!-- </SCRIPT >";
        let page = render(&report_with(hostile));
        let json = embedded(&page);
        assert!(!json.contains('<'), "{json}");
        let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(parsed["sections"][0]["tables"][0]["rows"][0][0], hostile);
    }

    #[test]
    fn the_title_is_escaped_text() {
        let mut report = report_with("x");
        report.from = "<b>".into();
        let page = render(&report);
        assert!(
            page.contains("<title>netmeter report &lt;b&gt; – "),
            "{page}"
        );
    }

    #[test]
    fn the_page_carries_the_library_and_its_licences_once() {
        let page = render(&report_with("x"));
        assert_eq!(page.matches("Apache ECharts 6.1.0 (Apache-2.0").count(), 1);
        for (name, _) in LICENCES {
            assert!(page.contains(&escape_text(name)), "{name}");
        }
        assert!(page.contains("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"));
    }
}

//! Reads what the test needs from a DOM as Chromium serializes it (`--dump-dom`): start tags with
//! double-quoted attributes, text with `&amp;`, `&lt;`, `&gt;`, `&quot;` and `&nbsp;` escapes.
//! Not a general HTML parser: the page's tables, cards and charts are plain elements.

use std::collections::BTreeMap;

/// One start tag: its attributes and the text up to its end tag (tags removed).
#[derive(Debug)]
pub struct Element {
    pub attrs: BTreeMap<String, String>,
    pub text: String,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }
}

/// Every `<tag ...>` in `html`, in document order.
pub fn elements(html: &str, tag: &str) -> Vec<Element> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(i) = html[at..].find(&open) {
        let start = at + i + open.len();
        at = start;
        // `<tr` must not match `<track`: the name ends at a space or `>`.
        if !html[start..].starts_with([' ', '>']) {
            continue;
        }
        let (attrs, end) = start_tag(html, start);
        let body = &html[end..];
        let inner = body.find(&close).map_or("", |j| &body[..j]);
        found.push(Element {
            attrs,
            text: unescape(&strip_tags(inner)),
        });
    }
    found
}

/// The attributes of the start tag whose attributes begin at `from`, and where the tag ends.
fn start_tag(html: &str, from: usize) -> (BTreeMap<String, String>, usize) {
    let mut attrs = BTreeMap::new();
    let bytes = html.as_bytes();
    let mut i = from;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'>' {
            return (attrs, (i + 1).min(bytes.len()));
        }
        let name_start = i;
        while i < bytes.len() && !matches!(bytes[i], b'=' | b'>' | b' ') {
            i += 1;
        }
        let name = html[name_start..i].to_string();
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'=' && bytes.get(i + 1) == Some(&b'"') {
            let value_start = i + 2;
            let len = html[value_start..]
                .find('"')
                .expect("a closed attribute value");
            value = unescape(&html[value_start..value_start + len]);
            i = value_start + len + 1;
        }
        attrs.insert(name, value);
    }
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// A table cell: its exact value (`data-value`, absent for null) and the text people read.
#[derive(Debug)]
pub struct Cell {
    pub value: Option<String>,
    pub text: String,
}

/// The rows of the table `data-table="<section>.<table>"`, or None if the page has no such table.
pub fn table(dom: &str, name: &str) -> Option<Vec<Vec<Cell>>> {
    let marker = format!("data-table=\"{name}\"");
    let start = dom.find(&marker)?;
    let end = start + dom[start..].find("</table>")?;
    let body = &dom[start..end];
    let body = &body[body.find("<tbody")?..];
    let rows = body
        .split("<tr")
        .skip(1)
        .map(|row| {
            elements(&format!("<tr{row}"), "td")
                .into_iter()
                .map(|td| Cell {
                    value: td.attr("data-value").map(str::to_string),
                    text: td.text,
                })
                .collect()
        })
        .collect();
    Some(rows)
}

/// The `class` of each body row of the table `data-table="<section>.<table>"` ("" for none).
pub fn row_classes(dom: &str, name: &str) -> Option<Vec<String>> {
    let marker = format!("data-table=\"{name}\"");
    let start = dom.find(&marker)?;
    let end = start + dom[start..].find("</table>")?;
    let body = &dom[start..end];
    let body = &body[body.find("<tbody")?..];
    Some(
        elements(body, "tr")
            .iter()
            .map(|tr| tr.attr("class").unwrap_or_default().to_string())
            .collect(),
    )
}

/// The `data-*` attribute `name` of `<body>`.
pub fn body_attr(dom: &str, name: &str) -> Option<String> {
    elements(dom, "body")
        .first()
        .and_then(|b| b.attr(name).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cells_with_and_without_values() {
        let dom = r#"<table class="data" data-table="a.b"><thead><tr><th>x</th></tr></thead>
<tbody><tr class="other"><td class="num" data-value="1048576">1.00 MiB</td><td class="null">—</td>
<td data-value="a &amp; &quot;b&quot; &lt;c&gt;">a &amp; "b" &lt;c&gt;</td></tr></tbody></table>"#;
        let rows = table(dom, "a.b").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][0].value.as_deref(), Some("1048576"));
        assert_eq!(rows[0][0].text, "1.00 MiB");
        assert_eq!(rows[0][1].value, None);
        assert_eq!(rows[0][2].value.as_deref(), Some("a & \"b\" <c>"));
        assert_eq!(rows[0][2].text, "a & \"b\" <c>");
    }
}

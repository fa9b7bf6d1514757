//! A [`Report`] as text: terminal tables sized to the terminal ([`terminal`]), JSON ([`json`])
//! and CSV ([`csv`]).
//!
//! # Terminal
//!
//! One block per question: its title, the question, how to read it, then its tables, each
//! followed by its SQL (unless `sql` is off). Bytes are binary units (KiB, MiB, GiB), bandwidth
//! decimal bits per second (Mbit/s, Gbit/s, as clouds publish it), dollars with cents (four
//! decimals below a dollar), flags as `yes` and `no`. Columns are as wide as their values; when
//! a table is wider than the terminal, text columns are shortened from the widest down, their
//! cells cut with `…`; numbers are never cut. Time series (`*_over_time`) are drawn as one sparkline per series.
//!
//! # CSV
//!
//! Every table is one block: a header line `section,table,<its columns>`, then its rows, each
//! starting with the section and table ids; blocks are separated by an empty line. A block reads
//! as a CSV file on its own, and `grep '^cross_zone,top_pairs,'` picks one table's rows. Values
//! are raw: bytes and counts as integers, dollars and bits per second as numbers, flags as
//! `true` and `false`, unknown empty.

use std::fmt::Write as _;

use serde_json::Value;

use crate::model::{Column, Kind, Report, Section, Table};

/// How to draw the terminal report.
#[derive(Clone, Copy, Debug)]
pub struct TerminalStyle {
    /// Columns of the terminal.
    pub width: usize,
    /// Print each table's SQL after it.
    pub sql: bool,
}

impl Default for TerminalStyle {
    fn default() -> TerminalStyle {
        TerminalStyle {
            width: terminal_width(),
            sql: true,
        }
    }
}

/// The width of the terminal: `COLUMNS` if set, else the terminal of stdout, else 120.
pub fn terminal_width() -> usize {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0)
    {
        return columns;
    }
    // SAFETY: TIOCGWINSZ fills a `winsize` for a terminal and fails otherwise.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) == 0 && size.ws_col > 0 {
            return usize::from(size.ws_col);
        }
    }
    120
}

/// The report as pretty-printed JSON (the [`Report`] value as serde writes it).
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("a report is plain data") + "\n"
}

/// The report as CSV blocks (module documentation).
pub fn csv(report: &Report) -> String {
    let mut out = String::new();
    for section in &report.sections {
        for table in &section.tables {
            if !out.is_empty() {
                out.push('\n');
            }
            let mut header = vec!["section".to_string(), "table".to_string()];
            header.extend(table.columns.iter().map(|c| c.name.to_string()));
            out.push_str(&csv_line(&header));
            for row in &table.rows {
                let mut fields = vec![section.id.to_string(), table.id.to_string()];
                fields.extend(row.iter().map(csv_value));
                out.push_str(&csv_line(&fields));
            }
        }
    }
    out
}

fn csv_value(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn csv_line(fields: &[String]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect();
    quoted.join(",") + "\n"
}

/// The report for a terminal (module documentation).
pub fn terminal(report: &Report, style: &TerminalStyle) -> String {
    let width = style.width.max(40);
    let mut out = String::new();
    let hours = |from: &str, to: &str| match (parse_time(from), parse_time(to)) {
        (Some(f), Some(t)) => {
            humantime::format_duration(std::time::Duration::from_secs(t.saturating_sub(f)))
                .to_string()
        }
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "netmeter report: {} to {} UTC ({}), against the {} before",
        report.from,
        short_time(&report.from, &report.to),
        hours(&report.from, &report.to),
        hours(&report.previous_from, &report.from),
    );
    let filters = &report.filters;
    let given: Vec<String> = [
        ("cluster", &filters.cluster),
        ("namespace", &filters.namespace),
        ("workload", &filters.workload),
        ("class", &filters.class),
    ]
    .iter()
    .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name} {v}")))
    .collect();
    if !given.is_empty() {
        let _ = writeln!(out, "filters: {}", given.join(", "));
    }
    for (index, section) in report.sections.iter().enumerate() {
        out.push('\n');
        render_section(&mut out, report, index + 1, section, width, style.sql);
    }
    out
}

fn render_section(
    out: &mut String,
    report: &Report,
    number: usize,
    section: &Section,
    width: usize,
    sql: bool,
) {
    let title = format!("{number}. {}", section.title);
    let _ = writeln!(out, "{title}\n{}", "=".repeat(title.chars().count()));
    for line in wrap(&section.question, width) {
        let _ = writeln!(out, "{line}");
    }
    for line in wrap(&section.note, width) {
        let _ = writeln!(out, "{line}");
    }
    for table in &section.tables {
        out.push('\n');
        let _ = writeln!(out, "  {}", table.title);
        if is_series(table) {
            render_series(out, report, table, width);
        } else {
            render_table(out, table, width);
        }
        if sql {
            let _ = writeln!(out, "  SQL:");
            for line in table.sql.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `to` without the date when it is the same day as `from`.
fn short_time(from: &str, to: &str) -> String {
    match (from.split_once(' '), to.split_once(' ')) {
        (Some((day_from, _)), Some((day_to, time))) if day_from == day_to => time.to_string(),
        _ => to.to_string(),
    }
}

fn parse_time(text: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .map(crate::options::unix)
}

fn is_numeric(kind: Kind) -> bool {
    !matches!(kind, Kind::Text | Kind::Time | Kind::Bool)
}

/// Every cell of a table as shown: its Time columns as dates when they all fall on midnight.
fn cells(table: &Table) -> Vec<Vec<String>> {
    let date_only: Vec<bool> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.kind == Kind::Time
                && table
                    .rows
                    .iter()
                    .all(|r| r[i].as_str().is_some_and(|t| t.ends_with(" 00:00:00")))
        })
        .collect();
    table
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(&table.columns)
                .enumerate()
                .map(|(i, (value, column))| {
                    let text = cell(value, column);
                    if date_only[i] {
                        text.trim_end_matches(" 00:00:00").to_string()
                    } else {
                        text
                    }
                })
                .collect()
        })
        .collect()
}

fn render_table(out: &mut String, table: &Table, width: usize) {
    if table.rows.is_empty() {
        let _ = writeln!(out, "  (no rows)");
        return;
    }
    let header: Vec<String> = table
        .columns
        .iter()
        .map(|c| c.name.replace('_', " "))
        .collect();
    let mut cells = cells(table);
    let values: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Columns that do not fit even with wrapped headers and cut text are left out, numbers
    // before text (a status says more than a figure), the last first, and named below.
    let mut visible: Vec<usize> = (0..header.len()).collect();
    let pick = |visible: &[usize]| -> (Vec<String>, Vec<usize>, Vec<Column>) {
        (
            visible.iter().map(|i| header[*i].clone()).collect(),
            visible.iter().map(|i| values[*i]).collect(),
            visible.iter().map(|i| table.columns[*i].clone()).collect(),
        )
    };
    let (mut shown_header, mut shown_values, mut columns) = pick(&visible);
    let mut widths = fit(&shown_header, &shown_values, &columns, width);
    while visible.len() > 2 && widths.iter().sum::<usize>() + 2 * visible.len() > width {
        let numeric = (1..visible.len())
            .rev()
            .find(|p| is_numeric(table.columns[visible[*p]].kind));
        visible.remove(numeric.unwrap_or(visible.len() - 1));
        (shown_header, shown_values, columns) = pick(&visible);
        widths = fit(&shown_header, &shown_values, &columns, width);
    }
    let hidden: Vec<String> = (0..header.len())
        .filter(|i| !visible.contains(i))
        .map(|i| header[i].clone())
        .collect();
    for row in &mut cells {
        *row = visible.iter().map(|i| row[*i].clone()).collect();
    }
    let header = shown_header;
    // A header wider than its column wraps; it is cut only where a word does not fit.
    let header_lines: Vec<Vec<String>> = header
        .iter()
        .zip(&widths)
        .map(|(h, w)| wrap(h, *w))
        .collect();
    let height = header_lines.iter().map(Vec::len).max().unwrap_or(1);
    let line = |values: &[String]| -> String {
        let mut text = String::from(" ");
        for (i, value) in values.iter().enumerate() {
            let shown = cut(value, widths[i]);
            let pad = widths[i].saturating_sub(shown.chars().count());
            if is_numeric(columns[i].kind) {
                let _ = write!(text, " {}{shown}", " ".repeat(pad));
            } else {
                let _ = write!(text, " {shown}{}", " ".repeat(pad));
            }
            text.push(' ');
        }
        text.trim_end().to_string() + "\n"
    };
    // Headers are aligned to their last line, next to the rule.
    for row in 0..height {
        let texts: Vec<String> = header_lines
            .iter()
            .map(|lines| {
                let skip = height - lines.len();
                if row < skip {
                    String::new()
                } else {
                    lines[row - skip].clone()
                }
            })
            .collect();
        out.push_str(&line(&texts));
    }
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(&rule));
    for row in &cells {
        out.push_str(&line(row));
    }
    if !hidden.is_empty() {
        let note = format!(
            "(too narrow for: {}; see --format csv or a wider terminal)",
            hidden.join(", ")
        );
        for line in wrap(&note, width.saturating_sub(2)) {
            let _ = writeln!(out, "  {line}");
        }
    }
}

/// Column widths for a row of `available` characters (two spaces between columns): as wide as
/// the header and the values; if that is too wide, headers wrap to their longest word, widest
/// first; then text columns are narrowed, widest first, to a minimum (their cells cut with `…`).
/// Numbers are never narrower than their values.
fn fit(header: &[String], values: &[usize], columns: &[Column], available: usize) -> Vec<usize> {
    // Names such as `shop/frontend` stay whole; past this a figure is left out instead.
    const MIN_TEXT: usize = 16;
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len();
    let mut widths: Vec<usize> = header
        .iter()
        .zip(values)
        .map(|(h, v)| h.chars().count().max(*v))
        .collect();
    let wrapped: Vec<usize> = header
        .iter()
        .zip(values)
        .map(|(h, v)| {
            let word = h.split(' ').map(|w| w.chars().count()).max().unwrap_or(0);
            word.max(*v)
        })
        .collect();
    let mut order: Vec<usize> = (0..widths.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(widths[*i] - wrapped[*i]));
    for i in order {
        if total(&widths) <= available {
            break;
        }
        let excess = total(&widths) - available;
        widths[i] = wrapped[i].max(widths[i].saturating_sub(excess));
    }
    while total(&widths) > available {
        let widest = (0..widths.len())
            .filter(|i| !is_numeric(columns[*i].kind) && widths[*i] > MIN_TEXT)
            .max_by_key(|i| widths[*i]);
        match widest {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
    widths
}

/// `text` in at most `width` characters, cut with `…`.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A value as the terminal shows it.
pub fn cell(value: &Value, column: &Column) -> String {
    if value.is_null() {
        return "-".into();
    }
    let number = value.as_f64();
    match (column.kind, number) {
        (Kind::Bytes, Some(n)) => human_bytes(n),
        (Kind::BitsPerSecond, Some(n)) => human_bps(n),
        (Kind::Usd, Some(n)) => {
            let text = usd(n);
            if column.name.starts_with("change") && n > 0.0 {
                format!("+{text}")
            } else {
                text
            }
        }
        // A network's number is a name, not a quantity.
        (Kind::Count, Some(n)) if column.name == "asn" => (n as u64).to_string(),
        (Kind::Count, Some(n)) => thousands(n as u64),
        (Kind::Ratio, Some(n)) if column.name.starts_with("change") => {
            format!("{:+.1}%", n * 100.0)
        }
        (Kind::Ratio, Some(n)) => format!("{n:.2}"),
        (Kind::Fraction, Some(n)) => format!("{:.1}%", n * 100.0),
        (Kind::Bool, _) => match value.as_bool() {
            Some(true) => "yes".into(),
            Some(false) => "no".into(),
            None => value.to_string(),
        },
        _ => match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    }
}

/// `1.50 MiB`; exact below 1 KiB.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes.abs() < 1024.0 {
        return format!("{bytes} B");
    }
    let mut value = bytes / 1024.0;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// `781.2 Mbit/s`, `12.5 Gbit/s`: decimal, as instance bandwidth is published.
pub fn human_bps(bps: f64) -> String {
    const UNITS: [&str; 5] = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
    let mut value = bps;
    let mut unit = 0;
    while value.abs() >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `$12.35`, `$1,234.50`; four decimals below a dollar (`$0.0042`).
pub fn usd(value: f64) -> String {
    let sign = if value < 0.0 { "-" } else { "" };
    let abs = value.abs();
    if abs == 0.0 {
        return "$0.00".into();
    }
    if abs < 0.01 {
        // Two significant digits: a small cluster's dollars are fractions of a cent.
        let decimals = (-abs.log10()).ceil() as usize + 1;
        return format!("{sign}${abs:.*}", decimals.min(12));
    }
    if abs < 1.0 {
        return format!("{sign}${abs:.4}");
    }
    let cents = (abs * 100.0).round() as u64;
    format!("{sign}${}.{:02}", thousands(cents / 100), cents % 100)
}

/// `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A table of a time bucket, a series key and numbers (the `*_over_time` tables).
fn is_series(table: &Table) -> bool {
    table.columns.len() >= 3
        && table.columns[0].kind == Kind::Time
        && table.columns[0].name == "bucket"
        && table.columns[1].kind == Kind::Text
        && table.columns[2..].iter().all(|c| is_numeric(c.kind))
}

/// One line per series and number: a sparkline over the report's buckets (empty buckets are
/// zero), with the total (bytes, dollars) or the peak (bits per second).
fn render_series(out: &mut String, report: &Report, table: &Table, width: usize) {
    if table.rows.is_empty() {
        let _ = writeln!(out, "  (no rows)");
        return;
    }
    let (Some(from), Some(to)) = (parse_time(&report.from), parse_time(&report.to)) else {
        return render_table(out, table, width);
    };
    let bucket = report.bucket.max(1);
    let buckets = to.saturating_sub(from).div_ceil(bucket).max(1) as usize;
    let mut keys: Vec<String> = Vec::new();
    for row in &table.rows {
        let key = row[1].as_str().unwrap_or_default().to_string();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let key_width = keys
        .iter()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(4, 28);
    let name_width = table.columns[2..]
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    // "  key  name  [sparkline]  total 1.23 GiB"
    let fixed = 2 + key_width + 2 + name_width + 2 + 2 + 22;
    let spark_width = width.saturating_sub(fixed).clamp(10, buckets.max(10));
    let _ = writeln!(
        out,
        "  per {} from {} to {} UTC",
        humantime::format_duration(std::time::Duration::from_secs(bucket)),
        report.from,
        short_time(&report.from, &report.to)
    );
    for key in &keys {
        for (offset, column) in table.columns[2..].iter().enumerate() {
            let index = offset + 2;
            let mut values = vec![0.0f64; buckets];
            for row in table.rows.iter().filter(|r| r[1].as_str() == Some(key)) {
                let at = row[0].as_str().and_then(parse_time).unwrap_or(from);
                let slot = (at.saturating_sub(from) / bucket) as usize;
                if let (Some(v), Some(cell)) = (row[index].as_f64(), values.get_mut(slot)) {
                    *cell += v;
                }
            }
            let peak_kind = column.kind == Kind::BitsPerSecond;
            let summary = if peak_kind {
                let peak = values.iter().cloned().fold(0.0, f64::max);
                format!("peak {}", cell(&serde_json::json!(peak), column))
            } else {
                let total: f64 = values.iter().sum();
                format!("total {}", cell(&serde_json::json!(total), column))
            };
            let label = if offset == 0 { key.as_str() } else { "" };
            let _ = writeln!(
                out,
                "  {:<key_width$}  {:<name_width$}  {}  {summary}",
                cut(label, key_width),
                column.name,
                sparkline(&values, spark_width, peak_kind),
            );
        }
    }
}

/// `values` drawn in `width` characters (groups of buckets merged by sum, or by max for rates).
fn sparkline(values: &[f64], width: usize, max_merge: bool) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let groups = values.len().div_ceil(width.max(1)).max(1);
    let merged: Vec<f64> = values
        .chunks(groups)
        .map(|chunk| {
            if max_merge {
                chunk.iter().cloned().fold(0.0, f64::max)
            } else {
                chunk.iter().sum()
            }
        })
        .collect();
    let top = merged.iter().cloned().fold(0.0, f64::max);
    merged
        .iter()
        .map(|v| {
            if *v <= 0.0 || top <= 0.0 {
                ' '
            } else {
                let level = ((v / top) * (BARS.len() - 1) as f64).round() as usize;
                BARS[level.min(BARS.len() - 1)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(columns: Vec<Column>, rows: Vec<Vec<Value>>) -> Table {
        Table {
            id: "t",
            title: "T".into(),
            sql: "SELECT 1".into(),
            columns,
            rows,
        }
    }

    #[test]
    fn units_for_people() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(1023.0), "1023 B");
        assert_eq!(human_bytes(1536.0), "1.50 KiB");
        assert_eq!(human_bytes(5.0 * 1024.0 * 1024.0 * 1024.0), "5.00 GiB");
        assert_eq!(human_bps(781_000_000.0), "781.0 Mbit/s");
        assert_eq!(human_bps(12.5e9), "12.5 Gbit/s");
        assert_eq!(usd(0.0), "$0.00");
        assert_eq!(usd(0.00421), "$0.0042");
        assert_eq!(usd(1234.5), "$1,234.50");
        assert_eq!(usd(-2.5), "-$2.50");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn flags_read_yes_or_no_and_networks_keep_their_number() {
        let flag = Column {
            name: "new",
            kind: Kind::Bool,
        };
        assert_eq!(cell(&json!(true), &flag), "yes");
        assert_eq!(cell(&json!(false), &flag), "no");
        let count = |name| Column {
            name,
            kind: Kind::Count,
        };
        assert_eq!(cell(&json!(24940), &count("asn")), "24940");
        assert_eq!(cell(&json!(24940), &count("workloads")), "24,940");
    }

    #[test]
    fn wide_tables_cut_text_not_numbers() {
        let t = table(
            vec![
                Column {
                    name: "workload",
                    kind: Kind::Text,
                },
                Column {
                    name: "sent_bytes",
                    kind: Kind::Bytes,
                },
            ],
            vec![
                vec![
                    json!("a-very-long-namespace/a-very-long-workload-name"),
                    json!(1536),
                ],
                vec![json!("other"), json!(10)],
            ],
        );
        let mut out = String::new();
        render_table(&mut out, &t, 28);
        assert_eq!(
            out,
            "                        sent\n  workload             bytes\n  \
             ----------------  --------\n  \
             a-very-long-nam…  1.50 KiB\n  other                 10 B\n"
        );
        assert!(out.lines().all(|l| l.chars().count() <= 28), "{out}");
    }

    #[test]
    fn numbers_that_do_not_fit_are_left_out_before_text() {
        let number = |name| Column {
            name,
            kind: Kind::BitsPerSecond,
        };
        let t = table(
            vec![
                Column {
                    name: "node",
                    kind: Kind::Text,
                },
                number("peak_bps"),
                Column {
                    name: "status",
                    kind: Kind::Text,
                },
                number("burst_bps"),
            ],
            vec![vec![
                json!("node-b"),
                json!(722.5e6),
                json!("at risk"),
                json!(12.5e9),
            ]],
        );
        let mut out = String::new();
        render_table(&mut out, &t, 24);
        assert_eq!(
            out,
            "  node    status\n  ------  -------\n  node-b  at risk\n  \
             (too narrow for: peak\n  bps, burst bps; see\n  --format csv or a\n  \
             wider terminal)\n"
        );
    }

    #[test]
    fn csv_blocks_carry_section_and_table() {
        let report = Report {
            generated_at: "now".into(),
            from: "2026-12-01 10:00:00".into(),
            to: "2026-12-01 12:00:00".into(),
            previous_from: "2026-12-01 08:00:00".into(),
            bucket: 60,
            filters: Default::default(),
            sections: vec![Section {
                id: "egress",
                title: "E".into(),
                question: "Q".into(),
                note: "N".into(),
                tables: vec![table(
                    vec![
                        Column {
                            name: "destination",
                            kind: Kind::Text,
                        },
                        Column {
                            name: "change_ratio",
                            kind: Kind::Ratio,
                        },
                    ],
                    vec![
                        vec![json!("S3 (eu-west-1), \"x\""), json!(0.5)],
                        vec![json!("internet"), Value::Null],
                    ],
                )],
            }],
        };
        assert_eq!(
            csv(&report),
            "section,table,destination,change_ratio\n\
             egress,t,\"S3 (eu-west-1), \"\"x\"\"\",0.5\n\
             egress,t,internet,\n"
        );
    }

    #[test]
    fn sparklines_merge_buckets() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0], 4, false), " ▃▅█");
        assert_eq!(sparkline(&[1.0, 1.0, 4.0, 0.0], 2, true), "▃█");
    }
}

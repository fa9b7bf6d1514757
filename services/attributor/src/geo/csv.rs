//! The packages' CSV files, exactly as npm ships them: no header, one inclusive range a line,
//! `first,last,country` (`1.0.0.0,1.0.0.255,AU`) or `first,last,asn,name`
//! (`1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."`, a name quoted when it holds a comma or a
//! quote, a quote doubled inside).

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::ranges::Range;
use super::{GeoError, GeoPart, LabelInterner};

/// The columns of the part's file, for messages.
pub(super) fn columns(part: GeoPart) -> &'static str {
    if part.is_country() {
        "first address,last address,country code"
    } else {
        "first address,last address,AS number,AS name"
    }
}

/// Every row of the part's file `text` (read from `path`), in file order, its label interned
/// into `labels` (a country code, or an AS number and name).
pub(super) fn parse(
    part: GeoPart,
    path: &Path,
    text: &str,
    labels: &mut LabelInterner<'_>,
) -> Result<Vec<Range>, GeoError> {
    let mut rows = Vec::with_capacity(text.len() / 40);
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = parse_row(part, line, labels).map_err(|reason| GeoError::Row {
            part,
            path: path.to_path_buf(),
            line: index + 1,
            reason,
        })?;
        rows.push(row);
    }
    Ok(rows)
}

fn parse_row(part: GeoPart, line: &str, labels: &mut LabelInterner<'_>) -> Result<Range, String> {
    let fields = split(line)?;
    let expected = if part.is_country() { 3 } else { 4 };
    if fields.len() != expected {
        return Err(format!(
            "{} fields where {expected} were expected",
            fields.len()
        ));
    }
    let first = address(part, &fields[0])?;
    let last = address(part, &fields[1])?;
    if last < first {
        return Err(format!(
            "the range ends ({}) before it starts ({})",
            fields[1], fields[0]
        ));
    }
    let label = if part.is_country() {
        let code = fields[2].trim();
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("`{code}` is not a two-letter country code"));
        }
        labels.intern(0, &code.to_ascii_uppercase())
    } else {
        let asn = fields[2].trim();
        let asn: u32 = asn
            .parse()
            .map_err(|_| format!("`{asn}` is not an AS number"))?;
        labels.intern(asn, &fields[3])
    };
    Ok(Range { first, last, label })
}

fn address(part: GeoPart, field: &str) -> Result<u128, String> {
    let field = field.trim();
    if part.is_v6() {
        field
            .parse::<Ipv6Addr>()
            .map(u128::from)
            .map_err(|_| format!("`{field}` is not an IPv6 address"))
    } else {
        field
            .parse::<Ipv4Addr>()
            .map(|a| u128::from(u32::from(a)))
            .map_err(|_| format!("`{field}` is not an IPv4 address"))
    }
}

/// The fields of one line: comma-separated, a field in double quotes may hold commas and
/// doubled quotes.
fn split(line: &str) -> Result<Vec<Cow<'_, str>>, String> {
    if !line.contains('"') {
        return Ok(line.split(',').map(Cow::Borrowed).collect());
    }
    let mut fields = Vec::with_capacity(4);
    let mut rest = line;
    loop {
        if let Some(mut quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            loop {
                let end = quoted
                    .find('"')
                    .ok_or("a quoted field is not closed on its line")?;
                value.push_str(&quoted[..end]);
                quoted = &quoted[end + 1..];
                match quoted.strip_prefix('"') {
                    Some(after) => {
                        value.push('"');
                        quoted = after;
                    }
                    None => break,
                }
            }
            fields.push(Cow::Owned(value));
            match quoted.strip_prefix(',') {
                Some(after) => rest = after,
                None if quoted.is_empty() => return Ok(fields),
                None => return Err(format!("`{quoted}` follows a closing quote")),
            }
        } else {
            match rest.split_once(',') {
                Some((field, after)) => {
                    fields.push(Cow::Borrowed(field));
                    rest = after;
                }
                None => {
                    fields.push(Cow::Borrowed(rest));
                    return Ok(fields);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_hold_commas_and_doubled_quotes() {
        assert_eq!(
            split(r#"1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc.""#).unwrap(),
            ["1.0.0.0", "1.0.0.255", "13335", "Cloudflare, Inc."]
        );
        assert_eq!(
            split(r#"2.26.200.0,2.26.215.255,201907,"LLC ""SPUTNIK""""#).unwrap(),
            ["2.26.200.0", "2.26.215.255", "201907", r#"LLC "SPUTNIK""#]
        );
        assert_eq!(split("a,,b,").unwrap(), ["a", "", "b", ""]);
        assert_eq!(split(r#""a",b"#).unwrap(), ["a", "b"]);
        assert!(split(r#"a,"b"#).is_err());
        assert!(split(r#""a"b,c"#).is_err());
    }
}

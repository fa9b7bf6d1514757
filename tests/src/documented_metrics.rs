//! The README's metric lists against a running service's `/metrics`: every metric the README
//! names for a service is served, and every `netmeter_` metric served is named. A service
//! lists every declared metric from the start (`netmeter_common::metric`), so the `/metrics`
//! of a service that just became ready is enough.
//!
//! Where the README lists them: the paragraph "Collector metrics: ...", the paragraph under
//! "### Attributor metrics", the sink's "- **Metrics**: ..." item, and for every service the
//! `/metrics` item of "## Health and metrics". In a list, `` `_deltas_total` `` abbreviates
//! `netmeter_<service>_deltas_total`; labels (`{reason}`) are not part of the name.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, bail};

/// The README of the workspace.
pub fn readme() -> anyhow::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// Checks `body`, the `/metrics` of `service` (`collector`, `attributor` or `sink`), against
/// the README's lists; the error names what is missing on either side.
pub fn check(service: &str, body: &str) -> anyhow::Result<()> {
    check_against(&readme()?, service, body)
}

fn check_against(readme: &str, service: &str, body: &str) -> anyhow::Result<()> {
    let named = named_in_readme(readme, service)?;
    let served = served(body);
    let missing: Vec<&String> = named.difference(&served).collect();
    let unnamed: Vec<&String> = served.difference(&named).collect();
    if !missing.is_empty() || !unnamed.is_empty() {
        bail!(
            "the README's metrics of the {service} differ from its /metrics:\n  \
             named in the README, not served: {missing:?}\n  \
             served, not named in the README: {unnamed:?}"
        );
    }
    Ok(())
}

/// The metrics the README names for `service`, its own list and the one of every service.
pub fn named_in_readme(readme: &str, service: &str) -> anyhow::Result<BTreeSet<String>> {
    let own = match service {
        "collector" => paragraph(readme, |l| l.starts_with("Collector metrics:")),
        "attributor" => paragraph_after(readme, "### Attributor metrics"),
        "sink" => paragraph(readme, |l| l.starts_with("- **Metrics**: `netmeter_sink_")),
        _ => bail!("no README metric list for service {service:?}"),
    }
    .with_context(|| format!("the README has no metric list of the {service}"))?;
    let every = paragraph(readme, |l| l.starts_with("- `/metrics`:"))
        .context("the README's \"Health and metrics\" has no `/metrics` item")?;
    let mut names = names(&own, &format!("netmeter_{service}"));
    names.extend(names_in(&every, None));
    Ok(names)
}

/// The `netmeter_` metric families of a `/metrics` body: those with a `# HELP` or `# TYPE`
/// line, and any sample's name that belongs to none of them.
pub fn served(body: &str) -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            families.extend(rest.split_whitespace().next().map(String::from));
        }
    }
    let mut samples = BTreeSet::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name: String = line.chars().take_while(|c| is_name_char(*c)).collect();
        let of_a_family = families.contains(&name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|family| families.contains(family))
            });
        if !name.is_empty() && !of_a_family {
            samples.insert(name);
        }
    }
    families
        .into_iter()
        .chain(samples)
        .filter(|name| name.starts_with("netmeter_"))
        .collect()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The lines from the first one `starts` accepts up to a blank line, a heading or the next
/// list item, joined.
fn paragraph(text: &str, starts: impl Fn(&str) -> bool) -> Option<String> {
    let mut lines = text.lines().skip_while(|l| !starts(l));
    let first = lines.next()?;
    let rest =
        lines.take_while(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with("- "));
    Some(
        std::iter::once(first)
            .chain(rest)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The first paragraph after the heading line `heading`.
fn paragraph_after(text: &str, heading: &str) -> Option<String> {
    let after = &text[text.find(&format!("\n{heading}\n"))? + heading.len() + 2..];
    paragraph(after, |l| !l.trim().is_empty())
}

/// The metric names of a list whose abbreviations (`_x`) stand for `prefix_x`.
fn names(list: &str, prefix: &str) -> BTreeSet<String> {
    names_in(list, Some(prefix))
}

fn names_in(list: &str, prefix: Option<&str>) -> BTreeSet<String> {
    list.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| {
            let name: String = code.chars().take_while(|c| is_name_char(*c)).collect();
            // `netmeter_<service>_<what>` is a pattern, not a name.
            if code[name.len()..].starts_with('<') {
                return None;
            }
            if name.starts_with("netmeter_") {
                Some(name)
            } else if name.starts_with('_') && !name.starts_with("__") {
                // `__other__` is a label value.
                prefix.map(|prefix| format!("{prefix}{name}"))
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "\
## The collector

Collector metrics: `netmeter_collector_deltas_total`, `_bytes_total{direction}`,
`_dump_duration_seconds` (see `--interval`).

### Attributor metrics

`netmeter_attributor_deltas_total`, `_rebalances_total{event}` (`__other__` too);
for people: `netmeter_workload_bytes_total`
`{namespace, workload}`.

## Health and metrics

- `/healthz`: 200.
- `/metrics`: Prometheus text. Names follow `netmeter_<service>_<what>_<unit>`; every service
  exports `netmeter_build_info{service,version} 1`; `promtool check
  metrics` is clean.
- SIGTERM: exit 0.
";

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_lists_expand_abbreviations_and_drop_labels() {
        assert_eq!(
            named_in_readme(README, "collector").unwrap(),
            set(&[
                "netmeter_build_info",
                "netmeter_collector_bytes_total",
                "netmeter_collector_deltas_total",
                "netmeter_collector_dump_duration_seconds",
            ])
        );
        assert_eq!(
            named_in_readme(README, "attributor").unwrap(),
            set(&[
                "netmeter_attributor_deltas_total",
                "netmeter_attributor_rebalances_total",
                "netmeter_build_info",
                "netmeter_workload_bytes_total",
            ])
        );
        assert!(named_in_readme(README, "sink").is_err());
    }

    #[test]
    fn served_families_include_those_without_samples() {
        let body = "\
# HELP netmeter_collector_deltas_total Deltas.
# TYPE netmeter_collector_deltas_total counter
netmeter_collector_deltas_total 3

# TYPE netmeter_collector_dump_duration_seconds histogram
netmeter_collector_dump_duration_seconds_bucket{le=\"0.1\"} 1
netmeter_collector_dump_duration_seconds_sum 0.05
netmeter_collector_dump_duration_seconds_count 1

# HELP netmeter_collector_bytes_total Bytes.
# TYPE netmeter_collector_bytes_total counter

netmeter_build_info{service=\"collector\"} 1
process_open_fds 7
";
        assert_eq!(
            served(body),
            set(&[
                "netmeter_build_info",
                "netmeter_collector_bytes_total",
                "netmeter_collector_deltas_total",
                "netmeter_collector_dump_duration_seconds",
            ])
        );
        check_against(README, "collector", body).unwrap();
        let err = check_against(README, "collector", "netmeter_collector_other_total 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("named in the README, not served: [\"netmeter_build_info\", ")
                && err.contains(
                    "served, not named in the README: [\"netmeter_collector_other_total\"]"
                ),
            "{err}"
        );
    }

    #[test]
    fn the_workspace_readme_has_a_list_per_service() {
        let readme = readme().unwrap();
        for service in ["collector", "attributor", "sink"] {
            let names = named_in_readme(&readme, service).unwrap();
            assert!(names.len() > 5, "{service}: {names:?}");
            assert!(names.contains("netmeter_build_info"));
        }
    }
}

//! The built-in snapshot answers as its CSV files say (values checked against the files of
//! `@ip-location-db/geo-whois-asn-country` and `@ip-location-db/asn` 2.3.2026061719), and
//! `--geo-dir` replaces exactly the parts it has files for.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::ranges::Range;
use super::*;

const COUNTRY_PACKAGE: &str = "@ip-location-db/geo-whois-asn-country@2.3.2026061719";
const ASN_PACKAGE: &str = "@ip-location-db/asn@2.3.2026061719";
/// The time the version names, 2026-06-17 19:00 UTC.
const PUBLISHED_UNIX_SECONDS: u64 = 1_781_722_800;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn label<'a>(country: &'a str, asn: u32, as_name: &'a str) -> GeoLabel<'a> {
    GeoLabel {
        country,
        asn,
        as_name,
    }
}

fn assert_labels(table: &GeoTable, expected: &[(&str, GeoLabel<'_>)]) {
    for (address, expected) in expected {
        assert_eq!(table.lookup(ip(address)), *expected, "{address}");
    }
}

#[test]
fn public_addresses_get_their_country_and_network() {
    assert_labels(
        &GeoTable::builtin(),
        &[
            ("8.8.8.8", label("US", 15169, "Google LLC")),
            ("1.1.1.1", label("AU", 13335, "Cloudflare, Inc.")),
            // heise.de, Hannover
            ("193.99.144.80", label("DE", 206564, "Plus.line AG")),
            ("133.242.0.3", label("JP", 7684, "SAKURA Internet Inc.")),
            (
                "210.130.1.1",
                label("JP", 2497, "Internet Initiative Japan Inc."),
            ),
            (
                "200.160.2.3",
                label("BR", 22548, "Nucleo de Inf. e Coord. do Ponto BR - NIC.BR"),
            ),
            ("2001:4860:4860::8888", label("US", 15169, "Google LLC")),
            (
                "2606:4700:4700::1111",
                label("US", 13335, "Cloudflare, Inc."),
            ),
            ("2003:e2:1234::1", label("DE", 3320, "Deutsche Telekom AG")),
            ("2a00:1450:4001:82a::200e", label("IE", 15169, "Google LLC")),
            // In Germany, outside every cloud provider's ranges: the test network's internet
            // hosts.
            ("217.6.164.162", label("DE", 3320, "Deutsche Telekom AG")),
            ("88.198.17.30", label("DE", 24940, "Hetzner Online GmbH")),
            // A country without a network: the ASN file has no row for 1.0.1.0/24.
            ("1.0.3.255", label("CN", 0, "")),
        ],
    );
}

#[test]
fn special_purpose_addresses_get_the_empty_label() {
    let table = GeoTable::builtin();
    for address in [
        "10.0.0.1",
        "127.0.0.1",
        "203.0.113.10",
        "198.51.100.1",
        "192.0.2.1",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "169.254.169.254",
        "224.0.0.1",
        "255.255.255.255",
        "0.0.0.0",
        "fd00::1",
        "fe80::1",
        "ff02::1",
        "::1",
        "::",
        "2001:db8::1",
    ] {
        let found = table.lookup(ip(address));
        assert_eq!(found, GeoLabel::default(), "{address}");
        assert!(found.is_empty());
    }
}

#[test]
fn an_ipv4_mapped_ipv6_address_is_looked_up_as_ipv4() {
    let table = GeoTable::builtin();
    assert_eq!(
        table.lookup(ip("::ffff:8.8.8.8")),
        label("US", 15169, "Google LLC")
    );
    assert_eq!(table.lookup(ip("::ffff:10.0.0.1")), GeoLabel::default());
}

#[test]
fn a_range_holds_from_its_first_to_its_last_address() {
    // asn-ipv4.csv: 1.0.4.0,1.0.7.255,38803,Gtelecom Pty Ltd; nothing just before or after.
    // The country file has 1.0.1.0-1.0.3.255 CN, 1.0.4.0-1.0.7.255 AU, 1.0.8.0-1.0.15.255 CN.
    assert_labels(
        &GeoTable::builtin(),
        &[
            ("1.0.3.255", label("CN", 0, "")),
            ("1.0.4.0", label("AU", 38803, "Gtelecom Pty Ltd")),
            ("1.0.7.255", label("AU", 38803, "Gtelecom Pty Ltd")),
            ("1.0.8.0", label("CN", 0, "")),
        ],
    );
}

#[test]
fn a_narrower_row_wins_inside_a_wider_one() {
    let lume = "Mario Kurz trading as LUME Solutions";
    assert_labels(
        &GeoTable::builtin(),
        &[
            // 2.58.196.0-2.58.197.255 DE holds 2.58.197.15 BE.
            ("2.58.197.14", label("DE", 207695, lume)),
            ("2.58.197.15", label("BE", 207695, lume)),
            ("2.58.197.16", label("DE", 207695, lume)),
            // Inside one /64: 2001:506:8::-2001:506:9::3 US, 2001:506:9::4-5 BR, ...6- US.
            ("2001:506:9::3", label("US", 0, "")),
            ("2001:506:9::4", label("BR", 0, "")),
            ("2001:506:9::5", label("BR", 0, "")),
            ("2001:506:9::6", label("US", 0, "")),
        ],
    );
}

#[test]
fn the_snapshot_says_where_each_part_comes_from() {
    let loaded = GeoTable::load(None).unwrap();
    assert!(Arc::ptr_eq(&loaded.table, &GeoTable::builtin()));
    let published = SystemTime::UNIX_EPOCH + Duration::from_secs(PUBLISHED_UNIX_SECONDS);
    assert_eq!(
        humantime::format_rfc3339(published).to_string(),
        "2026-06-17T19:00:00Z"
    );
    let snapshot = |part, package: &str, ranges| LoadedPart {
        part,
        source: GeoSource::Snapshot {
            package: package.into(),
        },
        published,
        ranges,
    };
    assert_eq!(
        loaded.parts,
        [
            snapshot(GeoPart::CountryV4, COUNTRY_PACKAGE, 334_306),
            snapshot(GeoPart::CountryV6, COUNTRY_PACKAGE, 216_288),
            snapshot(GeoPart::NetworkV4, ASN_PACKAGE, 411_961),
            snapshot(GeoPart::NetworkV6, ASN_PACKAGE, 103_197),
        ]
    );
    // A directory without any of the files is the snapshot too.
    let empty = tempfile::tempdir().unwrap();
    let loaded = GeoTable::load(Some(empty.path())).unwrap();
    assert!(Arc::ptr_eq(&loaded.table, &GeoTable::builtin()));
}

#[test]
fn a_file_in_the_geo_dir_replaces_only_its_part() {
    let dir = tempfile::tempdir().unwrap();
    let asn_v4 = dir.path().join("asn-ipv4.csv");
    std::fs::write(
        &asn_v4,
        "8.8.8.0,8.8.8.255,64500,Example Net\n\
         9.9.9.0,9.9.9.255,64501,\"Quote \"\"Q\"\", Inc.\"\r\n\
         \n",
    )
    .unwrap();
    let country_v6 = dir.path().join("geo-whois-asn-country-ipv6.csv");
    std::fs::write(
        &country_v6,
        "2a01::,2a01:ffff:ffff:ffff:ffff:ffff:ffff:ffff,FR\n\
         2a01:0:0:1::10,2a01:0:0:1::1f,lu\n",
    )
    .unwrap();
    let loaded = GeoTable::load(Some(dir.path())).unwrap();
    let sources: Vec<_> = loaded
        .parts
        .iter()
        .map(|p| (p.part, p.source.kind(), p.ranges))
        .collect();
    assert_eq!(
        sources,
        [
            (GeoPart::CountryV4, "embedded", 334_306),
            (GeoPart::CountryV6, "dir", 3),
            (GeoPart::NetworkV4, "dir", 2),
            (GeoPart::NetworkV6, "embedded", 103_197),
        ]
    );
    assert_eq!(loaded.parts[2].source, GeoSource::File(asn_v4.clone()));
    let modified = std::fs::metadata(&asn_v4).unwrap().modified().unwrap();
    assert_eq!(loaded.parts[2].published, modified);
    assert_labels(
        &loaded.table,
        &[
            // The country is still the snapshot's, the network the file's.
            ("8.8.8.8", label("US", 64500, "Example Net")),
            ("9.9.9.9", label("US", 64501, "Quote \"Q\", Inc.")),
            ("1.1.1.1", label("AU", 0, "")),
            // IPv6 networks are still the snapshot's, countries the file's.
            ("2001:4860:4860::8888", label("", 15169, "Google LLC")),
            ("2a01::1", label("FR", 0, "")),
            ("2a01:0:0:1::f", label("FR", 0, "")),
            ("2a01:0:0:1::10", label("LU", 0, "")),
            ("2a01:0:0:1::1f", label("LU", 0, "")),
            ("2a01:0:0:1::20", label("FR", 0, "")),
        ],
    );
    // The shared built-in table is untouched.
    assert_eq!(
        GeoTable::builtin().lookup(ip("8.8.8.8")),
        label("US", 15169, "Google LLC")
    );
}

#[test]
fn a_bad_row_is_an_error_naming_the_file_and_the_line() {
    let cases = [
        (
            "asn-ipv4.csv",
            "1.0.0.0,1.0.0.255,13335,Cloudflare\n1.2.3.4,1.2.3.0,64500,X\n",
            "line 2: the range ends (1.2.3.0) before it starts (1.2.3.4); expected `first \
             address,last address,AS number,AS name` as @ip-location-db/asn ships it",
        ),
        (
            "asn-ipv6.csv",
            "2001::,2001::ffff,AS6939,HE\n",
            "line 1: `AS6939` is not an AS number",
        ),
        (
            "geo-whois-asn-country-ipv4.csv",
            "1.0.0.0,1.0.0.255,AU\n\n1.0.1.0,1.0.3.255,China\n",
            "line 3: `China` is not a two-letter country code; expected `first address,last \
             address,country code` as @ip-location-db/geo-whois-asn-country ships it",
        ),
        (
            "geo-whois-asn-country-ipv4.csv",
            "2001:200::,2001:200::ff,JP\n",
            "line 1: `2001:200::` is not an IPv4 address",
        ),
        (
            "geo-whois-asn-country-ipv6.csv",
            "2001:200::,2001:200::ff\n",
            "line 1: 2 fields where 3 were expected",
        ),
        (
            "asn-ipv4.csv",
            "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\n",
            "line 1: a quoted field is not closed on its line",
        ),
    ];
    for (file, content, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file);
        std::fs::write(&path, content).unwrap();
        let error = GeoTable::load(Some(dir.path())).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("{} {message}", path.display())),
            "{text}"
        );
    }
}

#[test]
fn a_geo_dir_that_is_not_a_directory_is_an_error() {
    let error = GeoTable::load(Some(Path::new("/nonexistent/geo"))).unwrap_err();
    assert!(
        error.to_string().starts_with(
            "/nonexistent/geo is not a directory: point --geo-dir at a directory holding"
        ),
        "{error}"
    );
}

/// The two-level IPv6 table answers like one full-width table, on ranges that start and end
/// inside /64s, on /64 boundaries, and at the ends of the space.
#[test]
fn the_two_level_ipv6_table_matches_a_full_width_one() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut rows = vec![
        Range {
            first: 0,
            last: 5,
            label: 0,
        },
        Range {
            first: u128::MAX - 3,
            last: u128::MAX,
            label: 1,
        },
    ];
    let mut at: u128 = 1 << 64;
    for label in 2..2000 {
        // Mostly whole /64s, sometimes a cut inside one.
        let blocks = u128::from(random() % 4);
        let first = if random() % 5 == 0 {
            at + u128::from(random() % 1000)
        } else {
            at
        };
        let last = if random() % 5 == 0 {
            first + (blocks << 64) + u128::from(random() % 1000)
        } else {
            (first | u128::from(u64::MAX)) + (blocks << 64)
        };
        rows.push(Range { first, last, label });
        at = last + 1 + if random() % 3 == 0 { 1 << 64 } else { 0 };
    }
    let flat = ranges::flatten(&rows);
    let two_level = V6Table::build(&flat);
    assert!(two_level.fine.len() > 100, "the test cuts inside /64s");
    let full =
        IntervalTable::<u128>::build(flat.iter().map(|r| (r.first, r.last, r.label)).collect());
    for range in &flat {
        for address in [
            range.first.checked_sub(1),
            Some(range.first),
            Some(range.first | u128::from(u64::MAX)),
            Some(range.last),
            range.last.checked_add(1),
        ]
        .into_iter()
        .flatten()
        {
            assert_eq!(two_level.get(address), full.get(address), "{address:#x}");
        }
    }
}

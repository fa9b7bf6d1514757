//! The cloud tables on the real files of the built-in snapshot (July 2025), checked against a
//! plain reference implementation, plus a timing run (`--ignored`).

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::time::Instant;

/// All three real files, loaded once for all tests.
fn ranges() -> &'static CloudRanges {
    static RANGES: OnceLock<CloudRanges> = OnceLock::new();
    RANGES.get_or_init(|| load(None).unwrap().table)
}

/// The snapshot's files written into a directory, for the tests that read files.
fn range_files_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    snapshot::write_to(dir.path()).unwrap();
    dir
}

fn label(ip: &str) -> (Cloud, &str, &str, String) {
    let l = ranges()
        .lookup(ip.parse().unwrap())
        .unwrap_or_else(|| panic!("{ip} not found"));
    (
        l.cloud,
        l.region.as_str(),
        l.service.as_str(),
        l.prefix.to_string(),
    )
}

#[test]
fn s3_in_ap_northeast_2_beats_amazon_and_ec2_for_the_same_prefix() {
    assert_eq!(
        label("3.5.140.7"),
        (Cloud::Aws, "ap-northeast-2", "S3", "3.5.140.0/22".into())
    );
}

#[test]
fn gcp_africa_south1() {
    assert_eq!(
        label("34.35.1.2"),
        (
            Cloud::Gcp,
            "africa-south1",
            "Google Cloud",
            "34.35.0.0/16".into()
        )
    );
}

#[test]
fn azure_storage_tag_beats_the_regional_and_global_tags() {
    assert_eq!(
        label("20.33.154.10"),
        (
            Cloud::Azure,
            "koreacentral",
            "AzureStorage",
            "20.33.154.0/24".into()
        )
    );
}

#[test]
fn ipv6_prefixes_match() {
    assert_eq!(
        label("2a05:d07a:a000::1"),
        (Cloud::Aws, "eu-south-1", "S3", "2a05:d07a:a000::/40".into())
    );
    assert_eq!(label("2600:1900:8000::5").0, Cloud::Gcp);
}

#[test]
fn longest_prefix_wins_and_private_addresses_are_not_cloud() {
    let label = |service: &str, prefix: &str| CloudLabel {
        cloud: Cloud::Aws,
        region: "r".into(),
        service: service.into(),
        prefix: prefix.parse().unwrap(),
    };
    let ranges: CloudRanges = [label("wide", "10.0.0.0/8"), label("narrow", "10.1.2.0/24")]
        .into_iter()
        .collect();
    assert_eq!(
        ranges.lookup("10.1.2.3".parse().unwrap()).unwrap().service,
        "narrow"
    );
    assert_eq!(
        ranges.lookup("10.9.9.9".parse().unwrap()).unwrap().service,
        "wide"
    );
    assert_eq!(ranges.lookup("192.168.1.1".parse().unwrap()), None);
    assert_eq!(
        super::tests::ranges().lookup("10.1.2.3".parse().unwrap()),
        None
    );
    assert_eq!(
        super::tests::ranges().lookup("fd00::1".parse().unwrap()),
        None
    );
}

#[test]
fn a_missing_or_broken_file_says_which_and_why() {
    let mut ranges = CloudRanges::default();
    let err = ranges
        .add_aws(Path::new("/nonexistent/ip-ranges.json"))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/ip-ranges.json"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cloud.json");
    std::fs::write(&bad, b"{\"prefixes\": 3}").unwrap();
    let err = ranges.add_gcp(&bad).unwrap_err();
    assert!(
        err.to_string().contains("is not a valid GCP range file"),
        "{err}"
    );
}

#[test]
fn a_missing_file_names_itself_and_where_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let expected_path = dir.path().join("azure-service-tags.json");
    let err = CloudRanges::new().add_azure(&expected_path).unwrap_err();
    assert_eq!(err.cloud(), Some(Cloud::Azure));
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot read {}: no such file; download the ServiceTags_Public_*.json",
            expected_path.display()
        )),
        "{message}"
    );
}

#[test]
fn files_loaded_in_any_order_give_the_same_table() {
    let files = range_files_dir();
    let dir = files.path();
    let mut backwards = CloudRanges::new();
    backwards
        .add_azure(&dir.join("azure-service-tags.json"))
        .unwrap();
    backwards.add_gcp(&dir.join("gcp-cloud.json")).unwrap();
    backwards.add_aws(&dir.join("aws-ip-ranges.json")).unwrap();
    assert!(&backwards == ranges(), "{backwards:?} != {:?}", ranges());
    assert_eq!(backwards.len(), ranges().len());
    assert!(ranges().len() > 60_000, "{:?}", ranges());
}

#[test]
fn cloud_names_parse_in_any_case_and_anything_else_is_named() {
    assert_eq!(Cloud::parse("aws"), Ok(Cloud::Aws));
    assert_eq!(Cloud::parse("GCP"), Ok(Cloud::Gcp));
    assert_eq!("Azure".parse(), Ok(Cloud::Azure));
    for cloud in Cloud::ALL {
        assert_eq!(Cloud::parse(cloud.name()), Ok(cloud));
    }
    assert_eq!(
        Cloud::parse("oracle").unwrap_err().to_string(),
        "unknown cloud `oracle`: expected aws, gcp or azure"
    );
}

#[test]
fn a_small_table_from_inline_json() {
    let ranges = CloudRanges::from_json(
        Cloud::Aws,
        r#"{"prefixes": [
            {"ip_prefix": "198.51.100.0/24", "region": "eu-west-1", "service": "EC2"},
            {"ip_prefix": "198.51.100.0/24", "region": "eu-west-1", "service": "AMAZON"},
            {"ip_prefix": "198.51.100.128/25", "region": "eu-west-1", "service": "S3"}
        ], "ipv6_prefixes": []}"#,
    )
    .unwrap();
    assert_eq!(ranges.len(), 2);
    let service = |ip: &str| {
        ranges
            .lookup(ip.parse().unwrap())
            .map(|l| l.service.as_str())
    };
    assert_eq!(service("198.51.100.1"), Some("AMAZON"));
    assert_eq!(service("198.51.100.200"), Some("S3"));
    assert_eq!(service("198.51.101.0"), None);
    let err = CloudRanges::from_json(Cloud::Azure, "[]").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("inline JSON is not a valid Azure range file"),
        "{err}"
    );
}

/// The implementation the interval table replaced, kept as the reference it must agree with:
/// per (family, prefix length) a hash map from network to (priority, label), probed longest
/// first; duplicates resolved as they are added, with the priority rules written out again.
#[derive(Default)]
struct Reference {
    by_length: HashMap<(bool, u8), HashMap<IpNet, (u8, CloudLabel)>>,
    /// (is IPv6, prefix length), longest first.
    lengths: Vec<(bool, u8)>,
}

impl Reference {
    fn add(&mut self, label: CloudLabel) {
        let priority = match (label.cloud, label.service.as_str()) {
            (Cloud::Aws, "S3") => 3,
            (Cloud::Aws, "AMAZON") => 1,
            (Cloud::Aws, "EC2") => 0,
            (Cloud::Aws, _) => 2,
            (Cloud::Gcp, _) => 0,
            (Cloud::Azure, service) => match (service.is_empty(), label.region.is_empty()) {
                (false, false) => 3,
                (false, true) => 2,
                (true, false) => 1,
                (true, true) => 0,
            },
        };
        let prefix = label.prefix.trunc();
        let key = (prefix.addr().is_ipv6(), prefix.prefix_len());
        if !self.lengths.contains(&key) {
            self.lengths.push(key);
            self.lengths
                .sort_unstable_by_key(|&(_, len)| std::cmp::Reverse(len));
        }
        let table = self.by_length.entry(key).or_default();
        match table.get(&prefix) {
            Some((existing, _)) if *existing >= priority => {}
            _ => {
                table.insert(prefix, (priority, CloudLabel { prefix, ..label }));
            }
        }
    }

    fn lookup(&self, ip: IpAddr) -> Option<&CloudLabel> {
        self.lengths
            .iter()
            .filter(|(v6, _)| *v6 == ip.is_ipv6())
            .find_map(|key| {
                let network = IpNet::new(ip, key.1).ok()?.trunc();
                self.by_length[key].get(&network).map(|(_, label)| label)
            })
    }

    fn prefixes(&self) -> impl Iterator<Item = &IpNet> {
        self.by_length.values().flat_map(HashMap::keys)
    }
}

/// SplitMix64: reproducible random addresses without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn v4(&mut self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self.next() as u32))
    }

    /// Anywhere in 2000::/3, the global unicast space, where the published prefixes are.
    fn v6(&mut self) -> IpAddr {
        let bits = (u128::from(self.next()) << 64) | u128::from(self.next());
        IpAddr::V6(Ipv6Addr::from((bits >> 3) | (1 << 125)))
    }

    /// A random address inside `net`.
    fn inside(&mut self, net: &IpNet) -> IpAddr {
        match net {
            IpNet::V4(n) => {
                let host = (self.next() as u32) & u32::from(n.hostmask());
                IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
            }
            IpNet::V6(n) => {
                let random = (u128::from(self.next()) << 64) | u128::from(self.next());
                let host = random & u128::from(n.hostmask());
                IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
            }
        }
    }
}

/// The first and last address of every prefix and their neighbours outside it.
fn boundaries(prefixes: &[IpNet]) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(prefixes.len() * 4);
    for net in prefixes {
        match net {
            IpNet::V4(n) => {
                let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
                out.extend(
                    [
                        first.checked_sub(1),
                        Some(first),
                        Some(last),
                        last.checked_add(1),
                    ]
                    .into_iter()
                    .flatten()
                    .map(|a| IpAddr::V4(a.into())),
                );
            }
            IpNet::V6(n) => {
                let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
                out.extend(
                    [
                        first.checked_sub(1),
                        Some(first),
                        Some(last),
                        last.checked_add(1),
                    ]
                    .into_iter()
                    .flatten()
                    .map(|a| IpAddr::V6(a.into())),
                );
            }
        }
    }
    out
}

/// `n` addresses: a quarter each of random IPv4, random IPv6, and addresses inside random
/// published prefixes of either family.
fn mixed_addresses(prefixes: &[IpNet], n: usize, random: &mut Random) -> Vec<IpAddr> {
    (0..n)
        .map(|i| match i % 4 {
            0 => random.v4(),
            1 => random.v6(),
            _ => {
                let net = prefixes[random.below(prefixes.len())];
                random.inside(&net)
            }
        })
        .collect()
}

/// Loads `clouds` both ways and compares every boundary address and 200,000 random ones.
fn assert_matches_reference(clouds: &[Cloud]) {
    let mut builder = CloudRangesBuilder::new();
    let mut reference = Reference::default();
    for &cloud in clouds {
        let json = snapshot::json(cloud);
        for label in files::parse(cloud, &json).unwrap().labels {
            reference.add(label.clone());
            builder.add(label);
        }
    }
    let ranges = builder.build();
    let mut prefixes: Vec<IpNet> = reference.prefixes().copied().collect();
    prefixes.sort_unstable();
    assert_eq!(ranges.len(), prefixes.len());

    let mut addresses = boundaries(&prefixes);
    let boundary_count = addresses.len();
    addresses.extend(mixed_addresses(&prefixes, 200_000, &mut Random(7)));
    let mut hits = 0;
    for (i, ip) in addresses.iter().enumerate() {
        let expected = reference.lookup(*ip);
        assert_eq!(
            ranges.lookup(*ip),
            expected,
            "{clouds:?}: address #{i} {ip} (boundary addresses: {boundary_count})"
        );
        hits += usize::from(expected.is_some());
    }
    let misses = addresses.len() - hits;
    assert!(
        hits > addresses.len() / 3 && misses > addresses.len() / 10,
        "{clouds:?}: {hits} hits, {misses} misses: not a mixed sample"
    );
}

#[test]
fn flat_lookup_matches_the_reference_on_aws() {
    assert_matches_reference(&[Cloud::Aws]);
}

#[test]
fn flat_lookup_matches_the_reference_on_gcp() {
    assert_matches_reference(&[Cloud::Gcp]);
}

#[test]
fn flat_lookup_matches_the_reference_on_azure() {
    assert_matches_reference(&[Cloud::Azure]);
}

#[test]
fn flat_lookup_matches_the_reference_on_all_three() {
    assert_matches_reference(&Cloud::ALL);
}

/// `cargo test --release -p netmeter-attributor --lib cloud -- --ignored --nocapture`
#[test]
#[ignore = "timing: run in release mode with --ignored --nocapture"]
fn lookup_and_load_timing() {
    let files = range_files_dir();
    let dir = files.path();
    let started = Instant::now();
    let embedded = load(None).unwrap().table;
    let load_embedded = started.elapsed();
    let started = Instant::now();
    let ranges = load(Some(dir)).unwrap().table;
    let load_all = started.elapsed();
    assert!(ranges == embedded);
    let started = Instant::now();
    let mut azure = CloudRangesBuilder::new();
    azure
        .add_file(Cloud::Azure, &dir.join(Cloud::Azure.file_name()))
        .unwrap();
    let azure_parse = started.elapsed();
    let azure = azure.build();
    let azure_total = started.elapsed();
    println!(
        "load (decompress + parse + build, the built-in snapshot): {load_embedded:?}; from a \
         directory (read + parse + build, all three files): {load_all:?}; Azure alone: \
         {azure_total:?} ({azure_parse:?} read + parse, {:?} build); {ranges:?}, Azure {azure:?}",
        azure_total - azure_parse
    );

    let prefixes: Vec<IpNet> = ranges.labels.iter().map(|l| l.prefix).collect();
    let addresses = mixed_addresses(&prefixes, 1_000_000, &mut Random(42));
    let mut reference = Reference::default();
    for cloud in Cloud::ALL {
        let json = std::fs::read(dir.join(cloud.file_name())).unwrap();
        files::parse(cloud, &json)
            .unwrap()
            .labels
            .into_iter()
            .for_each(|l| reference.add(l));
    }
    // A tenth of the sample: the reference is slow, in a debug build very.
    let tenth = &addresses[..addresses.len() / 10];
    let hash_probing = median_of_5(|| {
        for ip in tenth {
            std::hint::black_box(reference.lookup(std::hint::black_box(*ip)));
        }
    });
    println!(
        "reference (a hash map per prefix length, the previous implementation), mixed v4+v6: \
         median of 5 runs {:.1} ns/lookup",
        hash_probing / tenth.len() as f64
    );
    for (name, sample) in [
        ("mixed v4+v6", addresses.clone()),
        (
            "v4 only",
            addresses.iter().copied().filter(IpAddr::is_ipv4).collect(),
        ),
        (
            "v6 only",
            addresses.iter().copied().filter(IpAddr::is_ipv6).collect(),
        ),
    ] {
        let hits = sample
            .iter()
            .filter(|ip| ranges.lookup(**ip).is_some())
            .count();
        let lookup_only = median_of_5(|| {
            for ip in &sample {
                std::hint::black_box(ranges.lookup(std::hint::black_box(*ip)));
            }
        });
        // As the enrichment uses it: the label is read, one more memory access per hit.
        let reading_the_label = median_of_5(|| {
            for ip in &sample {
                if let Some(label) = ranges.lookup(std::hint::black_box(*ip)) {
                    std::hint::black_box(label.cloud);
                }
            }
        });
        println!(
            "lookup, {name} ({} addresses, {:.0}% hits): median of 5 runs {:.1} ns/lookup, \
             {:.1} ns/lookup reading the label",
            sample.len(),
            100.0 * hits as f64 / sample.len() as f64,
            lookup_only / sample.len() as f64,
            reading_the_label / sample.len() as f64,
        );
    }
}

/// Median wall time of 5 runs of `run`, in nanoseconds.
fn median_of_5(mut run: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_nanos() as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

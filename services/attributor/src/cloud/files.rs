//! The providers' published file formats, read into [`CloudLabel`]s with the publication time
//! the file states, and the rule that picks one label when a file lists the same prefix
//! several times.

use std::time::SystemTime;

use ipnet::IpNet;
use serde::Deserialize;

use super::{Cloud, CloudLabel};

/// What one provider's file says.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RangeFile {
    /// Every prefix, in file order, duplicates included.
    pub labels: Vec<CloudLabel>,
    /// When the provider published the file: AWS `createDate`, GCP `creationTime` (both UTC).
    /// Azure's file states no date (`None`); so does a date in an unexpected format.
    pub published: Option<SystemTime>,
}

pub(super) fn parse(cloud: Cloud, json: &[u8]) -> Result<RangeFile, serde_json::Error> {
    match cloud {
        Cloud::Aws => parse_aws(json),
        Cloud::Gcp => parse_gcp(json),
        Cloud::Azure => parse_azure(json),
    }
}

/// AWS writes `createDate` as `2025-07-24-20-23-14` (UTC).
fn aws_date(text: &str) -> Option<SystemTime> {
    let (date, time) = (text.get(..10)?, text.get(10..)?);
    let time = time.strip_prefix('-')?.replace('-', ":");
    humantime::parse_rfc3339_weak(&format!("{date}T{time}")).ok()
}

/// GCP writes `creationTime` as `2025-07-24T19:16:28.780563` (UTC, no zone).
fn gcp_date(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// Of two labels for the same prefix, the one with the higher priority is the more useful;
/// on a tie the first one seen is kept.
///
/// - AWS lists one prefix under several services: S3 beats every other service, any named
///   service beats `AMAZON`, and `AMAZON` beats `EC2` (the catch-all for instance addresses).
/// - Azure lists one prefix in many tags: a tag with a system service and a region (e.g.
///   `Storage.KoreaCentral`) beats one with only a service, which beats one with only a region
///   (`AzureCloud.koreacentral`), which beats the global `AzureCloud`.
/// - GCP lists each prefix once.
pub(super) fn priority(label: &CloudLabel) -> u8 {
    match label.cloud {
        Cloud::Aws => match label.service.as_str() {
            "S3" => 3,
            "AMAZON" => 1,
            "EC2" => 0,
            _ => 2,
        },
        Cloud::Azure => {
            2 * u8::from(!label.service.is_empty()) + u8::from(!label.region.is_empty())
        }
        Cloud::Gcp => 0,
    }
}

/// AWS `ip-ranges.json`.
fn parse_aws(json: &[u8]) -> Result<RangeFile, serde_json::Error> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default, rename = "createDate")]
        create_date: String,
        prefixes: Vec<V4>,
        ipv6_prefixes: Vec<V6>,
    }
    #[derive(Deserialize)]
    struct V4 {
        ip_prefix: IpNet,
        region: String,
        service: String,
    }
    #[derive(Deserialize)]
    struct V6 {
        ipv6_prefix: IpNet,
        region: String,
        service: String,
    }
    let file: File = serde_json::from_slice(json)?;
    let v4 = file
        .prefixes
        .into_iter()
        .map(|p| (p.ip_prefix, p.region, p.service));
    let v6 = file
        .ipv6_prefixes
        .into_iter()
        .map(|p| (p.ipv6_prefix, p.region, p.service));
    let labels = v4
        .chain(v6)
        .map(|(prefix, region, service)| CloudLabel {
            cloud: Cloud::Aws,
            region,
            service,
            prefix,
        })
        .collect();
    Ok(RangeFile {
        labels,
        published: aws_date(&file.create_date),
    })
}

/// Google Cloud `cloud.json`; the scope is the region.
fn parse_gcp(json: &[u8]) -> Result<RangeFile, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct File {
        #[serde(default)]
        creation_time: String,
        prefixes: Vec<Entry>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        ipv4_prefix: Option<IpNet>,
        ipv6_prefix: Option<IpNet>,
        service: String,
        scope: String,
    }
    let file: File = serde_json::from_slice(json)?;
    let labels = file
        .prefixes
        .into_iter()
        .filter_map(|entry| {
            let prefix = entry.ipv4_prefix.or(entry.ipv6_prefix)?;
            Some(CloudLabel {
                cloud: Cloud::Gcp,
                region: entry.scope,
                service: entry.service,
                prefix,
            })
        })
        .collect();
    Ok(RangeFile {
        labels,
        published: gcp_date(&file.creation_time),
    })
}

/// Azure `ServiceTags_Public_*.json`; the label's service is the tag's system service.
fn parse_azure(json: &[u8]) -> Result<RangeFile, serde_json::Error> {
    #[derive(Deserialize)]
    struct File {
        values: Vec<Tag>,
    }
    #[derive(Deserialize)]
    struct Tag {
        properties: Properties,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Properties {
        #[serde(default)]
        region: String,
        #[serde(default)]
        system_service: String,
        address_prefixes: Vec<IpNet>,
    }
    let file: File = serde_json::from_slice(json)?;
    let labels = file
        .values
        .into_iter()
        .flat_map(|tag| {
            let p = tag.properties;
            p.address_prefixes
                .into_iter()
                .map(move |prefix| CloudLabel {
                    cloud: Cloud::Azure,
                    region: p.region.clone(),
                    service: p.system_service.clone(),
                    prefix,
                })
        })
        .collect();
    Ok(RangeFile {
        labels,
        published: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(cloud: Cloud, region: &str, service: &str) -> CloudLabel {
        CloudLabel {
            cloud,
            region: region.into(),
            service: service.into(),
            prefix: "10.0.0.0/8".parse().unwrap(),
        }
    }

    #[test]
    fn aws_s3_beats_named_services_beat_amazon_beats_ec2() {
        let p = |service| priority(&label(Cloud::Aws, "r", service));
        assert!(p("S3") > p("ROUTE53") && p("ROUTE53") > p("AMAZON") && p("AMAZON") > p("EC2"));
    }

    #[test]
    fn azure_service_and_region_beats_service_beats_region_beats_neither() {
        let p = |region, service| priority(&label(Cloud::Azure, region, service));
        assert!(p("kr", "AzureStorage") > p("", "AzureStorage"));
        assert!(p("", "AzureStorage") > p("kr", ""));
        assert!(p("kr", "") > p("", ""));
    }

    #[test]
    fn gcp_entries_without_a_prefix_are_skipped() {
        let json = br#"{"prefixes": [
            {"ipv4Prefix": "34.35.0.0/16", "service": "Google Cloud", "scope": "africa-south1"},
            {"service": "Google Cloud", "scope": "nowhere"},
            {"ipv6Prefix": "2600:1900:8000::/44", "service": "Google Cloud", "scope": "us-east1"}
        ]}"#;
        let file = parse(Cloud::Gcp, json).unwrap();
        let prefixes: Vec<String> = file.labels.iter().map(|l| l.prefix.to_string()).collect();
        assert_eq!(prefixes, ["34.35.0.0/16", "2600:1900:8000::/44"]);
        assert_eq!(file.published, None, "no creationTime");
    }

    fn unix_ms(time: SystemTime) -> u128 {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    }

    #[test]
    fn publication_times_as_aws_and_gcp_write_them() {
        let aws = br#"{"syncToken": "1753388594", "createDate": "2025-07-24-20-23-14",
            "prefixes": [], "ipv6_prefixes": []}"#;
        let published = parse(Cloud::Aws, aws).unwrap().published.unwrap();
        // 2025-07-24T20:23:14Z, which AWS also writes as the syncToken.
        assert_eq!(unix_ms(published), 1_753_388_594_000);
        let gcp = br#"{"creationTime": "2025-07-24T19:16:28.780563", "prefixes": []}"#;
        let published = parse(Cloud::Gcp, gcp).unwrap().published.unwrap();
        assert_eq!(unix_ms(published), 1_753_384_588_780);
        let azure = br#"{"changeNumber": 363, "values": []}"#;
        assert_eq!(parse(Cloud::Azure, azure).unwrap().published, None);
        for odd in [
            "",
            "2025-07-24",
            "2025-07-24 20:23:14",
            "yesterday",
            "2025-13-24-20-23-14",
        ] {
            assert_eq!(aws_date(odd), None, "{odd:?}");
        }
        assert_eq!(gcp_date("soon"), None);
    }
}

//! The providers' range files as they stood in July 2025, compressed into the binary
//! (`services/attributor/data/cloud-ranges/`, ~370 KB, see the README there): the table every
//! command uses for a provider unless `--cloud-ranges-dir` holds a newer file, so a fresh clone
//! and a cluster without egress attribute cloud traffic from the start.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::files::RangeFile;
use super::{Cloud, parse};

const AWS: &[u8] = include_bytes!("../../data/cloud-ranges/aws-ip-ranges.json.zst");
const GCP: &[u8] = include_bytes!("../../data/cloud-ranges/gcp-cloud.json.zst");
const AZURE: &[u8] = include_bytes!("../../data/cloud-ranges/azure-service-tags.json.zst");

/// When the snapshot's Azure file was copied, 2025-07-25T00:00:00Z, in Unix seconds: unlike
/// the AWS and GCP files it states no date (only a change number, 363), so this day stands in
/// for its publication (Microsoft publishes weekly; it came out that week).
const AZURE_COPIED_UNIX_SECONDS: u64 = 1_753_401_600;

/// The publication time of the snapshot's Azure file (see [`AZURE_COPIED_UNIX_SECONDS`]).
pub fn azure_copied() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(AZURE_COPIED_UNIX_SECONDS)
}

/// The provider's file, decompressed: exactly what the provider published.
pub fn json(cloud: Cloud) -> Vec<u8> {
    let compressed = match cloud {
        Cloud::Aws => AWS,
        Cloud::Gcp => GCP,
        Cloud::Azure => AZURE,
    };
    zstd::stream::decode_all(compressed).expect("the built-in snapshot is valid zstd")
}

/// Writes the three files into `dir` under the names a range directory uses, for tests and
/// tools that want them on disk.
pub fn write_to(dir: &Path) -> std::io::Result<()> {
    for cloud in Cloud::ALL {
        std::fs::write(dir.join(cloud.file_name()), json(cloud))?;
    }
    Ok(())
}

/// The provider's snapshot, parsed; a file that states no publication time (Azure's) gets
/// [`azure_copied`].
pub(super) fn read(cloud: Cloud) -> RangeFile {
    let mut file = parse(cloud, &json(cloud), "the built-in snapshot")
        .expect("the built-in snapshot parses (checked by the tests)");
    file.published = file.published.or_else(|| Some(azure_copied()));
    file
}

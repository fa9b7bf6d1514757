//! The one loader: for each part, the package's CSV file in `--geo-dir` if the directory has
//! one, else the snapshot built into the binary; and, per part, where it came from and how old
//! its data is, so that a stale table shows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::ranges::{Range, flatten};
use super::{GeoError, GeoPart, GeoTable, LabelInterner, Labels, csv, snapshot};

/// Where one part of the table came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GeoSource {
    /// The snapshot built into the binary, made from this package version
    /// (`@ip-location-db/asn@2.3.2026061719`).
    Snapshot { package: String },
    /// A CSV file in `--geo-dir`.
    File(PathBuf),
}

impl GeoSource {
    /// `embedded` or `dir`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            GeoSource::Snapshot { .. } => "embedded",
            GeoSource::File(_) => "dir",
        }
    }
}

impl std::fmt::Display for GeoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GeoSource::Snapshot { package } => write!(f, "the built-in snapshot of {package}"),
            GeoSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One part of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedPart {
    pub part: GeoPart,
    pub source: GeoSource,
    /// When the data was built: for the snapshot, the time the package version names
    /// (`2.3.2026061719` is 2026-06-17 19:00 UTC); for a file, its modification time (the
    /// CSV states no date; npm tarballs carry 1985-10-26, so `touch` a file unpacked from one).
    pub published: SystemTime,
    /// Labelled ranges after overlaps were resolved and equal neighbours merged.
    pub ranges: usize,
}

/// The table, and where each part came from (in [`GeoPart::ALL`] order).
#[derive(Clone, Debug)]
pub struct LoadedGeo {
    pub table: Arc<GeoTable>,
    pub parts: Vec<LoadedPart>,
}

impl GeoTable {
    /// Loads every part: the package's CSV file in `dir` when `dir` is given and has it (see
    /// [`GeoPart::file_name`]), else the built-in snapshot's. A file that is there but
    /// unreadable or broken is an error, not a reason to fall back; so is a `dir` that is not
    /// a directory. Without any file the table is [`GeoTable::builtin`], shared.
    pub fn load(dir: Option<&Path>) -> Result<LoadedGeo, GeoError> {
        let Some(dir) = dir else {
            return Ok(builtin());
        };
        if !dir.is_dir() {
            return Err(GeoError::NoDirectory {
                path: dir.to_path_buf(),
            });
        }
        let files: Vec<(GeoPart, PathBuf)> = GeoPart::ALL
            .into_iter()
            .map(|part| (part, dir.join(part.file_name())))
            .filter(|(_, path)| path.exists())
            .collect();
        if files.is_empty() {
            return Ok(builtin());
        }
        // A table of its own, so that the shared built-in one is not decoded for nothing.
        let (mut content, mut parts) = snapshot::builtin_parts();
        for (part, path) in files {
            let ranges = read_part(part, &path, content.labels_mut(part))?.ok_or_else(|| {
                GeoError::Read {
                    path: path.clone(),
                    source: std::io::ErrorKind::NotFound.into(),
                }
            })?;
            let published = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            parts[part.index()] = LoadedPart {
                part,
                source: GeoSource::File(path),
                published,
                ranges: ranges.len(),
            };
            content.ranges[part.index()] = ranges;
        }
        Ok(LoadedGeo {
            table: Arc::new(content.build()),
            parts,
        })
    }
}

fn builtin() -> LoadedGeo {
    let (table, parts) = snapshot::builtin();
    LoadedGeo {
        table: table.clone(),
        parts: parts.clone(),
    }
}

/// The part's file at `path` as disjoint ranges whose labels were added to `labels`; `None`
/// if there is no such file.
pub(super) fn read_part(
    part: GeoPart,
    path: &Path,
    labels: &mut Labels,
) -> Result<Option<Vec<Range>>, GeoError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(GeoError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let rows = csv::parse(part, path, &text, &mut LabelInterner::new(labels))?;
    Ok(Some(flatten(&rows)))
}

/// A table was loaded.
pub struct GeoLoaded<'a> {
    pub loaded: &'a LoadedGeo,
}

impl GeoLoaded<'_> {
    pub fn emit(&self) {
        let now = SystemTime::now();
        for part in &self.loaded.parts {
            let age = now.duration_since(part.published).unwrap_or_default();
            tracing::info!(
                part = part.part.name(),
                source = part.source.kind(),
                from = %part.source,
                published = %humantime::format_rfc3339_seconds(part.published),
                age_days = age.as_secs() / 86_400,
                ranges = part.ranges,
                "geo table loaded"
            );
        }
    }
}

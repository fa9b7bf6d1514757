//! The state directory: files written under a temporary name and renamed (a reader finds a whole
//! file or none), read and consumed at start, and what becomes of each logged and counted.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::format::{
    read_batches, read_connections, read_marker, write_batches, write_connections, write_marker,
};
use super::{FileKind, Gap, Header, Ignored, TableIdentity, restart_gap};
use crate::delta::DeltaTracker;
use crate::publish::EncodedBatch;

/// `--state-dir` of a running collector: where its files are, and which table it meters.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
    here: TableIdentity,
    max_age: Duration,
}

/// What the previous process left, once read (and consumed).
#[derive(Default)]
pub struct Previous {
    /// Its counters, to continue from, and where the first interval starts.
    pub restored: Option<(DeltaTracker, SystemTime)>,
    /// No usable state, but a marker: bytes went uncounted since `gap.since`.
    pub gap: Option<Gap>,
    /// Batches it could not publish, in order: to send before ours.
    pub batches: Vec<EncodedBatch>,
}

fn time_text(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl StateDir {
    /// Creates `dir` if it is missing and checks it is writable. A directory that cannot be used
    /// is logged (with why) and counted, and the collector runs without one: every start is
    /// then a baseline, as without `--state-dir`.
    pub fn open(dir: &Path, here: TableIdentity, max_age: Duration) -> Option<StateDir> {
        let usable = std::fs::create_dir_all(dir).and_then(|()| {
            // Writable? (create_dir_all succeeds on an existing read-only directory.)
            let probe = dir.join(format!(".probe.{}", std::process::id()));
            File::create(&probe)?;
            std::fs::remove_file(&probe)
        });
        if let Err(error) = usable {
            report_error(
                "open",
                &format!("cannot use --state-dir {}", dir.display()),
                &error,
                "the collector runs without saving its state, so every restart starts from a baseline and the bytes moved in between are lost",
                true,
            );
            return None;
        }
        let state = StateDir {
            dir: dir.to_path_buf(),
            here,
            max_age,
        };
        state.remove_leftovers();
        Some(state)
    }

    pub fn path(&self, kind: FileKind) -> PathBuf {
        self.dir.join(kind.file_name())
    }

    /// Temporary files of writers that died while writing (kill during a save).
    fn remove_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = [FileKind::Connections, FileKind::Batches, FileKind::Marker]
                .iter()
                .any(|k| name.starts_with(&format!("{}.tmp.", k.file_name())));
            if ours {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Opens `kind` and decodes it; with `consume`, deletes it whatever the outcome, so it is
    /// never applied twice. None if there is no such file.
    fn read<T>(
        &self,
        kind: FileKind,
        consume: bool,
        decode: impl FnOnce(BufReader<File>, u64) -> Result<T, Ignored>,
    ) -> Option<Result<T, Ignored>> {
        let path = self.path(kind);
        let file = match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => return Some(Err(Ignored::Unreadable(e))),
            Ok(file) => file,
        };
        let result = file
            .metadata()
            .map_err(Ignored::Unreadable)
            .and_then(|meta| decode(BufReader::with_capacity(1 << 20, file), meta.len()));
        if consume && let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), %error, "cannot delete the saved file after reading it");
        }
        Some(result)
    }

    /// Writes `kind` under a temporary name, then renames it: readers find a whole file or none.
    /// `durable` also syncs the file and the directory (for the state and the batches, written
    /// once; not for the marker, rewritten every interval: after a crash of the machine the boot
    /// id differs anyway). Returns the file's size.
    fn write(
        &self,
        kind: FileKind,
        durable: bool,
        encode: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
    ) -> io::Result<u64> {
        let path = self.path(kind);
        let temporary = self
            .dir
            .join(format!("{}.tmp.{}", kind.file_name(), std::process::id()));
        let written = (|| {
            let file = File::create(&temporary)?;
            let mut out = BufWriter::with_capacity(1 << 20, &file);
            encode(&mut out)?;
            out.flush()?;
            drop(out);
            if durable {
                file.sync_all()?;
            }
            let len = file.metadata()?.len();
            std::fs::rename(&temporary, &path)?;
            if durable {
                File::open(&self.dir)?.sync_all()?;
            }
            Ok(len)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }

    /// At start: reads what the previous process left, logs and counts what becomes of it, and
    /// consumes the state and the batches.
    pub fn take_previous(&self, now: SystemTime) -> Previous {
        let mut previous = Previous::default();
        let state = self.read(FileKind::Connections, true, |input, len| {
            read_connections(input, len, &self.here, now, self.max_age)
        });
        let ignored = match state {
            Some(Ok((header, tracker))) => {
                self.restored(&header, now);
                previous.restored = Some((tracker, header.time));
                None
            }
            Some(Err(reason)) => {
                self.ignored(FileKind::Connections, &reason);
                Some(reason)
            }
            None => None,
        };
        if previous.restored.is_none() {
            match self.read(FileKind::Marker, false, |input, _| read_marker(input)) {
                Some(Ok(marker)) => match restart_gap(&marker, ignored.as_ref(), &self.here, now) {
                    Ok(gap) => previous.gap = Some(gap),
                    Err(reason) => self.ignored(FileKind::Marker, &reason),
                },
                Some(Err(reason)) => self.ignored(FileKind::Marker, &reason),
                None if ignored.is_none() => tracing::info!(
                    state_dir = %self.dir.display(),
                    "no saved state: the first dump is a baseline (what moved before it is not counted)"
                ),
                None => {}
            }
        }
        match self.read(FileKind::Batches, true, |input, len| {
            read_batches(input, len, &self.here)
        }) {
            Some(Ok(batches)) => {
                self.restored_batches(&batches);
                previous.batches = batches;
            }
            Some(Err(reason)) => self.ignored(FileKind::Batches, &reason),
            None => {}
        }
        previous
    }

    fn restored(&self, header: &Header, now: SystemTime) {
        metrics::counter!(crate::metric_list::STATE_RESTORES.name).increment(1);
        let age = now.duration_since(header.time).unwrap_or_default();
        tracing::info!(
            file = %self.path(FileKind::Connections).display(),
            connections = header.records,
            saved_at = %time_text(header.time),
            age_seconds = age.as_secs_f64(),
            "continuing from the state the previous collector saved at shutdown: the first interval starts where its last ended, nothing moved in between is lost (counted in netmeter_collector_state_restores_total)"
        );
    }

    fn ignored(&self, kind: FileKind, reason: &Ignored) {
        metrics::counter!(crate::metric_list::STATE_IGNORED.name, "file" => kind.label(), "reason" => reason.metric_label())
            .increment(1);
        let consequence = match kind {
            FileKind::Connections => {
                "the first dump is a baseline: what moved since it was saved is not counted"
            }
            FileKind::Marker => "the length of a restart gap is unknown",
            FileKind::Batches => "the batches in it are not sent",
        };
        tracing::warn!(
            file = %self.path(kind).display(),
            reason = reason.metric_label(),
            "ignoring the saved {}: {reason}; {consequence} (counted in netmeter_collector_state_ignored_total)",
            kind.label()
        );
    }

    fn restored_batches(&self, batches: &[EncodedBatch]) {
        let (Some(first), Some(last)) = (batches.first(), batches.last()) else {
            return;
        };
        metrics::counter!(crate::metric_list::RESTORED_BATCHES.name)
            .increment(batches.len() as u64);
        tracing::info!(
            file = %self.path(FileKind::Batches).display(),
            batches = batches.len(),
            deltas = batches.iter().map(|b| b.deltas).sum::<usize>(),
            first_sequence = first.sequence,
            last_sequence = last.sequence,
            "sending first the batches the previous collector could not publish before its shutdown deadline, unchanged (counted in netmeter_collector_restored_batches_total)"
        );
    }

    /// After the final dump: saves the tracker's state for the next process (`since`: the final
    /// dump's start). Logs and counts the outcome.
    pub fn save_connections(&self, tracker: &DeltaTracker, since: SystemTime) {
        let started = Instant::now();
        let path = self.path(FileKind::Connections);
        match self.write(FileKind::Connections, true, |out| {
            write_connections(out, &self.here, since, tracker)
        }) {
            Ok(bytes) => tracing::info!(
                file = %path.display(),
                connections = tracker.saved_len(),
                bytes,
                seconds = started.elapsed().as_secs_f64(),
                "saved the counter state: the next collector on this node continues from it"
            ),
            Err(error) => report_error(
                "save_state",
                &format!("cannot save the counter state to {}", path.display()),
                &error,
                "the next collector starts from a baseline and reports the gap",
                true,
            ),
        }
    }

    /// At the shutdown deadline: saves the batches the broker did not acknowledge, for the next
    /// process to send first. Logs and counts the outcome; false if they could not be saved.
    pub fn save_batches(&self, batches: &[EncodedBatch]) -> bool {
        let path = self.path(FileKind::Batches);
        let deltas: usize = batches.iter().map(|b| b.deltas).sum();
        match self.write(FileKind::Batches, true, |out| {
            write_batches(out, &self.here, SystemTime::now(), batches)
        }) {
            Ok(_) => {
                metrics::counter!(crate::metric_list::SAVED_BATCHES.name)
                    .increment(batches.len() as u64);
                tracing::warn!(
                    file = %path.display(),
                    batches = batches.len(),
                    deltas,
                    "the broker did not acknowledge these batches before the shutdown deadline: saved, the next collector on this node sends them first (counted in netmeter_collector_saved_batches_total)"
                );
                true
            }
            Err(error) => {
                report_error(
                    "save_batches",
                    &format!(
                        "cannot save {} unacknowledged batches to {}",
                        batches.len(),
                        path.display()
                    ),
                    &error,
                    "they are dropped",
                    true,
                );
                false
            }
        }
    }

    /// Records that the broker acknowledged every interval up to `published_through`.
    pub fn save_marker(&self, published_through: SystemTime) -> io::Result<()> {
        self.write(FileKind::Marker, false, |out| {
            write_marker(out, &self.here, published_through)
        })
        .map(|_| ())
    }
}

/// The state directory failed us: `operation` (`open`, `save_state`, `save_batches`,
/// `save_marker`) is counted in `netmeter_collector_state_errors_total` and, with `log`, what
/// `failed`, why and what it costs is logged. The collector runs on in every case.
pub fn report_error(
    operation: &'static str,
    failed: &str,
    error: &dyn std::fmt::Display,
    consequence: &str,
    log: bool,
) {
    metrics::counter!(crate::metric_list::STATE_ERRORS.name, "operation" => operation).increment(1);
    if log {
        tracing::warn!(
            operation,
            "{failed}: {error}; {consequence} (counted in netmeter_collector_state_errors_total)"
        );
    }
}

impl Gap {
    /// Logs and counts the gap, which ends where this process started counting.
    pub fn report(&self, until: SystemTime) {
        let length = until.duration_since(self.since).unwrap_or_default();
        metrics::counter!(crate::metric_list::RESTART_GAPS.name, "reason" => self.reason)
            .increment(1);
        // Whole seconds, rounded up: a gap is never under-reported.
        metrics::counter!(crate::metric_list::RESTART_GAP_SECONDS.name)
            .increment(length.as_secs_f64().ceil() as u64);
        let why = match self.reason {
            "no_state" => {
                "previous collector stopped without saving its state (killed?)".to_string()
            }
            reason => format!("the previous collector's state was not used ({reason})"),
        };
        tracing::warn!(
            reason = self.reason,
            gap_seconds = length.as_secs_f64(),
            "{why}; bytes moved between {} and {} (gap {:.1} s) on connections alive then are not counted (netmeter_collector_restart_gaps_total, netmeter_collector_restart_gap_seconds_total)",
            time_text(self.since),
            time_text(until),
            length.as_secs_f64()
        );
    }
}

/// Once every restored connection is resolved: those that ended while no collector ran.
pub fn report_ended_between_processes(connections: u64, since: SystemTime) {
    metrics::counter!(crate::metric_list::RESTART_ENDED_CONNECTIONS.name).increment(connections);
    if connections > 0 {
        tracing::info!(
            connections,
            "connections of the restored state ended while no collector ran: their bytes after {} are unknowable and not counted (netmeter_collector_restart_ended_connections_total)",
            time_text(since)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{at, here, tracker};
    use super::*;

    #[test]
    fn files_are_replaced_whole_and_consumed_once_read() {
        let dir = std::env::temp_dir().join(format!("netmeter-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let open = || StateDir::open(&dir, here(), Duration::from_secs(600)).expect("usable");
        open();
        std::fs::write(
            dir.join("connections.state.tmp.1"),
            b"left by a killed writer",
        )
        .unwrap();
        let state = open();
        assert!(
            !dir.join("connections.state.tmp.1").exists(),
            "leftovers removed"
        );

        state.save_connections(&tracker(20), SystemTime::now());
        state.save_marker(at(0)).unwrap();
        let previous = state.take_previous(SystemTime::now());
        let (restored, _) = previous.restored.expect("restored");
        assert_eq!(restored.saved_len(), 20);
        assert!(previous.gap.is_none());
        assert!(!state.path(FileKind::Connections).exists(), "consumed");
        assert!(state.path(FileKind::Marker).exists(), "the marker stays");
        // Read again: no state any more, so the marker dates a gap.
        let again = state.take_previous(SystemTime::now());
        assert!(again.restored.is_none());
        assert_eq!(
            again.gap.map(|g| (g.since, g.reason)),
            Some((at(0), "no_state"))
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(leftovers, ["published.marker"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

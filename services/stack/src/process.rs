//! Child processes started by tests and the local stack. We end only what we started, by PID:
//! SIGTERM first, SIGKILL after a grace period, and SIGKILL on drop so a failing test leaks
//! nothing. Test children also die with the thread that started them (PR_SET_PDEATHSIG).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;

/// How a process should outlive (or not) whoever started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed when the starting thread exits: tests.
    Owned,
    /// Its own process group, outlives us: `netmeter-stack start`.
    Detached,
}

pub struct ManagedProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        lifetime: Lifetime,
    ) -> anyhow::Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        match lifetime {
            Lifetime::Owned => unsafe {
                command.pre_exec(|| {
                    // Safe in pre_exec: prctl is async-signal-safe.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            },
            Lifetime::Detached => {
                command.process_group(0);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        Ok(ManagedProcess {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `None` while running.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Polls `ready` until it holds; fails early, with the log's tail, if the process exits.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let mut exited = None;
        let ok = crate::wait_until(timeout, || {
            exited = self.child.try_wait().ok().flatten();
            exited.is_some() || ready()
        });
        match (ok, exited) {
            (true, None) => Ok(()),
            (_, Some(status)) => anyhow::bail!(
                "{} exited with {status} before it was ready; log:\n{}",
                self.name,
                self.log_tail()
            ),
            (false, None) => anyhow::bail!(
                "{} not ready after {timeout:?}; log:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.exit_status() {
            return status;
        }
        signal(self.pid(), libc::SIGTERM);
        if crate::wait_until_even_if_interrupted(grace, || self.exit_status().is_some())
            && let Some(status) = self.exit_status()
        {
            return status;
        }
        self.kill()
    }

    /// SIGKILL (also for fault injection) and reap.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("waiting for our own child")
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            self.kill();
        }
    }
}

/// Whether `pid` is a live process: it exists and is not a zombie. A process on its way out has
/// an empty `/proc/<pid>/cmdline` some time before it is a zombie, so this reads its state.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

/// Sends `sig` to `pid`; false if there is no such process.
pub fn signal(pid: u32, sig: libc::c_int) -> bool {
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// A child whose stdout we read when it is done (e.g. `conntrack -E` as a reference reader);
/// killed on drop.
pub struct KilledOnDrop(pub Child);

impl KilledOnDrop {
    /// Interrupts the child (SIGINT: it flushes and exits), then returns everything it printed.
    pub fn finish(mut self) -> String {
        signal(self.0.id(), libc::SIGINT);
        crate::wait_until_even_if_interrupted(Duration::from_secs(5), || {
            self.0.try_wait().ok().flatten().is_some()
        });
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut out = String::new();
        if let Some(mut stdout) = self.0.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        }
        out
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

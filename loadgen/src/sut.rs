//! Starts and stops the system under test (a shell command) around a run.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Values substituted into the command: `{brokers}`, `{input}`, `{scored}`, `{dlq}`,
/// `{group}`, `{run}`.
#[derive(Clone, Copy, Debug)]
pub struct Placeholders<'a> {
    pub brokers: &'a str,
    pub input: &'a str,
    pub scored: &'a str,
    pub dlq: &'a str,
    pub group: &'a str,
    pub run: &'a str,
}

pub fn expand(template: &str, values: &Placeholders<'_>) -> String {
    template
        .replace("{brokers}", values.brokers)
        .replace("{input}", values.input)
        .replace("{scored}", values.scored)
        .replace("{dlq}", values.dlq)
        .replace("{group}", values.group)
        .replace("{run}", values.run)
}

/// A running command, in its own process group so that stopping it also stops whatever it
/// started (`cargo run` starts the service as a child, for example).
#[derive(Debug)]
pub struct Sut {
    child: Option<Child>,
}

impl Sut {
    /// Runs `command` with `sh -c`, its output appended to `log`.
    pub fn start(command: &str, log: &Path) -> io::Result<Sut> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()?;
        Ok(Sut { child: Some(child) })
    }

    /// `Some(status)` if the command has already exited.
    pub fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait(),
            None => Ok(None),
        }
    }

    /// SIGTERM to the group, then SIGKILL after `grace`.
    pub fn stop(mut self, grace: Duration) -> io::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        signal_group(child.id(), "TERM");
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait()? {
                // The leader is gone; anything it left in the group goes too.
                signal_group(child.id(), "KILL");
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                signal_group(child.id(), "KILL");
                return child.wait().map(Some);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sut {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(child.id(), "KILL");
            let _ = child.wait();
        }
    }
}

/// Signals the process group led by `pid` (std has no killpg, and this avoids `unsafe`).
fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_substituted() {
        let values = Placeholders {
            brokers: "127.0.0.1:9092",
            input: "in-x",
            scored: "out-x",
            dlq: "dlq-x",
            group: "g-x",
            run: "x",
        };
        assert_eq!(
            expand(
                "pt --brokers {brokers} --input-topic {input} --output-topic {scored} \
                 --dlq {dlq} --group {group} # {run} {unknown}",
                &values
            ),
            "pt --brokers 127.0.0.1:9092 --input-topic in-x --output-topic out-x \
             --dlq dlq-x --group g-x # x {unknown}"
        );
    }

    #[test]
    fn stop_ends_the_whole_group() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("sut.log");
        // The inner sleep is a grandchild: only a group signal reaches it.
        let mut sut = Sut::start("echo started; sleep 30 & wait", &log).expect("starts");
        thread::sleep(Duration::from_millis(200));
        assert!(sut.exited().expect("status").is_none());
        let started = Instant::now();
        sut.stop(Duration::from_secs(5)).expect("stops");
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.contains("started"));
    }
}

//! A child process whose stdout is read line by line, with bounded waits and its whole output in failures.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A running child with its stdout lines; killed on drop.
pub struct Lines {
    /// The process.
    pub child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    pub transcript: Vec<String>,
    stderr: Option<tokio::task::JoinHandle<String>>,
}

impl Lines {
    /// Spawns `cmd` with piped stdout and stderr (stdin closed, killed on drop).
    pub fn spawn(mut cmd: Command) -> Lines {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the child starts");
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = r.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s).await;
            s
        });
        Lines {
            child,
            lines,
            transcript: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Reads lines until one satisfies `pred` (at most `wait`); returns the lines read, the matching one last.
    /// On a timeout or an early exit it kills the child and panics with the whole output.
    pub async fn until(
        &mut self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut read = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.transcript.push(line.clone());
                    let hit = pred(&line);
                    read.push(line);
                    if hit {
                        return read;
                    }
                }
                Ok(None) => panic!("{}", self.report(&format!("ended before {what}")).await),
                Err(_) => panic!(
                    "{}",
                    self.report(&format!("timed out waiting for {what}")).await
                ),
            }
        }
    }

    /// Stops the child and describes a failure with its whole output.
    pub async fn report(&mut self, why: &str) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let stderr = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => String::new(),
        };
        format!(
            "{why}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
            self.transcript.join("\n")
        )
    }

    /// Waits (at most `wait`) for the child to exit and returns its exit code and stderr.
    pub async fn wait_exit(&mut self, wait: Duration) -> (Option<i32>, String) {
        let status = tokio::time::timeout(wait, self.child.wait())
            .await
            .expect("the child exits in time")
            .expect("wait");
        while let Ok(line) = self.lines.try_recv() {
            self.transcript.push(line);
        }
        let stderr = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => String::new(),
        };
        (status.code(), stderr)
    }

    /// Stops the child (a process this harness started).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

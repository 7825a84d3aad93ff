//! The built binary as a child process: everything it writes (stdout and stderr, JSON log
//! lines) collected line by line, its addresses taken from the `listening` line, stopped with
//! SIGTERM and killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `portico` process.
pub struct Child {
    child: std::process::Child,
    lines: Receiver<String>,
    /// Every line read so far, stdout and stderr interleaved as they came.
    pub output: Vec<String>,
}

impl Child {
    /// Starts the binary with `args` (plus `--log-format json`) and `RUST_LOG=rust_log`.
    pub fn spawn(args: &[&str], rust_log: &str) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portico"));
        command.args(args).env("RUST_LOG", rust_log);
        Child::spawn_command(command)
    }

    /// Starts the binary with `args` (plus `--log-format json`) at its default log level
    /// (no `RUST_LOG`).
    pub fn spawn_default_log(args: &[&str]) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portico"));
        command.args(args).env_remove("RUST_LOG");
        Child::spawn_command(command)
    }

    /// Starts `command` (the binary, or a shell that execs it with its arguments), with
    /// `--log-format json` added to its arguments.
    pub fn spawn_command(mut command: Command) -> Child {
        let mut child = command
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portico");
        let (tx, lines) = channel();
        read_lines(child.stdout.take().unwrap(), tx.clone());
        read_lines(child.stderr.take().unwrap(), tx);
        Child {
            child,
            lines,
            output: Vec::new(),
        }
    }

    /// Reads lines until one is a JSON log line that `want` accepts; panics after `within`.
    pub fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "timed out waiting for {what}; output so far:\n{}",
                        self.output.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "portico exited before {what}; output:\n{}",
                        self.output.join("\n")
                    )
                }
            };
            self.output.push(line.clone());
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && want(&v)
            {
                return v;
            }
        }
    }

    /// Waits for the `listening` line; returns the first HTTP, first HTTPS and admin address.
    pub fn listening(&mut self, within: Duration) -> (SocketAddr, SocketAddr, SocketAddr) {
        let v = self.wait_for("the 'listening' line", within, |v| {
            v["message"] == "listening"
        });
        let first = |field: &str| -> SocketAddr {
            let list = v[field].as_str().unwrap_or("");
            let first = list.trim_matches(|c| c == '[' || c == ']');
            let first = first.split(',').next().unwrap_or("");
            first
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{field} in {v}"))
        };
        let admin = v["admin"].as_str().and_then(|a| a.parse().ok()).unwrap();
        (first("http"), first("https"), admin)
    }

    /// Collects whatever comes for `duration`.
    pub fn read_for(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.output.push(line),
                Err(_) => return,
            }
        }
    }

    /// Sends SIGTERM and collects the rest of the output (at most `within`, then SIGKILL).
    pub fn stop(mut self, within: Duration) -> Vec<String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.read_for(within);
        std::mem::take(&mut self.output)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `from` to its end on a thread of its own, so the pipe never fills.
fn read_lines(from: impl Read + Send + 'static, to: Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if to.send(line).is_err() {
                return;
            }
        }
    });
}

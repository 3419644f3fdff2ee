//! The real `replyflow` binary as a child process of a test (`#[path]`-included by the api and
//! mail binaries): started with a command the test prepares, its stdout and stderr collected into
//! one log, its address read from the "replyflow listening addr=…" line, stopped by a signal or
//! killed. Dropping a [`ServerProcess`] kills the process, so a failing test leaves nothing
//! running. Every wait goes through [`eventually_blocking`].
// Each test binary uses a part of these helpers.
#![allow(dead_code)]
use std::{
    io::Read,
    net::{SocketAddr, TcpStream},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use crate::app::eventually_blocking;

/// A `replyflow serve` process.
pub struct ServerProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
    /// How long it may take to listen, or to stop.
    patience: Duration,
}

impl ServerProcess {
    /// Starts `command` and waits (at most `patience`) until it logs "replyflow listening
    /// addr=…" and that address accepts TCP connections.
    pub fn start(mut command: Command, patience: Duration) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
        let log = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for pipe in [
            Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped stderr")),
        ] {
            let log = log.clone();
            readers.push(thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .expect("log lock")
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }));
        }
        let mut server = Self {
            child: Some(child),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            log,
            readers,
            patience,
        };
        server.addr = eventually_blocking(patience, || {
            if let Some(addr) = listening_addr(&server.log()) {
                return Ok(addr);
            }
            if let Some(status) = server.try_wait() {
                server.join_readers();
                panic!(
                    "the server exited with {status} before listening; its log:\n{}",
                    server.log()
                );
            }
            Err(format!(
                "the server did not log \"replyflow listening addr=…\"; its log:\n{}",
                server.log()
            ))
        });
        eventually_blocking(patience, || {
            TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).map_err(|e| {
                format!(
                    "the server logged {} but does not accept connections ({e}); its log:\n{}",
                    server.addr,
                    server.log()
                )
            })
        });
        server
    }

    /// Everything the process wrote so far, stdout and stderr.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The exit status, if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("waiting for the server"))
    }

    /// After the exit: the pipes are closed, so the readers end once they have the last lines.
    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    /// Waits for the process to end by itself; its status and whole log.
    pub fn wait_for_exit(mut self) -> (ExitStatus, String) {
        let status = eventually_blocking(self.patience, || {
            self.try_wait()
                .ok_or_else(|| format!("the server is still running; its log:\n{}", self.log()))
        });
        self.child = None;
        self.join_readers();
        (status, self.log())
    }

    /// SIGKILL, at once (no chance to finish anything).
    pub fn kill(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("child");
        child.kill().expect("SIGKILL");
        child.wait().expect("waiting for the killed server")
    }

    /// Sends SIGTERM and waits for the graceful stop; returns the exit status.
    pub fn terminate(self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends `SIG<signal>` and waits for the process to exit; returns its exit status.
    pub fn stop_with(mut self, signal: &str) -> ExitStatus {
        let pid = self.child.as_ref().expect("child").id().to_string();
        let kill = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("running kill");
        assert!(kill.success(), "kill -{signal} {pid}: {kill}");
        let status = eventually_blocking(self.patience, || {
            self.try_wait().ok_or_else(|| {
                format!(
                    "the server did not stop after SIG{signal}; its log:\n{}",
                    self.log()
                )
            })
        });
        self.child = None;
        status
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The address of the line `… replyflow listening addr=127.0.0.1:PORT` (ANSI colours removed).
pub fn listening_addr(log: &str) -> Option<SocketAddr> {
    let line = log
        .lines()
        .find(|line| line.contains("replyflow listening"))?;
    let plain = strip_ansi(line);
    let value = plain.split("addr=").nth(1)?.split_whitespace().next()?;
    value.parse().ok()
}

/// `text` without ANSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A child process killed (and reaped) when dropped: a test that fails while waiting for it
/// leaves nothing running.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Waits (at most `within`) for the process to end; its exit status.
    pub fn wait_within(&mut self, within: Duration, what: &str) -> ExitStatus {
        eventually_blocking(within, || {
            self.0
                .try_wait()
                .expect("waiting for the process")
                .ok_or_else(|| format!("{what}: still running"))
        })
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

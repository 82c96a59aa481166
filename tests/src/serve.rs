//! A real `facepipe serve` for a test: [`serve_command`] builds it (on a free port),
//! [`Server::start`] starts it and waits until it answers, and dropping the [`Server`]
//! kills it, whether the test passed or not.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::command::TestCommand;

/// How long a server may take to load the networks and say where it listens (a debug
/// build on a busy machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long it may take from then to answer `GET /healthz`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// What `facepipe serve` prints before its address, once it listens.
const LISTENING: &str = "web page and API at ";

/// `facepipe serve --registry REGISTRY --listen 127.0.0.1:0`: the system picks a free port
/// and [`Server::start`] reads which. Add options before starting it.
pub fn serve_command(registry: impl AsRef<OsStr>) -> TestCommand {
    let mut cmd = TestCommand::new();
    cmd.arg("serve")
        .arg("--registry")
        .arg(registry)
        .args(["--listen", "127.0.0.1:0"]);
    cmd
}

/// A running `facepipe serve`, killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts `cmd` (a [`serve_command`]), reads the address it prints and waits until
    /// `GET /healthz` answers 200. Its stderr goes to the test's; its stdout is read to
    /// the end, so a full pipe never blocks it.
    pub fn start(cmd: &mut TestCommand) -> Server {
        let line = cmd.line();
        cmd.cmd_mut()
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn();
        let stdout = child
            .stdout
            .take()
            .expect("stdout was set to a pipe just above");
        // Dropped (killed) on any panic below.
        let mut server = Server {
            child,
            url: String::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = text.split(LISTENING).nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.trim_end_matches('/').to_string());
                }
            }
        });
        server.url = match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(RecvTimeoutError::Timeout) => {
                panic!("`{line}` did not say where it listens within {START_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = server.child.wait();
                panic!("`{line}` ended before it listened: {status:?}")
            }
        };
        server.wait_until_healthy(&line);
        server
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's process id (for `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_until_healthy(&mut self, line: &str) {
        let address = self
            .url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("`{line}` listens at {}: not plain HTTP", self.url))
            .to_string();
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        loop {
            let answer = get(&address, "/healthz");
            if answer
                .as_deref()
                .is_ok_and(|a| a.starts_with("HTTP/1.1 200"))
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("`{line}` ended before it answered: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "`{line}` listens at {} but /healthz did not answer 200 within \
                 {HEALTH_TIMEOUT:?}: {answer:?}",
                self.url
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole answer to a plain HTTP/1.1 `GET path` at `address` (host:port).
fn get(address: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

//! Processes a test starts beside the one it checks: a [`ProcessGroup`] that ends with the
//! test, a free port to give a server, and a wait for a port to open.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child started in its own process group; the whole group is ended when this is
/// dropped (SIGTERM, then SIGKILL after 5 s), so grandchildren (`cargo lambda watch` runs
/// `cargo run`, which runs the function) end with it.
#[derive(Debug)]
pub struct ProcessGroup {
    child: Child,
    name: String,
}

impl ProcessGroup {
    /// Starts `cmd` as the leader of a new process group; `name` is for messages.
    pub fn spawn(mut cmd: Command, name: &str) -> ProcessGroup {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        ProcessGroup {
            child,
            name: name.to_string(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        // The group id is the leader's pid; `kill -SIG -- -PGID` reaches every member.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args([signal, "--", &group]).status();
    }

    fn ended_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal("-TERM");
        if !self.ended_within(Duration::from_secs(5)) {
            self.signal("-KILL");
            let _ = self.child.wait();
            eprintln!("killed {}", self.name);
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"))
}

/// Waits until something accepts connections on 127.0.0.1:`port`; panics after `timeout`
/// naming `what`.
pub fn wait_for_port(port: u16, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} did not open port {port} within {timeout:?}");
}

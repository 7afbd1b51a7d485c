//! A real mosquitto for the relay tests, started by the test itself on a
//! free port of 127.0.0.1 and killed when dropped. It never uses a system
//! broker on 1883. A missing mosquitto fails the test, it never skips.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A mosquitto broker of this test's own.
pub(crate) struct Mosquitto {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
}

/// `mosquitto` on PATH, or where Debian puts it (`/usr/sbin`, which is not
/// on every user's PATH).
fn find_mosquitto() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "mosquitto is not installed: the relay tests need a real MQTT 5 broker. \
                 Run the repository's ./test (it installs what the tests need), \
                 or: apt-get install -y mosquitto"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Mosquitto {
    /// Starts a broker on a free port and waits until it accepts.
    pub(crate) fn start() -> Self {
        let binary = find_mosquitto();
        let dir = tempfile::tempdir().unwrap();
        let mut broker = Self {
            child: None,
            port: free_port(),
            binary,
            dir,
        };
        broker.spawn();
        broker
    }

    /// The broker's port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    fn spawn(&mut self) {
        // SHARED brokers/README.md: max_queued_messages 0, or a slow
        // subscriber silently loses messages.
        let config = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nset_tcp_nodelay true\nlog_dest stderr\n",
            self.port
        );
        std::fs::write(self.config_path(), config).unwrap();
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "mosquitto exited ({status}) on port {}: {}",
                    self.port,
                    read(&self.log_path())
                );
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not accept on port {}: {}",
                self.port,
                read(&self.log_path())
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the broker (as a crash would) and starts it again on the same
    /// port, with no state: every client must reconnect and subscribe
    /// again.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

//! A private `redis-server` a test may kill and restart, as a cache without persistence
//! restarts in production: with every key gone.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use crate::gateway::free_port;

/// Whether `redis-server` can be started here; prints `SKIPPED` when not (and fails when
/// `SLUIS_REQUIRE_REDIS=1`).
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("SLUIS_REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!("SLUIS_REQUIRE_REDIS=1 but `redis-server` is not installed");
        }
        println!("SKIPPED: no `redis-server` to start a private Redis");
    }
    found
}

/// A `redis-server --port N --save '' --appendonly no`, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts it on `port` and waits until it answers.
    pub fn start(port: u16) -> RedisServer {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return RedisServer { port, child };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server on port {port} did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: nothing is saved) and waits until it is gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

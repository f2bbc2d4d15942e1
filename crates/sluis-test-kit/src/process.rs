//! The real `sluis serve` as a child process, for what only a process shows: signals,
//! the exit code, and the global subscriber with its span exporter.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Free loopback addresses for the three listeners.
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub http: SocketAddr,
}

impl Listeners {
    pub fn free() -> Listeners {
        Listeners {
            grpc: crate::free_addr(),
            admin: crate::free_addr(),
            http: crate::free_addr(),
        }
    }

    /// [`super::config_yaml`] on these addresses, with the HTTP doors on.
    pub fn config_yaml(&self) -> String {
        let admin = self.admin.to_string();
        super::config_yaml(&self.grpc.to_string(), &admin).replace(
            &format!("  admin: {admin}\n"),
            &format!("  admin: {admin}\n  http: {}\n", self.http),
        )
    }
}

/// A running `sluis serve`, killed when dropped if it is still running.
pub struct SluisProcess {
    child: Child,
    pub listeners: Listeners,
    /// stdout and stderr together.
    log: PathBuf,
}

impl SluisProcess {
    /// Starts `BINARY serve --config CONFIG` (`binary`: the test's
    /// `env!("CARGO_BIN_EXE_sluis")`) with `RUST_LOG=info` and `env`; its output goes to a
    /// file beside the config.
    pub fn spawn(
        binary: &str,
        config: &Path,
        listeners: Listeners,
        env: &[(&str, &str)],
    ) -> SluisProcess {
        let log = config.with_file_name("sluis.out");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        SluisProcess {
            child,
            listeners,
            log,
        }
    }

    /// Waits (up to 20 s) until `/readyz` answers 200.
    pub async fn wait_ready(&mut self) {
        let url = format!("http://{}/readyz", self.listeners.admin);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(response) = reqwest::get(&url).await
                && response.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "sluis exited before it was ready ({status}):\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sluis did not become ready:\n{}", self.log());
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Sends SIGHUP: reload policies and TLS files now.
    pub fn hangup(&self) {
        let sent = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits (up to 30 s) for the process to exit.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("sluis did not exit:\n{}", self.log());
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SluisProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

//! Courier as a child process, and what /proc says about it and about PostgreSQL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::RwLock;
use std::time::Duration;

/// The `courier` binary the next processes run: this build's, unless `--compare` chose another commit's.
static BINARY: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Runs `path` (another build of Courier) from now on, or this build's again with `None`.
#[allow(dead_code)] // Only the load benchmark compares builds.
pub fn use_binary(path: Option<PathBuf>) {
    *BINARY.write().expect("binary lock") = path;
}

fn binary() -> PathBuf {
    BINARY.read().expect("binary lock").clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_courier")))
}

/// CPU seconds (user + system) of one process, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set of one process in MiB (VmHWM).
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU seconds of every PostgreSQL server process on the machine (the benchmark's cluster is the busy one).
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .map(cpu_seconds)
        .sum()
}

/// Runs the `courier` CLI against `database_url` and parses its JSON answer.
pub fn cli(database_url: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(binary())
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "off")
        .output()
        .expect("courier runs");
    assert!(out.status.success(), "courier {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

pub struct Courier {
    pub child: Child,
    pub base: String,
}

impl Courier {
    /// `command` is `serve`, `api` or `worker`; a worker has no HTTP port, so it is ready once spawned.
    pub async fn start_as(command: &str, database_url: &str, port: u16, secret_key: &str, concurrency: usize) -> Self {
        Self::start_with(command, database_url, port, secret_key, concurrency, &[]).await
    }

    /// [`Courier::start_as`] with more settings, which override the benchmark's.
    pub async fn start_with(
        command: &str,
        database_url: &str,
        port: u16,
        secret_key: &str,
        concurrency: usize,
        settings: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(binary());
        cmd.arg(command)
            .env("DATABASE_URL", database_url)
            .env("COURIER_LISTEN", format!("127.0.0.1:{port}"))
            .env("COURIER_METRICS_LISTEN", "127.0.0.1:0")
            .env("COURIER_SECRET_KEY", secret_key)
            .env("COURIER_ALLOWED_TARGETS", "127.0.0.0/8")
            .env("COURIER_ALLOW_HTTP", "true")
            .env("COURIER_RATE_LIMIT", "0")
            .env("COURIER_DELIVERY_TIMEOUT", "2s")
            .env("COURIER_WORKER_CONCURRENCY", concurrency.to_string())
            .env("COURIER_DATABASE_MAX_CONNECTIONS", "40")
            .env("COURIER_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in settings {
            cmd.env(name, value);
        }
        let child = cmd.spawn().expect("courier starts");
        // Owned at once, so every path below (a panic included) stops and reaps the child in `Drop`.
        let courier = Self { child, base: format!("http://127.0.0.1:{port}") };
        if command == "worker" {
            return courier;
        }
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        for _ in 0..300 {
            if http.get(format!("{}/readyz", courier.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                return courier;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("courier did not become ready");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True once the process ended by itself (a worker that could not reach a crashed database exits non-zero).
    #[allow(dead_code)] // Only the fault suite restarts processes.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`: no chance to finish, record or release anything.
    #[allow(dead_code)] // The fault suite kills; the load benchmark never does.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        // Only a child still running is asked to stop (a reaped one's pid may belong to someone else by now).
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        }
        let _ = self.child.wait();
    }
}

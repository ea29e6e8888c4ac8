//! Real brokers for the destination tests: Debian's `redis-server` and `nats-server` (JetStream on), each started
//! on a free port of 127.0.0.1 with a password, in a temporary directory, and killed when dropped. `make test`
//! installs both on first use.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub(crate) struct Broker {
    pub(crate) port: u16,
    _child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("address").port()
}

async fn start(program: &str, args: impl FnOnce(u16, &std::path::Path) -> Vec<String>) -> Broker {
    let dir = tempfile::tempdir().expect("a directory");
    let port = free_port();
    // Debian puts nats-server in /usr/sbin, which a user's PATH may lack.
    let path = ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|dir| format!("{dir}/{program}"))
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or_else(|| program.to_owned());
    let child = Command::new(path)
        .args(args(port, dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed (make test installs it): {e}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "{program} did not start on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Broker { port, _child: child, _dir: dir }
}

/// `redis-server` with `requirepass` set to `password`, nothing persisted.
pub(crate) async fn redis(password: &str) -> Broker {
    start("redis-server", |port, dir| {
        let dir = dir.display().to_string();
        ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .into_iter()
            .chain(["--requirepass", password, "--dir", &dir])
            .map(str::to_owned)
            .collect()
    })
    .await
}

/// `nats-server -js` with a user and password.
pub(crate) async fn nats(user: &str, password: &str) -> Broker {
    start("nats-server", |port, dir| {
        let dir = dir.display().to_string();
        ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd", &dir, "--user", user, "--pass", password]
            .into_iter()
            .map(str::to_owned)
            .collect()
    })
    .await
}

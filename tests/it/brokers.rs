//! Real brokers for the destination tests: Debian's `redis-server`, `nats-server` (JetStream on) and
//! `rabbitmq-server`, each started on a free port of 127.0.0.1 with a password, in a temporary directory, and killed
//! when dropped. A broker can be stopped and started again on its port with its data (`stop`, `start_again`), as an
//! operator's restart would. `make test` installs them on first use.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub(crate) struct Broker {
    pub(crate) port: u16,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// A port for a broker, free now and likely to stay so until the broker binds it: below Linux's ephemeral range
/// (32768-60999), from which `bind(0)` and every outgoing connection draw (a port `bind(0)` handed out and gave
/// back can go to another test's broker meanwhile, and a RabbitMQ node takes seconds to bind), and never the same
/// twice in this process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    loop {
        let port = (FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

async fn start(program: &str, args: impl FnOnce(u16, &std::path::Path) -> Vec<String>) -> Broker {
    start_with(program, &[], args).await
}

async fn start_with(
    program: &str,
    env: &[(&str, String)],
    args: impl FnOnce(u16, &std::path::Path) -> Vec<String>,
) -> Broker {
    let dir = tempfile::tempdir().expect("a directory");
    let port = free_port();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            (k.to_string(), v.replace("{port}", &port.to_string()).replace("{dir}", &dir.path().display().to_string()))
        })
        .collect();
    // Debian puts nats-server in /usr/sbin, which a user's PATH may lack.
    let program = ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|dir| format!("{dir}/{program}"))
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or_else(|| program.to_owned());
    let args = args(port, dir.path());
    let mut broker = Broker { port, program, args, env, child: None, dir };
    broker.start_again().await;
    broker
}

impl Broker {
    /// Kills the broker (`kill -9`) and waits until it is gone; its data directory stays.
    pub(crate) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the broker again on its port with its data, and waits until it accepts connections.
    pub(crate) async fn start_again(&mut self) {
        self.stop().await;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} must be installed (make test installs it): {e}", self.program));
        self.child = Some(child);
        wait_for_port(self.port, &self.program).await;
    }
}

/// Waits until something accepts connections on `port` of 127.0.0.1, at most a minute (RabbitMQ, an Erlang VM,
/// takes several seconds to start on a busy machine).
pub(crate) async fn wait_for_port(port: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not start on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `redis-server` with `requirepass` set to `password`. Every write is in its append-only file before it is
/// answered (`appendfsync always`), so an acknowledged entry survives a restart.
pub(crate) async fn redis(password: &str) -> Broker {
    start("redis-server", |port, dir| {
        let dir = dir.display().to_string();
        ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]
            .into_iter()
            .chain(["--appendfsync", "always", "--requirepass", password, "--dir", &dir])
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

/// A RabbitMQ node of its own (`courier-<port>`), listening on 127.0.0.1 only, with the user `courier`. Its Erlang
/// distribution and port mapper stay on loopback too.
pub(crate) async fn rabbitmq(password: &str) -> Broker {
    rabbitmq_with(password, "").await
}

/// [`rabbitmq`] with more lines of `rabbitmq.conf`.
async fn rabbitmq_with(password: &str, more: &str) -> Broker {
    let settings = format!(
        "listeners.tcp.1 = 127.0.0.1:{{port}}\nloopback_users = none\ndefault_user = courier\ndefault_pass = {password}\n{more}"
    );
    let env = [
        ("HOME", "{dir}".to_owned()),
        ("RABBITMQ_NODENAME", "courier-{port}@localhost".to_owned()),
        ("RABBITMQ_MNESIA_BASE", "{dir}/mnesia".to_owned()),
        ("RABBITMQ_LOG_BASE", "{dir}/log".to_owned()),
        ("RABBITMQ_CONFIG_FILE", "{dir}/rabbitmq".to_owned()),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", "{dir}/enabled_plugins".to_owned()),
        ("RABBITMQ_PID_FILE", "{dir}/pid".to_owned()),
        ("RABBITMQ_DIST_PORT", free_port().to_string()),
        ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}".to_owned()),
        ("ERL_EPMD_ADDRESS", "127.0.0.1".to_owned()),
        // Makes the start script exec the VM, so killing the child kills the broker.
        ("RUNNING_UNDER_SYSTEMD", "true".to_owned()),
    ];
    start_with("/usr/lib/rabbitmq/bin/rabbitmq-server", &env, |port, dir| {
        let settings = settings.replace("{port}", &port.to_string());
        std::fs::write(dir.join("rabbitmq.conf"), settings).expect("config");
        std::fs::write(dir.join("enabled_plugins"), "[].").expect("plugins");
        Vec::new()
    })
    .await
}

/// A certificate authority and a server certificate for 127.0.0.1 it signed (EC P-256, two days), made with
/// `openssl` in a directory of their own: `ca.crt`, `server.crt`, `server.key`.
pub(crate) struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    pub(crate) fn make() -> Self {
        let dir = tempfile::tempdir().expect("a directory");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        std::fs::write(dir.path().join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("extensions");
        let steps: [Vec<&str>; 3] = [
            [
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=courier test CA"],
            ]
            .concat(),
            [&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat(),
            vec!["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
                .into_iter()
                .chain(["-out", "server.crt", "-days", "2", "-extfile", "san.ext"])
                .collect(),
        ];
        for args in steps {
            let done = std::process::Command::new("openssl")
                .args(&args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl runs");
            assert!(done.success(), "openssl {args:?}");
        }
        Self { dir }
    }

    /// The path of one of the files.
    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// [`redis`] that also takes TLS on a port of its own (returned), with `certificates`' server certificate.
pub(crate) async fn redis_tls(password: &str, certificates: &Certificates) -> (Broker, u16) {
    let tls_port = free_port();
    let broker = start("redis-server", |port, dir| {
        let dir = dir.display().to_string();
        ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .into_iter()
            .chain(["--requirepass", password, "--dir", &dir, "--tls-port", &tls_port.to_string()])
            .chain(["--tls-cert-file", &certificates.path("server.crt")])
            .chain(["--tls-key-file", &certificates.path("server.key")])
            .chain(["--tls-ca-cert-file", &certificates.path("ca.crt"), "--tls-auth-clients", "no"])
            .map(str::to_owned)
            .collect()
    })
    .await;
    wait_for_port(tls_port, "redis-server's TLS port").await;
    (broker, tls_port)
}

/// [`nats`] that offers TLS on its port beside plain text (`allow_non_tls`), with `certificates`' server
/// certificate: a client chooses TLS with a `tls://` URL.
pub(crate) async fn nats_tls(user: &str, password: &str, certificates: &Certificates) -> Broker {
    start("nats-server", |port, dir| {
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {dir:?} }}\n\
             authorization {{ user: {user:?}, password: {password:?} }}\n\
             tls {{ cert_file: {cert:?}, key_file: {key:?} }}\nallow_non_tls: true\n",
            dir = dir.display().to_string(),
            cert = certificates.path("server.crt"),
            key = certificates.path("server.key"),
        );
        std::fs::write(dir.join("nats.conf"), config).expect("config");
        vec!["-c".to_owned(), dir.join("nats.conf").display().to_string()]
    })
    .await
}

/// [`rabbitmq`] that also takes TLS (AMQPS) on a port of its own (returned), with `certificates`' server
/// certificate.
pub(crate) async fn rabbitmq_tls(password: &str, certificates: &Certificates) -> (Broker, u16) {
    let tls_port = free_port();
    let more = format!(
        "listeners.ssl.1 = 127.0.0.1:{tls_port}\nssl_options.cacertfile = {}\nssl_options.certfile = {}\n\
         ssl_options.keyfile = {}\nssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
        certificates.path("ca.crt"),
        certificates.path("server.crt"),
        certificates.path("server.key"),
    );
    let broker = rabbitmq_with(password, &more).await;
    wait_for_port(tls_port, "rabbitmq-server's TLS port").await;
    (broker, tls_port)
}

/// The Kafka-protocol broker Tansu (`make test` builds it under `.courier/tools`), storing in memory, listening on
/// a port of 127.0.0.1 and naming `advertised_host` and that port as its address in its metadata. Its data does
/// not survive [`Broker::stop`]: a test that restarts it creates its topics again.
pub(crate) async fn kafka(advertised_host: &str) -> Broker {
    let program = concat!(env!("CARGO_MANIFEST_DIR"), "/.courier/tools/tansu/bin/tansu");
    start(program, |port, _| {
        let (listener, advertised) = (format!("tcp://127.0.0.1:{port}"), format!("tcp://{advertised_host}:{port}"));
        ["broker", "--listener-url", &listener, "--advertised-listener-url", &advertised]
            .into_iter()
            .chain(["--storage-engine", "memory://tansu/", "--silent"])
            .map(str::to_owned)
            .collect()
    })
    .await
}

/// Runs `tests/fixtures/kafka_tool.py` (aiokafka, as the guide's consumer) with `args`; its standard output.
pub(crate) async fn kafka_tool(args: &[&str]) -> String {
    kafka_tool_reading(args, b"").await
}

/// [`kafka_tool`] with `input` on its standard input.
pub(crate) async fn kafka_tool_reading(args: &[&str], input: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.courier/tools/kafka-venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kafka_tool.py");
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} must be installed (make test installs it): {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).await.expect("input written");
    drop(stdin);
    let output = child.wait_with_output().await.expect("kafka_tool.py runs");
    assert!(output.status.success(), "kafka_tool.py {args:?}: {:?}", output.status);
    String::from_utf8(output.stdout).expect("utf-8")
}

//! The embedded development database: a private PostgreSQL cluster under `.courier/`.
//!
//! It uses the machine's `initdb` and `pg_ctl` (installing Debian's `postgresql` package when they are missing and we
//! are root), listens on 127.0.0.1 only on a port chosen once, and requires a password generated once.
//! PostgreSQL refuses to run as root, so when we are root the cluster runs as the `postgres` system user
//! (created when missing); if that user cannot reach `.courier/`, the data lives under `/var/lib/courier-dev/`
//! and `.courier/` records where.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The cluster's layout and how to reach it.
#[derive(Debug, Clone)]
pub struct EmbeddedDb {
    home: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
}

const DB_USER: &str = "courier";
const DB_NAME: &str = "courier";
const SYSTEM_USER: &str = "postgres";

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file());
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    versions.pop()
}

fn install_postgres() -> anyhow::Result<()> {
    eprintln!("courier: PostgreSQL binaries not found; installing Debian's `postgresql` package");
    let status = Command::new("sh")
        .arg("-c")
        .arg("DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("installing the postgresql package failed");
    }
    Ok(())
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EmbeddedDb {
    /// Finds (or installs) PostgreSQL and decides where the cluster lives; starts nothing.
    pub fn locate(home: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
        let home = home.canonicalize()?;
        let bin = match find_bin_dir() {
            Some(bin) => bin,
            None if is_root() => {
                install_postgres()?;
                find_bin_dir().context("PostgreSQL was installed but initdb is still not found")?
            }
            None => bail!(
                "PostgreSQL's initdb and pg_ctl were not found on PATH or under /usr/lib/postgresql; \
                 install PostgreSQL 15 or set DATABASE_URL"
            ),
        };
        let run_as = if is_root() { Some(SYSTEM_USER.to_owned()) } else { None };
        let mut db = Self { data: home.join("pgdata"), home, bin, run_as };
        if db.run_as.is_some() {
            db.ensure_system_user()?;
            db.data = db.reachable_data_dir()?;
        }
        Ok(db)
    }

    fn ensure_system_user(&self) -> anyhow::Result<()> {
        let exists = Command::new("id").arg(SYSTEM_USER).output().map(|o| o.status.success()).unwrap_or(false);
        if !exists {
            run(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ]))?;
        }
        Ok(())
    }

    /// `.courier/pgdata` when the system user can reach it, else a directory of its own outside the checkout.
    fn reachable_data_dir(&self) -> anyhow::Result<PathBuf> {
        let marker = self.home.join("pgdata.path");
        if let Ok(recorded) = std::fs::read_to_string(&marker) {
            return Ok(PathBuf::from(recorded.trim()));
        }
        let reachable = Command::new("runuser")
            .args(["-u", SYSTEM_USER, "--", "test", "-x"])
            .arg(&self.home)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let data = if reachable {
            self.home.join("pgdata")
        } else {
            let digest = format!(
                "{:x}",
                self.home.to_string_lossy().bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
            );
            PathBuf::from("/var/lib/courier-dev").join(digest).join("pgdata")
        };
        std::fs::write(&marker, data.to_string_lossy().as_bytes())?;
        Ok(data)
    }

    fn command(&self, program: &str) -> Command {
        // `bin` may be a directory of a few links (/usr/local/bin on some machines): a tool not linked there is
        // beside the installed `pg_ctl`.
        let mut path = self.bin.join(program);
        let installed = || std::fs::canonicalize(self.bin.join("pg_ctl")).ok()?.parent().map(|dir| dir.join(program));
        if !path.is_file()
            && let Some(beside) = installed()
        {
            path = beside;
        }
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn password_file(&self) -> PathBuf {
        self.home.join("pg.password")
    }

    fn port_file(&self) -> PathBuf {
        self.home.join("pg.port")
    }

    fn is_initialised(&self) -> bool {
        self.data.join("PG_VERSION").is_file() && self.password_file().is_file() && self.port_file().is_file()
    }

    fn initialise(&self) -> anyhow::Result<()> {
        eprintln!("courier: creating the development database cluster in {}", self.data.display());
        if self.data.exists() {
            std::fs::remove_dir_all(&self.data)?;
        }
        std::fs::create_dir_all(&self.data)?;
        let password = {
            let mut bytes = [0u8; 18];
            rand::fill(&mut bytes);
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        crate::private_file::write(&self.password_file(), password.as_bytes())?;
        // initdb reads the password from a file the cluster's user can read (chowned to it); removed right after.
        let pwfile = self.data.with_file_name("initdb.pw");
        crate::private_file::write(&pwfile, password.as_bytes())?;
        if let Some(user) = &self.run_as {
            run(Command::new("chown").args(["-R", &format!("{user}:")]).arg(&self.data).arg(&pwfile))?;
        }
        let result = run(self
            .command("initdb")
            .arg("-D")
            .arg(&self.data)
            .args(["-U", DB_USER, "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display())));
        let _ = std::fs::remove_file(&pwfile);
        result?;
        let port = free_port()?;
        std::fs::write(self.port_file(), port.to_string())?;
        // Loopback only, no unix socket in a shared directory, room for the test suite's parallel databases.
        let conf = format!(
            "\n# courier development cluster\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
             max_connections = 300\nshared_buffers = 256MB\nlog_min_messages = warning\n"
        );
        let conf_path = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text)?;
        Ok(())
    }

    pub fn port(&self) -> anyhow::Result<u16> {
        Ok(std::fs::read_to_string(self.port_file())?.trim().parse()?)
    }

    /// The URL of `database` on this cluster.
    pub fn url_for(&self, database: &str) -> anyhow::Result<String> {
        let password = std::fs::read_to_string(self.password_file())?;
        Ok(format!("postgres://{DB_USER}:{}@127.0.0.1:{}/{database}", password.trim(), self.port()?))
    }

    /// The connection URL of the development database.
    pub fn url(&self) -> anyhow::Result<String> {
        self.url_for(DB_NAME)
    }

    fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.data)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Initialises the cluster on first use, starts it unless it runs, and makes sure the database exists.
    pub async fn start(&self) -> anyhow::Result<String> {
        if !self.is_initialised() {
            self.initialise()?;
        }
        // A cluster an older version created has its password file readable by everyone: not any more.
        crate::private_file::tighten(&self.password_file())?;
        if !self.is_running() {
            let mut start = self.command("pg_ctl");
            start.arg("-D").arg(&self.data).arg("-l").arg(self.data.join("server.log"));
            // Per-statement counts and times for `make bench` (the slowest claim of each scenario), when the
            // machine's PostgreSQL has the module; a development cluster pays next to nothing for them.
            // (`bin` may be a directory of links, as /usr/local/bin is on some machines: follow `pg_ctl`'s.)
            let installed = std::fs::canonicalize(self.bin.join("pg_ctl")).ok();
            let lib = installed.as_deref().and_then(|p| p.parent()?.parent()).map(|v| v.join("lib"));
            if lib.is_some_and(|lib| lib.join("pg_stat_statements.so").is_file()) {
                start.args(["-o", "-c shared_preload_libraries=pg_stat_statements"]);
            }
            run(start.args(["-w", "-t", "60", "start"]))
                .context("starting the development PostgreSQL failed; see its server.log")?;
        }
        let admin = self.url_for("postgres")?;
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(DB_NAME)
            .fetch_optional(&mut conn)
            .await?;
        if exists.is_none() {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DB_NAME}"))).execute(&mut conn).await?;
        }
        self.url()
    }

    /// Stops the server the way a crash does (`pg_ctl -m immediate`: no checkpoint, recovery on the next start),
    /// for the fault suite.
    pub fn crash(&self) -> anyhow::Result<()> {
        run(self.command("pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "-w", "stop"]))?;
        Ok(())
    }

    pub fn stop(&self) -> anyhow::Result<()> {
        if self.is_initialised() && self.is_running() {
            run(self.command("pg_ctl").arg("-D").arg(&self.data).args(["-m", "fast", "-w", "stop"]))?;
        }
        Ok(())
    }

    /// Makes this (not yet initialised) cluster a streaming standby of `primary`, from a base backup, under the name
    /// `name` (what `synchronous_standby_names` and `pg_stat_replication` call it), and starts it. For the tests of
    /// replicas and failover; a cluster already here is replaced.
    pub async fn start_standby_of(&self, primary: &EmbeddedDb, name: &str) -> anyhow::Result<String> {
        self.stop_hard();
        if self.data.exists() {
            std::fs::remove_dir_all(&self.data)?;
        }
        let password = std::fs::read_to_string(primary.password_file())?;
        crate::private_file::write(&self.password_file(), password.trim().as_bytes())?;
        let port = match self.port() {
            Ok(port) => port,
            Err(_) => free_port()?,
        };
        std::fs::write(self.port_file(), port.to_string())?;
        let parent = self.data.parent().context("a data directory has a parent")?;
        std::fs::create_dir_all(parent)?;
        if let Some(user) = &self.run_as {
            run(Command::new("chown").arg(format!("{user}:")).arg(parent))?;
        }
        let source = format!("host=127.0.0.1 port={} user={DB_USER} password={}", primary.port()?, password.trim());
        run(self
            .command("pg_basebackup")
            .arg("-D")
            .arg(&self.data)
            .args(["-X", "stream", "-c", "fast", "-d", &source]))?;
        let conf = format!(
            "\n# standby of 127.0.0.1:{}\nport = {port}\nprimary_conninfo = '{source} application_name={name}'\n\
             synchronous_standby_names = ''\n",
            primary.port()?
        );
        let auto = self.data.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&conf);
        std::fs::write(&auto, text)?;
        std::fs::write(self.data.join("standby.signal"), "")?;
        if let Some(user) = &self.run_as {
            run(Command::new("chown").args(["-R", &format!("{user}:")]).arg(&self.data))?;
        }
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("server.log"))
            .args(["-w", "-t", "60", "start"]))
        .context("starting the standby failed; see its server.log")?;
        self.url()
    }

    /// The postmaster's process id, while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }

    /// Promotes this standby to a primary and waits until it accepts writes.
    pub fn promote(&self) -> anyhow::Result<()> {
        run(self.command("pg_ctl").arg("-D").arg(&self.data).args(["-w", "-t", "60", "promote"]))?;
        Ok(())
    }

    /// `kill -9` of the postmaster, as a dying machine does: its backends notice and exit on their own.
    pub fn kill_postmaster(&self) -> anyhow::Result<()> {
        let pid = self.postmaster_pid().context("no postmaster.pid")?;
        run(Command::new("kill").args(["-9", &pid.to_string()]))?;
        Ok(())
    }

    /// Stops the server without a checkpoint when it runs; ignores a server that does not.
    pub fn stop_hard(&self) {
        if self.data.join("postmaster.pid").is_file() {
            let _ = run(self.command("pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "-w", "stop"]));
        }
    }

    /// Stops the server and removes its files.
    pub fn destroy(&self) -> anyhow::Result<()> {
        self.stop_hard();
        if self.data.exists() {
            std::fs::remove_dir_all(&self.data)?;
        }
        Ok(())
    }
}

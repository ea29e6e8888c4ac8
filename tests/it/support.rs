//! Shared test scaffolding: fresh databases, the built binary.

use std::process::{Command, Output};

use sqlx::Connection;

/// A fresh, empty database on the test cluster; returns its URL.
pub async fn fresh_database() -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set by `make test`");
    let name = format!("courier_it_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect to DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (prefix, _) = base.rsplit_once('/').expect("URL has a database path");
    format!("{prefix}/{name}")
}

/// Runs the built `courier` binary against `database_url`, with extra environment variables.
pub fn courier(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
    cmd.args(args).env("DATABASE_URL", database_url).env("COURIER_LOG_FORMAT", "json");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("courier runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the integration guide's own `verify_signature` (tests/fixtures) on a request.
pub fn guide_accepts(secret: &str, header: &str, body: &[u8]) -> bool {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/guide_verify_signature.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(secret)
        .arg(header)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().expect("stdin").write_all(body).expect("body written");
    match child.wait().expect("python3 exits").code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("verifier crashed: {other:?}"),
    }
}

//! A primary and a streaming standby on 127.0.0.1, started for a test from PostgreSQL's own binaries: the replica
//! tests read from the standby, the failover tests kill the primary and promote it. Shared with the fault suite.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use courier::embedded_db::EmbeddedDb;
use sqlx::Connection;

pub struct Pair {
    root: PathBuf,
    nodes: [EmbeddedDb; 2],
    /// Which node is the primary now.
    primary: usize,
}

impl Pair {
    /// Node 0 a fresh primary, node 1 its standby, streaming and synchronous (a commit is on both before it returns),
    /// under `.courier/pairs/<name>-<pid>`.
    pub async fn start(name: &str) -> Self {
        let root = Path::new(".courier/pairs").join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let node = |i: usize| EmbeddedDb::locate(&root.join(format!("node{i}"))).expect("PostgreSQL binaries");
        let nodes = [node(0), node(1)];
        nodes[0].start().await.expect("the primary starts");
        let pair = Self { root, nodes, primary: 0 };
        pair.nodes[1].start_standby_of(&pair.nodes[0], "node1").await.expect("the standby starts");
        pair.wait_streaming().await;
        pair.set_synchronous(true).await;
        pair
    }

    pub fn primary(&self) -> usize {
        self.primary
    }

    pub fn standby(&self) -> usize {
        1 - self.primary
    }

    /// Both hosts in libpq's syntax, node 0 first, for the `courier` database.
    pub fn url(&self) -> String {
        self.url_listing([0, 1])
    }

    /// Both hosts in libpq's syntax, in the order given.
    pub fn url_listing(&self, order: [usize; 2]) -> String {
        let one = self.node_url(0);
        let (prefix, rest) = one.split_once("@127.0.0.1:").expect("a loopback URL");
        let (_, database) = rest.split_once('/').expect("a database");
        let port = |i: usize| self.nodes[i].port().expect("port");
        format!("{prefix}@127.0.0.1:{},127.0.0.1:{}/{database}", port(order[0]), port(order[1]))
    }

    /// Node `i` alone.
    pub fn node_url(&self, i: usize) -> String {
        self.nodes[i].url().expect("a node's URL")
    }

    pub fn node(&self, i: usize) -> &EmbeddedDb {
        &self.nodes[i]
    }

    async fn admin(&self, i: usize) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.node_url(i)).await.expect("connect to a node")
    }

    /// Waits until the primary sees its standby streaming.
    pub async fn wait_streaming(&self) {
        let begun = Instant::now();
        let mut conn = self.admin(self.primary).await;
        loop {
            let streaming: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                    .fetch_one(&mut conn)
                    .await
                    .expect("pg_stat_replication");
            if streaming > 0 {
                return;
            }
            assert!(begun.elapsed() < Duration::from_secs(30), "the standby did not stream within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes the primary wait for its standby at every commit, or stop waiting (a primary alone must).
    pub async fn set_synchronous(&self, on: bool) {
        let mut conn = self.admin(self.primary).await;
        let sql = if on {
            "ALTER SYSTEM SET synchronous_standby_names = '*'"
        } else {
            "ALTER SYSTEM RESET synchronous_standby_names"
        };
        sqlx::query(sql).execute(&mut conn).await.expect("alter system");
        sqlx::query("SELECT pg_reload_conf()").execute(&mut conn).await.expect("reload");
    }

    /// `kill -9` of the primary's postmaster.
    pub fn kill_primary(&self) {
        self.nodes[self.primary].kill_postmaster().expect("kill -9 the postmaster");
    }

    /// Promotes the standby; it is the primary from now on, alone (not synchronous) until one is attached again.
    pub async fn promote_standby(&mut self) {
        let standby = self.standby();
        self.nodes[standby].promote().expect("pg_ctl promote");
        self.primary = standby;
        self.set_synchronous(false).await;
    }

    /// The old primary, dead, comes back as the new primary's standby from a fresh base backup, and commits are
    /// synchronous again.
    pub async fn reattach_old_primary(&self) {
        let old = self.standby();
        self.nodes[old].destroy().expect("the old primary's files removed");
        self.nodes[old]
            .start_standby_of(&self.nodes[self.primary], &format!("node{old}"))
            .await
            .expect("the old primary starts as a standby");
        self.wait_streaming().await;
        self.set_synchronous(true).await;
    }

    /// Pauses (or resumes) the standby's replay: it receives WAL and applies none.
    pub async fn pause_replay(&self, paused: bool) {
        let mut conn = self.admin(self.standby()).await;
        let sql = if paused { "SELECT pg_wal_replay_pause()" } else { "SELECT pg_wal_replay_resume()" };
        sqlx::query(sql).execute(&mut conn).await.expect("replay pause");
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for node in &self.nodes {
            let _ = node.destroy();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

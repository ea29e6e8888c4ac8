//! The rules, each a function from the parsed sources to what breaks it, so `self_check` can run them on
//! broken copies.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Source, sql, syntax};

/// The one owner of every table (partitions count as their table): the only place (file, or directory ending in
/// `/`) whose SQL may insert into, update, delete from, copy into, truncate, alter or drop it.
pub(crate) const OWNERS: &[(&str, &str)] = &[
    ("tenants", "crates/courier-store/src/tenants.rs"),
    ("api_keys", "crates/courier-store/src/api_keys.rs"),
    ("portal_sessions", "crates/courier-store/src/portal_sessions.rs"),
    ("webhooks", "crates/courier-store/src/webhooks/"),
    ("events", "crates/courier-store/src/events/"),
    ("event_keys", "crates/courier-store/src/events/"),
    // The queue: every transition of a delivery (enqueue, claim, defer, release, finish, cancel, promote, expire,
    // erase) and its storage by day, in one module.
    ("deliveries", "crates/courier-scheduler/src/queue/"),
    // Deliveries handed over in memory until each is written: fan-out writes the journal, whatever writes a delivery
    // of it (or the sweep) deletes it.
    ("delivery_handovers", "crates/courier-scheduler/src/queue/"),
    ("delivery_attempts", "crates/courier-scheduler/src/queue/finish.rs"),
    // The statement `finish` runs for a batch of attempts.
    ("delivery_attempts", "crates/courier-scheduler/src/queue/record.rs"),
    // Attempts go when their deliveries are erased (no foreign key cascades across partitions).
    ("delivery_attempts", "crates/courier-scheduler/src/queue/erase.rs"),
    // A day's drop keeps the attempts of its deliveries still live, moved to the DEFAULT partition.
    ("delivery_attempts", "crates/courier-scheduler/src/queue/history.rs"),
    ("replays", "crates/courier-scheduler/src/replay/"),
    ("webhook_rate_windows", "crates/courier-scheduler/src/rate.rs"),
    ("webhook_rate_backlog", "crates/courier-scheduler/src/rate.rs"),
    ("delivery_hourly", "crates/courier-scheduler/src/hourly.rs"),
    ("ingest_rejects", "crates/courier-store/src/ingest_rejects.rs"),
];

/// What the API crate may not name: the operator's cross-tenant reads, the webhook state machine, the queue's
/// transitions by bare id (`disabling`, and `queue` itself: tenants change webhooks through `webhook_changes` and
/// replay through `replay`), the worker.
pub(crate) const API_MAY_NOT_NAME: &[&str] =
    &["operator", "Operator", "webhooks::state", "disabling", "queue", "courier_worker"];

/// The values of `DeliveryStatus` and `WebhookStatus`: SQL binds them, never spells them.
pub(crate) const STATUSES: &[&str] =
    &["waiting", "pending", "delivering", "succeeded", "failed", "cancelled", "enabled", "disabled"];

pub(crate) const MAX_FILE_LINES: usize = 400;
pub(crate) const MAX_FN_LINES: usize = 60;
/// A reason is a few words, not a token gesture.
pub(crate) const MIN_REASON_WORDS: usize = 3;
/// Production code may explain at most this many long functions; the rest are split.
pub(crate) const MAX_LONG_IN_PRODUCTION: usize = 8;

/// The table a name in SQL stands for: a table or partition of the catalog (its root), a partition built at
/// run time (`{name}` bound by `….table("parent")`, or `parent_{suffix}`), or PostgreSQL's own catalog.
pub(crate) fn resolve(
    name: &str,
    partitions: &BTreeMap<String, String>,
    catalog: &BTreeMap<String, String>,
) -> Option<String> {
    if let Some(var) = name.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
        return resolve(partitions.get(var)?, partitions, catalog);
    }
    if name.starts_with("pg_") || name.starts_with("pg_catalog.") || name.starts_with("information_schema.") {
        return Some(name.to_owned());
    }
    if name == "_sqlx_migrations" {
        return Some(name.to_owned());
    }
    if let Some(root) = catalog.get(name) {
        return Some(root.clone());
    }
    let (prefix, suffix) = name.rsplit_once('_')?;
    let runtime_suffix = suffix.starts_with('{') || (!suffix.is_empty() && suffix.chars().all(|c| c.is_ascii_digit()));
    if runtime_suffix { catalog.get(prefix).cloned() } else { None }
}

/// Writes outside their table's owner, and SQL naming a table the catalog does not know.
pub(crate) fn table_violations(sources: &[Source], catalog: &BTreeMap<String, String>) -> Vec<String> {
    let mut broken = Vec::new();
    // The CTEs a SQL fragment (a `macro_rules!` of SQL, `courier_store::insert_events`) binds, for the statements
    // that embed it (`{name}`) to read.
    let mut fragments: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for sql in sources.iter().flat_map(|s| &s.parsed.sql) {
        if let Some(name) = sql.fragment.as_deref() {
            fragments.entry(name).or_default().extend(sql::ctes(&sql::tokens(&sql.text)));
        }
    }
    for source in sources.iter().filter(|s| s.production()) {
        for sql in &source.parsed.sql {
            let embedded = |name: &str| {
                fragments.iter().any(|(f, ctes)| ctes.contains(name) && sql.text.contains(&format!("{{{f}}}")))
            };
            for reference in sql::references(&sql::tokens(&sql.text)) {
                if embedded(&reference.name) {
                    continue;
                }
                let Some(table) = resolve(&reference.name, &sql.partitions, catalog) else {
                    broken.push(format!("{}: `{}` names no table of the migrations", sql.at, reference.name));
                    continue;
                };
                if !reference.write {
                    continue;
                }
                let owners: Vec<&str> = OWNERS.iter().filter(|(t, _)| *t == table).map(|(_, o)| *o).collect();
                let owned = owners
                    .iter()
                    .any(|o| if o.ends_with('/') { source.name.starts_with(o) } else { source.name == *o });
                if !owned {
                    let who = if owners.is_empty() { "nobody".to_owned() } else { owners.join(" and ") };
                    broken.push(format!("{}: writes {table} ({}), which {who} owns", sql.at, reference.name));
                }
            }
        }
    }
    broken
}

/// SQL that spells a status instead of binding it.
pub(crate) fn status_violations(sources: &[Source]) -> Vec<String> {
    let mut broken = Vec::new();
    for source in sources.iter().filter(|s| s.production()) {
        for sql in &source.parsed.sql {
            for token in sql::tokens(&sql.text) {
                if let sql::Token::Quoted(text) = token
                    && STATUSES.contains(&text.as_str())
                {
                    broken.push(format!("{}: the status '{text}' is written, not bound", sql.at));
                }
            }
        }
    }
    broken
}

/// Paths the API crate names that reach past the owner-scoped functions.
pub(crate) fn api_violations(sources: &[Source]) -> Vec<String> {
    let api = sources.iter().filter(|s| s.name.starts_with("crates/courier-api/src/"));
    api.flat_map(|s| &s.parsed.paths)
        .filter(|(_, path)| {
            let segments: Vec<&str> = path.split("::").collect();
            API_MAY_NOT_NAME.iter().any(|banned| {
                let banned: Vec<&str> = banned.split("::").collect();
                segments.windows(banned.len()).any(|w| w == banned.as_slice())
            })
        })
        .map(|(at, path)| format!("{at}: names {path}"))
        .collect()
}

/// The queue's crates, and the binary's loops that drive them, reading a process clock where the database's
/// `now()` decides.
pub(crate) fn clock_violations(sources: &[Source]) -> Vec<String> {
    let queue = ["crates/courier-scheduler/src/", "crates/courier-store/src/", "src/app.rs"];
    let queue = sources.iter().filter(|s| queue.iter().any(|q| s.name.starts_with(q)));
    queue
        .flat_map(|s| &s.parsed.paths)
        .filter(|(_, path)| path.ends_with("Utc::now") || path.ends_with("SystemTime::now"))
        .map(|(at, path)| format!("{at}: reads the process clock ({path})"))
        .collect()
}

/// Files past [`MAX_FILE_LINES`], functions past [`MAX_FN_LINES`] without a reason of a few words, and
/// production code explaining more than [`MAX_LONG_IN_PRODUCTION`] long functions.
pub(crate) fn length_violations(sources: &[Source]) -> Vec<String> {
    let mut broken = Vec::new();
    let mut explained_in_production = Vec::new();
    for source in sources {
        if source.lines > MAX_FILE_LINES {
            broken.push(format!("{} has {} lines (at most {MAX_FILE_LINES})", source.name, source.lines));
        }
        for f in source.parsed.functions.iter().filter(|f| f.lines > MAX_FN_LINES) {
            let words = f.reason.as_deref().map_or(0, |r| r.split_whitespace().count());
            if words < MIN_REASON_WORDS {
                broken.push(format!(
                    "{}: {} fn {} has {} lines (at most {MAX_FN_LINES} without `{} <a reason>`)",
                    f.at,
                    f.visibility,
                    f.name,
                    f.lines,
                    syntax::LONG_MARKER
                ));
            } else if source.production() {
                explained_in_production.push(f.at.clone());
            }
        }
    }
    if explained_in_production.len() > MAX_LONG_IN_PRODUCTION {
        broken.push(format!(
            "{} long functions in production code (at most {MAX_LONG_IN_PRODUCTION}): {explained_in_production:?}",
            explained_in_production.len()
        ));
    }
    broken
}

/// Circles among sibling modules (files of one directory naming each other through `super::`): each is two
/// halves of one module, or a missing third that both should use.
pub(crate) fn import_circles(sources: &[Source]) -> Vec<String> {
    use std::collections::BTreeSet;
    let module =
        |name: &str| name.rsplit_once('/').map(|(dir, file)| (dir.to_owned(), file.trim_end_matches(".rs").to_owned()));
    let mut edges: BTreeSet<(String, String, String)> = BTreeSet::new();
    for source in sources {
        let Some((dir, me)) = module(&source.name) else { continue };
        for (_, path) in &source.parsed.paths {
            let Some(sibling) = path.strip_prefix("super::").and_then(|p| p.split("::").next()) else { continue };
            let exists = sources.iter().any(|s| module(&s.name) == Some((dir.clone(), sibling.to_owned())));
            if exists && sibling != me && me != "mod" {
                edges.insert((dir.clone(), me.clone(), sibling.to_owned()));
            }
        }
    }
    edges
        .iter()
        .filter(|(dir, a, b)| a < b && edges.contains(&(dir.clone(), b.clone(), a.clone())))
        .map(|(dir, a, b)| format!("{dir}: {a} and {b} use each other"))
        .collect()
}

/// Functions (and SQL fragments) only the places listed may call: each is half of a use case whose other half must
/// come with it.
pub(crate) const ONE_CALLER: &[(&str, &str)] = &[
    // An event enters the queue with its deliveries: `fanout::store_events` writes both in one statement, the
    // events' insert (`insert_events!`) opening fan-out's. Events alone (`insert_many`) are for the store's tests.
    ("insert_many", "crates/courier-store/tests/store.rs"),
    ("insert_events", "crates/courier-scheduler/src/queue/enqueue.rs"),
    ("insert_events", "crates/courier-store/src/events/mod.rs"),
    ("store_and_fan_out", "crates/courier-scheduler/src/fanout.rs"),
];

/// Calls of [`ONE_CALLER`]'s functions from anywhere else in production code.
pub(crate) fn single_caller_violations(sources: &[Source]) -> Vec<String> {
    let mut broken = Vec::new();
    for source in sources.iter().filter(|s| s.production()) {
        for (at, path) in &source.parsed.paths {
            let Some(function) = path.contains("::").then(|| path.rsplit("::").next()).flatten() else { continue };
            let callers: Vec<&str> = ONE_CALLER.iter().filter(|(f, _)| *f == function).map(|(_, c)| *c).collect();
            if !callers.is_empty() && !callers.contains(&source.name.as_str()) {
                broken.push(format!("{at}: calls {path}, which only {} may", callers.join(" and ")));
            }
        }
    }
    broken
}

/// The HTTP crate's boundaries: no SQL of its own (it calls the store and the scheduler), and no transaction
/// opened by a handler (a use case owns its transaction: `courier_scheduler::webhook_changes`, `ingest`, ...).
pub(crate) fn http_crate_violations(sources: &[Source]) -> Vec<String> {
    let api = sources.iter().filter(|s| s.name.starts_with("crates/courier-api/src/"));
    let mut broken = Vec::new();
    for source in api {
        broken.extend(source.parsed.sql.iter().map(|sql| format!("{}: SQL in the HTTP crate: {}", sql.at, sql.text)));
        // Every `.begin()` but an expensive read's turn (`state.reads.begin(tenant)`) opens a transaction.
        let begins = source.parsed.methods.iter().filter(|(_, m)| m.ends_with(".begin") && m != "reads.begin");
        broken.extend(begins.map(|(at, _)| format!("{at}: a handler opens a transaction")));
    }
    broken
}

/// The binary's layering: configuration comes from `settings` (the one reader of the environment, besides the
/// embedded database looking for PostgreSQL on `PATH`), and `app.rs` builds on nothing in `commands/`.
pub(crate) fn binary_violations(sources: &[Source]) -> Vec<String> {
    let mut broken = Vec::new();
    for source in sources.iter().filter(|s| s.production()) {
        for (at, path) in &source.parsed.paths {
            let reads_env = path.ends_with("env::var") || path.ends_with("env::var_os") || path.ends_with("env::vars");
            let allowed = source.name.starts_with("src/settings/") || source.name == "src/embedded_db.rs";
            if reads_env && !allowed {
                broken.push(format!("{at}: reads the environment ({path}); add a setting instead"));
            }
            if source.name == "src/app.rs" && (path.starts_with("crate::commands") || path.starts_with("commands::")) {
                broken.push(format!("{at}: app.rs uses {path}"));
            }
        }
    }
    broken
}

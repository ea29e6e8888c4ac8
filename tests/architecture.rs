//! ARCHITECTURE.md's invariants that a program can check, checked: which crate may depend on which, which module
//! may write which table, what the core may not use, what the API may not reach, and how long files and functions
//! grow. Each check names what broke and where, so a failure says which invariant to restore (or which document to
//! change, with a reason, when the design really changes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// DESIGN.md §2: the crates of ours each crate may depend on. A new edge is a design change.
const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("courier-core", &[]),
    ("courier-store", &["courier-core"]),
    ("courier-scheduler", &["courier-core", "courier-store"]),
    ("courier-worker", &["courier-core", "courier-scheduler"]),
    ("courier-api", &["courier-core", "courier-store", "courier-scheduler"]),
    ("courier", &["courier-core", "courier-store", "courier-scheduler", "courier-worker", "courier-api"]),
];

/// The core is pure: none of these may be among its dependencies.
const IMPURE: &[&str] = &["tokio", "sqlx", "reqwest", "hyper", "axum", "metrics", "tracing"];

/// The one owner of every table: the only place (file, or directory ending in `/`) whose SQL may insert into,
/// update or delete from it. Tests and benchmarks may set up any state they like and are not checked.
const OWNERS: &[(&str, &str)] = &[
    ("tenants", "crates/courier-store/src/tenants.rs"),
    ("api_keys", "crates/courier-store/src/api_keys.rs"),
    ("portal_sessions", "crates/courier-store/src/portal_sessions.rs"),
    ("webhooks", "crates/courier-store/src/webhooks/"),
    ("events", "crates/courier-store/src/events.rs"),
    ("event_keys", "crates/courier-store/src/events.rs"),
    // The queue: fan-out, claim, lease, record, cancel and replay are all the scheduler's.
    ("deliveries", "crates/courier-scheduler/src/"),
    // The live deliveries' partition, which the queue's statements name directly (migration 0015).
    ("deliveries_live", "crates/courier-scheduler/src/"),
    ("delivery_attempts", "crates/courier-scheduler/src/finish.rs"),
    // Attempts go when their events do (no foreign key cascades across partitions).
    ("delivery_attempts", "crates/courier-scheduler/src/retention.rs"),
    // A day's drop keeps the attempts of its deliveries still live, moved to the DEFAULT partition.
    ("delivery_attempts", "crates/courier-scheduler/src/history.rs"),
    ("replays", "crates/courier-scheduler/src/replay/"),
    ("webhook_rate_windows", "crates/courier-scheduler/src/rate.rs"),
    ("webhook_rate_backlog", "crates/courier-scheduler/src/rate.rs"),
    ("delivery_hourly", "crates/courier-scheduler/src/hourly.rs"),
];

const MAX_FILE_LINES: usize = 400;
const MAX_FN_LINES: usize = 60;
/// A function may run longer when a comment starting with this, right above it (before its doc comment and
/// attributes), says why.
const LONG_MARKER: &str = "// Long because";

/// `cargo metadata` for the workspace: each member's normal (non-dev, non-build) dependencies.
fn workspace_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let mut deps = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        let normal = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().expect("dependency name").to_owned())
            .collect();
        deps.insert(name, normal);
    }
    deps
}

/// Every `.rs` file under these directories of the repository.
fn rust_files(dirs: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for dir in dirs {
        walk(&root().join(dir), &mut out);
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

/// The tables a piece of source text writes: `INSERT INTO t`, `UPDATE t`, `DELETE FROM t` (SQL keywords in upper
/// case, as all of ours are; `FOR UPDATE` is a lock, not a write).
fn written_tables(text: &str) -> Vec<String> {
    let mut tables = Vec::new();
    for keyword in ["INSERT INTO ", "UPDATE ", "DELETE FROM "] {
        for (at, _) in text.match_indices(keyword) {
            if keyword == "UPDATE " && text[..at].trim_end().ends_with("FOR") {
                continue;
            }
            let rest = &text[at + keyword.len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() {
                tables.push(name);
            }
        }
    }
    tables
}

/// The tables the migrations create.
fn tables_in_migrations() -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("migrations")).expect("migrations").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("migration");
        for (at, _) in text.match_indices("CREATE TABLE ") {
            let rest = &text[at + 13..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            // A partition is its table's: written through it, never by name.
            let statement = rest.split(';').next().unwrap_or_default();
            if !name.is_empty() && !statement.contains("PARTITION OF") {
                tables.insert(name);
            }
        }
    }
    tables
}

/// Functions longer than [`MAX_FN_LINES`] without a reason: `(file:line, name, lines)`.
fn long_functions(path: &Path, text: &str) -> Vec<(String, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let signature = ["fn ", "pub fn ", "async fn ", "pub async fn ", "pub(crate) fn ", "pub(crate) async fn "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p).map(|rest| rest.split(['(', '<']).next().unwrap_or("")));
        let Some(name) = signature else { continue };
        let indent = &line[..line.len() - trimmed.len()];
        // The body ends at the first line that is this indentation and a closing brace.
        let closing = format!("{indent}}}");
        let Some(end) = lines[i..].iter().position(|l| *l == closing) else { continue };
        let length = end + 1;
        if length <= MAX_FN_LINES {
            continue;
        }
        // Walk up over attributes and doc comments to the reason, if there is one.
        let mut above = i;
        while above > 0 {
            let prev = lines[above - 1].trim_start();
            if prev.starts_with("///")
                || prev.starts_with("#[")
                || prev.starts_with("//") && !prev.starts_with(LONG_MARKER)
            {
                above -= 1;
            } else {
                break;
            }
        }
        let explained = above > 0 && lines[above - 1].trim_start().starts_with(LONG_MARKER);
        if !explained {
            found.push((format!("{}:{}", relative(path), i + 1), name.to_owned(), length));
        }
    }
    found
}

#[test]
fn crates_depend_only_on_what_the_design_allows() {
    let deps = workspace_dependencies();
    let mut broken = Vec::new();
    for (krate, allowed) in ALLOWED_EDGES {
        let actual = deps.get(*krate).unwrap_or_else(|| panic!("{krate} is not in the workspace"));
        for dep in actual.iter().filter(|d| d.starts_with("courier")) {
            if !allowed.contains(&dep.as_str()) {
                broken.push(format!("{krate} depends on {dep}"));
            }
        }
    }
    for krate in deps.keys() {
        assert!(ALLOWED_EDGES.iter().any(|(k, _)| k == krate), "{krate} has no row in ALLOWED_EDGES (DESIGN.md §2)");
    }
    let core = &deps["courier-core"];
    broken.extend(IMPURE.iter().filter(|d| core.contains(**d)).map(|d| format!("courier-core depends on {d}")));
    assert!(broken.is_empty(), "edges the design does not allow: {broken:#?}");
}

#[test]
fn every_table_is_written_only_by_its_owner() {
    let tables = tables_in_migrations();
    for table in &tables {
        assert!(OWNERS.iter().any(|(t, _)| t == table), "table {table} has no owner in OWNERS (ARCHITECTURE.md)");
    }
    let mut broken = Vec::new();
    for path in rust_files(&["crates", "src"]) {
        let name = relative(&path);
        if name.contains("/tests/") || name.contains("/benches/") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        for table in written_tables(&text) {
            let owners: Vec<&str> = OWNERS.iter().filter(|(t, _)| *t == table).map(|(_, o)| *o).collect();
            if owners.is_empty() {
                continue;
            }
            let owned = owners.iter().any(|o| if o.ends_with('/') { name.starts_with(o) } else { name == *o });
            if !owned {
                broken.push(format!("{name} writes {table}, which {} owns", owners.join(" and ")));
            }
        }
    }
    assert!(broken.is_empty(), "writes outside the owner: {broken:#?}");
}

#[test]
fn the_api_reaches_no_operator_or_system_only_functions() {
    let mut broken = Vec::new();
    for path in rust_files(&["crates/courier-api/src"]) {
        let text = std::fs::read_to_string(&path).expect("source");
        for forbidden in ["operator::", "webhooks::state", "courier_worker"] {
            if text.contains(forbidden) {
                broken.push(format!("{} uses {forbidden}", relative(&path)));
            }
        }
    }
    assert!(broken.is_empty(), "the API must act through the owner-scoped functions only: {broken:#?}");
}

#[test]
fn files_and_functions_stay_short() {
    let mut broken = Vec::new();
    for path in rust_files(&["crates", "src", "tests", "benches"]) {
        let text = std::fs::read_to_string(&path).expect("source");
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            broken.push(format!("{} has {lines} lines (at most {MAX_FILE_LINES})", relative(&path)));
        }
        for (at, name, length) in long_functions(&path, &text) {
            broken.push(format!("{at}: fn {name} has {length} lines (at most {MAX_FN_LINES} without `{LONG_MARKER}`)"));
        }
    }
    assert!(broken.is_empty(), "split these, or say why above them: {broken:#?}");
}

#[test]
fn the_checks_themselves_catch_what_they_look_for() {
    assert_eq!(written_tables("UPDATE webhooks SET x = 1"), vec!["webhooks"]);
    assert_eq!(written_tables("SELECT 1 FROM d FOR UPDATE SKIP LOCKED"), Vec::<String>::new());
    assert_eq!(written_tables("INSERT INTO deliveries (id) VALUES (1)"), vec!["deliveries"]);
    assert_eq!(written_tables("DELETE FROM events e USING doomed"), vec!["events"]);
    let long = format!("fn long() {{\n{}}}\n", "    let x = 1;\n".repeat(MAX_FN_LINES));
    assert_eq!(long_functions(Path::new("x.rs"), &long).len(), 1);
    let explained = format!("{LONG_MARKER} it must be.\n/// Doc.\n{long}");
    assert!(long_functions(Path::new("x.rs"), &explained).is_empty());
}

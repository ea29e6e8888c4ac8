//! ARCHITECTURE.md's invariants that a program can check, checked on the syntax tree (`syn`), not on text: which
//! crate may depend on which, what the core may link, which module may write which table (every SQL string,
//! however spelled or built, resolved to its tables), that statuses are bound rather than written, what the API
//! may not reach, that the queue reads no process clock, and how long files and functions grow. Each check names
//! what broke and where; `self_check` proves each one fails on a deliberately broken copy.

mod deps;
mod rules;
mod self_check;
mod sql;
mod syntax;

use std::collections::BTreeMap;

use rules::*;
use std::path::{Path, PathBuf};

pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// ARCHITECTURE.md, "Crates": the crates of ours each crate may depend on. A new edge is a design change.
const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("courier-core", &[]),
    ("courier-store", &["courier-core"]),
    ("courier-scheduler", &["courier-core", "courier-store"]),
    ("courier-worker", &["courier-core", "courier-scheduler"]),
    ("courier-api", &["courier-core", "courier-store", "courier-scheduler"]),
    ("courier", &["courier-core", "courier-store", "courier-scheduler", "courier-worker", "courier-api"]),
];

/// Everything the core may link, transitively: value types, serde, and pure crypto. An IO, async or telemetry
/// crate here (tokio, sqlx, reqwest, tracing, opentelemetry) breaks "core is pure".
const CORE_MAY_LINK: &[&str] = &[
    "aead",
    "aes",
    "aes-gcm",
    "base64",
    "block-buffer",
    "cfg-if",
    "chacha20",
    "chrono",
    "cipher",
    "cmov",
    "const-oid",
    "cpubits",
    "cpufeatures",
    "crypto-common",
    "ctr",
    "ctutils",
    "digest",
    "getrandom",
    "ghash",
    "hex",
    "hmac",
    "hybrid-array",
    "iana-time-zone",
    "inout",
    "ipnet",
    "itoa",
    "libc",
    "memchr",
    "num-traits",
    "polyval",
    "rand",
    "rand_core",
    "serde",
    "serde_core",
    "serde_json",
    "sha2",
    "subtle",
    "thiserror",
    "typenum",
    "universal-hash",
    "uuid",
    "zmij",
];

pub(crate) struct Source {
    pub name: String,
    pub lines: usize,
    pub parsed: syntax::Parsed,
}

impl Source {
    pub fn new(name: &str, text: &str) -> Self {
        Self { name: name.to_owned(), lines: text.lines().count(), parsed: syntax::parse(name, text) }
    }

    fn production(&self) -> bool {
        (self.name.starts_with("crates/") && self.name.contains("/src/")) || self.name.starts_with("src/")
    }
}

/// Every `.rs` file under these directories of the repository, parsed.
fn sources(dirs: &[&str]) -> Vec<Source> {
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
    let mut paths = Vec::new();
    for dir in dirs {
        walk(&root().join(dir), &mut paths);
    }
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let name = path.strip_prefix(root()).unwrap_or(path).to_string_lossy().replace('\\', "/");
            Source::new(&name, &std::fs::read_to_string(path).expect("source"))
        })
        .collect()
}

fn production_sources() -> Vec<Source> {
    sources(&["crates", "src"]).into_iter().filter(Source::production).collect()
}

/// The tables the migrations create, each mapped to its root table.
pub(crate) fn catalog() -> BTreeMap<String, String> {
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(root().join("migrations")).expect("migrations").flatten() {
        texts.push(std::fs::read_to_string(entry.path()).expect("migration"));
    }
    sql::catalog(&texts)
}

#[test]
fn the_http_crate_has_no_sql_and_opens_no_transaction() {
    let broken = http_crate_violations(&production_sources());
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn configuration_is_read_in_one_place_and_app_uses_no_command() {
    let broken = binary_violations(&production_sources());
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn each_use_case_has_one_entry() {
    let broken = single_caller_violations(&production_sources());
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn sibling_modules_use_each_other_one_way() {
    let broken = import_circles(&production_sources());
    assert!(broken.is_empty(), "import circles: {broken:#?}");
}

/// Edges of ours a member has that its row does not allow, and members without a row.
pub(crate) fn edge_violations(deps: &BTreeMap<String, std::collections::BTreeSet<String>>) -> Vec<String> {
    let mut broken = Vec::new();
    for (krate, actual) in deps {
        let Some((_, allowed)) = ALLOWED_EDGES.iter().find(|(k, _)| k == krate) else {
            broken.push(format!("{krate} has no row in ALLOWED_EDGES"));
            continue;
        };
        let ours = actual.iter().filter(|d| d.starts_with("courier"));
        broken.extend(ours.filter(|d| !allowed.contains(&d.as_str())).map(|d| format!("{krate} depends on {d}")));
    }
    broken
}

/// Crates the core links that are not on [`CORE_MAY_LINK`].
pub(crate) fn impure_links(linked: &std::collections::BTreeSet<String>) -> Vec<String> {
    linked.iter().filter(|c| !CORE_MAY_LINK.contains(&c.as_str())).cloned().collect()
}

/// Tables of the catalog that no row of [`OWNERS`] names.
pub(crate) fn unowned_tables(catalog: &BTreeMap<String, String>) -> Vec<String> {
    let tables = catalog.values().filter(|t| *t != sql::VIEW);
    tables.filter(|table| !OWNERS.iter().any(|(t, _)| t == table)).cloned().collect()
}

#[test]
fn crates_depend_only_on_what_the_design_allows() {
    let broken = edge_violations(&deps::direct());
    assert!(broken.is_empty(), "edges the design does not allow: {broken:#?}");
}

#[test]
fn the_core_links_only_pure_crates() {
    let impure = impure_links(&deps::transitive("courier-core"));
    assert!(impure.is_empty(), "courier-core links crates outside CORE_MAY_LINK: {impure:?}");
}

#[test]
fn every_table_is_written_only_by_its_owner() {
    let catalog = catalog();
    let unowned = unowned_tables(&catalog);
    assert!(unowned.is_empty(), "tables without an owner in OWNERS (ARCHITECTURE.md): {unowned:?}");
    let broken = table_violations(&production_sources(), &catalog);
    assert!(broken.is_empty(), "writes outside the owner, or tables unknown: {broken:#?}");
}

#[test]
fn statuses_are_bound_never_written() {
    let broken = status_violations(&production_sources());
    assert!(broken.is_empty(), "bind DeliveryStatus / WebhookStatus instead: {broken:#?}");
}

#[test]
fn the_api_reaches_no_operator_or_system_only_functions() {
    let broken = api_violations(&production_sources());
    assert!(broken.is_empty(), "the API must act through the owner-scoped functions only: {broken:#?}");
}

#[test]
fn the_queue_reads_only_the_database_clock() {
    let broken = clock_violations(&production_sources());
    assert!(broken.is_empty(), "compute times in SQL (`now()` plus the Clock's skew): {broken:#?}");
}

#[test]
fn files_and_functions_stay_short() {
    let broken = length_violations(&sources(&["crates", "src", "tests", "benches"]));
    assert!(broken.is_empty(), "split these, or say why above them: {broken:#?}");
}

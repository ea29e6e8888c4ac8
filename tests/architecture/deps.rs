//! The dependency graph as `cargo metadata` resolves it: each workspace member's direct normal dependencies, and
//! every crate a member pulls in at build time, transitively.

use std::collections::{BTreeMap, BTreeSet};

fn metadata(args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(args)
        .current_dir(crate::root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("metadata is JSON")
}

/// Each member's normal (not dev, not build) dependencies, by name.
pub fn direct() -> BTreeMap<String, BTreeSet<String>> {
    let metadata = metadata(&["--no-deps"]);
    let mut deps = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let normal = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().expect("dependency name").to_owned())
            .collect();
        deps.insert(package["name"].as_str().expect("name").to_owned(), normal);
    }
    deps
}

/// The platform this test runs on, as `rustc` names it.
fn host() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = std::process::Command::new(rustc).arg("-vV").output().expect("rustc -vV runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc names its host").to_owned()
}

/// Every crate `member` links on this platform, through normal dependencies only (proc macros and build
/// scripts run at build time and are not part of what it does).
pub fn transitive(member: &str) -> BTreeSet<String> {
    let metadata = metadata(&["--filter-platform", &host()]);
    let name_of = |id: &str| id_name(&metadata, id);
    let nodes: BTreeMap<&str, &serde_json::Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    let start = nodes.keys().find(|id| name_of(id) == member).unwrap_or_else(|| panic!("{member} not found"));
    let (mut seen, mut todo) = (BTreeSet::new(), vec![*start]);
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let normal = dep["dep_kinds"].as_array().expect("kinds").iter().any(|k| k["kind"].is_null());
            let pkg = dep["pkg"].as_str().expect("pkg");
            if normal && !is_proc_macro(&metadata, pkg) && seen.insert(pkg) {
                todo.push(pkg);
            }
        }
    }
    seen.into_iter().map(name_of).collect()
}

fn package<'a>(metadata: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    metadata["packages"].as_array().expect("packages").iter().find(|p| p["id"] == id).expect("package of id")
}

fn id_name(metadata: &serde_json::Value, id: &str) -> String {
    package(metadata, id)["name"].as_str().expect("name").to_owned()
}

fn is_proc_macro(metadata: &serde_json::Value, id: &str) -> bool {
    package(metadata, id)["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .any(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "proc-macro")))
}

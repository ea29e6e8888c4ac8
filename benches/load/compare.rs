//! `--compare <rev>`: another commit built in a worktree of its own, then both builds run the same scenarios
//! alternately (this, base; base, this; this, base) on the same cluster, and the ratios of their medians printed.
//! Machines differ by 2× from one session to the next; two builds measured side by side in one run do not.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value, json};

use crate::measure::percentile;
use crate::{Args, process};

/// Where the other commit is checked out and built: under `target/`, so it is never committed and a second
/// comparison reuses the first one's build.
const ROOT: &str = "target/compare";

fn sh(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed");
}

/// Checks `rev` out into a worktree and builds its `courier` in release mode; returns the binary.
pub fn build(rev: &str) -> PathBuf {
    let root = std::env::current_dir().expect("cwd").join(ROOT);
    let tree = root.join("src");
    if !tree.join(".git").exists() {
        let _ = std::fs::remove_dir_all(&tree);
        sh(Command::new("git").args(["worktree", "add", "--detach", "--force"]).arg(&tree).arg(rev));
    } else {
        sh(Command::new("git").arg("-C").arg(&tree).args(["checkout", "--quiet", "--detach", rev]));
    }
    eprintln!("compare: building {rev} in {}", tree.display());
    sh(Command::new("cargo")
        .args(["build", "--quiet", "--release", "--bin", "courier"])
        .current_dir(&tree)
        .env("CARGO_TARGET_DIR", root.join("target")));
    root.join("target/release/courier")
}

/// The runs of one build, in the order they ran.
pub struct Runs {
    pub label: &'static str,
    pub binary: Option<PathBuf>,
    pub results: Vec<Map<String, Value>>,
}

/// The order two builds run in, round by round: each goes first as often as the other, give or take one.
pub fn order(round: usize) -> [usize; 2] {
    if round.is_multiple_of(2) { [0, 1] } else { [1, 0] }
}

/// The figures of a scenario that compare: where a scenario measured several phases, the contended one.
fn headline<'a>(scenario: &str, r: &'a Value) -> &'a Value {
    match scenario {
        "limited" => &r["beside_limited_backlog"],
        "tenants" => &r["beside_hanging_tenant"],
        "fairness" => &r["beside_dead_webhook"],
        _ => r,
    }
}

const FIGURES: [(&str, &[&str]); 9] = [
    ("deliveries/s", &["deliveries_per_s"]),
    ("p50 ms", &["latency_ms", "p50"]),
    ("p99 ms", &["latency_ms", "p99"]),
    ("rows/dlv", &["rows_per_delivery"]),
    ("WAL B/dlv", &["wal_bytes_per_delivery"]),
    ("commits/dlv", &["commits_per_delivery"]),
    ("CPU ms/dlv", &["cpu_ms_per_delivery"]),
    ("claim max ms", &["slowest_claim_ms"]),
    ("drain/s", &["drain_deliveries_per_s"]),
];

fn median(runs: &Runs, scenario: &str, path: &[&str]) -> Option<f64> {
    let mut values: Vec<f64> = runs
        .results
        .iter()
        .filter_map(|r| r.get(scenario))
        .filter_map(|r| path.iter().fold(headline(scenario, r), |v, k| &v[*k]).as_f64())
        .collect();
    values.sort_by(f64::total_cmp);
    (!values.is_empty()).then(|| percentile(&values, 50.0))
}

/// Prints, per scenario and figure, each build's median and this build's over the base's; returns the same as JSON.
pub fn report(this: &Runs, base: &Runs, rev: &str) -> Value {
    let mut out = Map::new();
    eprintln!("\ncompare: this build against {rev}, medians of {} rounds", this.results.len());
    eprintln!("{:<10} {:<13} {:>12} {:>12} {:>8}", "scenario", "figure", this.label, base.label, "ratio");
    let scenarios: Vec<String> = this.results.first().map(|r| r.keys().cloned().collect()).unwrap_or_default();
    for scenario in scenarios {
        let mut figures = Map::new();
        for (name, path) in FIGURES {
            let (Some(a), Some(b)) = (median(this, &scenario, path), median(base, &scenario, path)) else {
                continue;
            };
            let ratio = a / b;
            eprintln!("{scenario:<10} {name:<13} {a:>12.2} {b:>12.2} {ratio:>8.2}");
            figures.insert(name.to_owned(), json!({"this": a, "base": b, "ratio": ratio}));
        }
        out.insert(scenario, Value::Object(figures));
    }
    Value::Object(out)
}

/// True when `rev` names a commit of this repository.
pub fn exists(rev: &str) -> bool {
    Command::new("git")
        .args(["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")])
        .current_dir(Path::new("."))
        .status()
        .is_ok_and(|s| s.success())
}

/// `--compare <rev>`: both builds, alternately, `args.rounds` times each.
pub async fn run(cluster: &str, args: &Args, rev: &str) {
    assert!(exists(rev), "--compare {rev}: no such commit");
    let mut builds = [
        Runs { label: "this", binary: None, results: Vec::new() },
        Runs { label: "base", binary: Some(build(rev)), results: Vec::new() },
    ];
    for round in 0..args.rounds {
        for which in order(round) {
            let build = &mut builds[which];
            eprintln!("compare: round {} of {}, {} build", round + 1, args.rounds, build.label);
            process::use_binary(build.binary.clone());
            let results = crate::run_all(cluster, args).await;
            crate::report::print_table(&results);
            build.results.push(results);
        }
    }
    process::use_binary(None);
    let [this, base] = &builds;
    let ratios = report(this, base, rev);
    println!(
        "{}",
        json!({"compare": rev, "rounds": args.rounds, "figures": ratios,
                          "this": this.results, "base": base.results})
    );
}

//! The table on stderr: one row per scenario, and a line of its own for the scenarios that measure something else.

use serde_json::Value;

pub fn row(name: &str, r: &Value) -> String {
    let f = |v: &Value| v.as_f64().map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".to_owned());
    let n = |v: &Value| if v.is_null() { "-".to_owned() } else { v.to_string() };
    format!(
        "{name:<10} {:>10} {:>12} {:>8} {:>8} {:>8} {:>8} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        f(&r["ingest_events_per_s"]),
        f(&r["deliveries_per_s"]),
        f(&r["latency_ms"]["p50"]),
        f(&r["latency_ms"]["p90"]),
        f(&r["latency_ms"]["p99"]),
        f(&r["latency_ms"]["max"]),
        n(&r["duplicates"]),
        n(&r["missing"]),
        f(&r["courier_peak_rss_mib"]),
        f(&r["courier_cpu_s"]),
        f(&r["cpu_ms_per_delivery"]),
        f(&r["rows_per_delivery"]),
        f(&r["wal_bytes_per_delivery"]),
        f(&r["commits_per_delivery"]),
        f(&r["slowest_claim_ms"]),
    )
}

/// The columns of [`row`]. Per delivery (…/d): CPU of Courier and PostgreSQL, and PostgreSQL's rows written, WAL
/// bytes and commits; then the slowest claim.
fn print_header() {
    let heads = ["ingest/s", "deliveries/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "dup", "miss", "RSS MiB", "CPU s"];
    let [a, b, c, d, e, f, g, h, i, j] = heads;
    let [k, l, m, n, o] = ["CPUms/d", "rows/d", "WAL/d", "commit/d", "claim ms"];
    eprintln!(
        "{:<10} {a:>10} {b:>12} {c:>8} {d:>8} {e:>8} {f:>8} {g:>5} {h:>5} {i:>8} {j:>8} {k:>8} {l:>8} {m:>8} {n:>8} {o:>8}",
        "scenario"
    );
}

/// Prints every scenario's figures.
pub fn print_table(results: &serde_json::Map<String, Value>) {
    print_header();
    for (name, r) in results {
        if name == "backlog" {
            eprintln!(
                "backlog: drained {} of {} at {:.0} deliveries/s; claim {:.3} ms with no finished rows, {:.3} ms with {}",
                r["drained"],
                r["pending"],
                r["drain_deliveries_per_s"].as_f64().unwrap_or(0.0),
                r["claim_ms_no_finished_rows"].as_f64().unwrap_or(f64::NAN),
                r["claim_ms_with_finished_rows"].as_f64().unwrap_or(f64::NAN),
                r["finished_rows"]
            );
        } else if name == "logs" {
            eprintln!("logs: {} deliveries of one tenant over 30 days; page latency through the API (ms):", r["rows"]);
            if let Some(filters) = r["pages"].as_object() {
                for (filter, t) in filters {
                    eprintln!(
                        "  {filter:<28} p50 {:>7.1}  p99 {:>7.1}  rows/page {:>5.1}",
                        t["p50_ms"].as_f64().unwrap_or(f64::NAN),
                        t["p99_ms"].as_f64().unwrap_or(f64::NAN),
                        t["rows_per_page"].as_f64().unwrap_or(0.0)
                    );
                }
            }
        } else if name == "history" {
            eprintln!(
                "history: {} deliveries of {} tenants; claim {} ms; one day deleted in {} s; database {}",
                r["rows"], r["tenants"], r["claim_ms"], r["retention_one_day"]["seconds"], r["database_size"]
            );
        } else if name == "portal" {
            print_portal(r);
        } else if name == "ordered" {
            print_ordered(r);
        } else if name == "tenants" {
            eprintln!("{}", row("ten-solo", &r["solo"]));
            eprintln!("{}", row("ten-hang", &r["beside_hanging_tenant"]));
            eprintln!(
                "tenants: tenant B's healthy webhook keeps {:.0} % of its solo throughput beside tenant A's {} hanging deliveries",
                r["healthy_throughput_ratio"].as_f64().unwrap_or(0.0) * 100.0,
                r["hanging_deliveries"]
            );
        } else if name == "brokers" {
            for (kind, r) in r.as_object().into_iter().flatten() {
                eprintln!("{}", row(&format!("to-{kind}"), r));
            }
        } else if name == "limited" {
            print_limited(r);
        } else if name == "fairness" {
            eprintln!("{}", row("fair-solo", &r["solo"]));
            eprintln!("{}", row("fair-dead", &r["beside_dead_webhook"]));
            eprintln!(
                "fairness: healthy webhook keeps {:.0} % of its solo throughput",
                r["healthy_throughput_ratio"].as_f64().unwrap_or(0.0) * 100.0
            );
        } else {
            eprintln!("{}", row(name, r));
        }
    }
}

fn print_limited(r: &Value) {
    eprintln!("{}", row("lim-solo", &r["solo"]));
    eprintln!("{}", row("lim-back", &r["beside_limited_backlog"]));
    eprintln!(
        "limited: tenant B's p50 is {:.2}× its solo figure beside tenant A's {} deliveries behind 1/s; \
         {:.2} rows written per A delivery while B ran ({} A delivered)",
        r["p50_ratio"].as_f64().unwrap_or(f64::NAN),
        r["backlog"],
        r["rows_per_a_backlog_delivery"].as_f64().unwrap_or(f64::NAN),
        r["a_delivered_during_b"]
    );
}

fn print_ordered(r: &Value) {
    for side in ["ordered", "unordered"] {
        let o = &r[side];
        eprintln!(
            "ordered: {side:<9} {} of {} delivered in {} requests, {:.0} deliveries/s, {} inversions",
            o["delivered"],
            o["events"],
            o["requests"],
            o["deliveries_per_s"].as_f64().unwrap_or(0.0),
            o["inversions"]
        );
    }
    eprintln!(
        "ordered: throughput ratio {:.2}; claim {:.3} ms with 5,000 due heads, {:.3} ms with 200,000 waiting behind them",
        r["ordered_throughput_ratio"].as_f64().unwrap_or(0.0),
        r["ordered"]["claim_ms_due_heads"].as_f64().unwrap_or(f64::NAN),
        r["ordered"]["claim_ms_due_heads_and_waiting"].as_f64().unwrap_or(f64::NAN)
    );
}

fn print_portal(r: &Value) {
    eprintln!(
        "portal: {} deliveries of one tenant over 30 days; page latency (ms), target p99 < {}:",
        r["rows"], r["target_ms"]
    );
    if let Some(pages) = r["pages"].as_object() {
        for (page, t) in pages {
            eprintln!(
                "  {page:<28} p50 {:>7.1}  p99 {:>7.1}",
                t["p50_ms"].as_f64().unwrap_or(f64::NAN),
                t["p99_ms"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
}

//! A test of the test: each rule, run on a deliberately broken copy, reports it.

use crate::rules::{
    api_violations, binary_violations, clock_violations, http_crate_violations, import_circles, length_violations,
    single_caller_violations, status_violations, table_violations,
};
use crate::{Source, catalog, edge_violations, impure_links, unowned_tables};

fn body(lines: usize) -> String {
    "    let x = 1;\n".repeat(lines)
}

#[test]
fn a_long_function_of_any_visibility_needs_a_reason_of_a_few_words() {
    let long = format!("pub(super) fn long() {{\n{}}}\n", body(64));
    let broken = length_violations(&[Source::new("crates/courier-store/src/x.rs", &long)]);
    assert!(broken.iter().any(|b| b.contains("pub(super) fn long")), "{broken:?}");
    let bare = format!("// Long because\n/// Doc.\n{long}");
    assert_eq!(length_violations(&[Source::new("crates/courier-store/src/x.rs", &bare)]).len(), 1);
    let explained = format!("// Long because it is one story.\n/// Doc.\n#[inline]\n{long}");
    assert!(length_violations(&[Source::new("crates/courier-store/src/x.rs", &explained)]).is_empty());
    let nine: String = (0..9).map(|i| explained.replace("fn long", &format!("fn long{i}"))).collect();
    let broken = length_violations(&[Source::new("crates/courier-store/src/x.rs", &nine)]);
    assert!(broken.iter().any(|b| b.contains("long functions in production code")), "{broken:?}");
    let method = format!("impl X {{\n    fn m(&self) {{\n{}    }}\n}}\n", body(61));
    assert_eq!(length_violations(&[Source::new("tests/x.rs", &method)]).len(), 1);
}

#[test]
fn a_write_outside_the_owner_is_found_however_it_is_spelled() {
    let catalog = catalog();
    let broken_copies = [
        "fn f() { q(\"insert\n   into webhooks (id) values ($1)\"); }",
        "fn f() { q(\"Update Webhooks Set url = $1\"); }",
        "fn f() { q(concat!(\"DELETE \", \"FROM deliveries_done WHERE id = $1\")); }",
        "fn f() { q(&format!(\"TRUNCATE {}\", \"x\")); q(\"TRUNCATE events\"); }",
        "fn f() { let t = day.table(\"events\"); q(&format!(\"DROP TABLE {t}\")); }",
        "fn f() { q(\"ALTER TABLE delivery_attempts DETACH PARTITION x\"); }",
        "fn f() { q(\"COPY tenants FROM STDIN\"); }",
        "fn f() { q(&format!(\"DELETE FROM events_{day} WHERE true\")); }",
    ];
    for copy in broken_copies {
        let broken = table_violations(&[Source::new("crates/courier-api/src/x.rs", copy)], &catalog);
        assert!(broken.iter().any(|b| b.contains("owns")), "not caught: {copy}: {broken:?}");
    }
    let unknown = "fn f() { q(&format!(\"DELETE FROM {table} WHERE true\")); q(\"SELECT 1 FROM nowhere\"); }";
    let broken = table_violations(&[Source::new("crates/courier-scheduler/src/x.rs", unknown)], &catalog);
    assert_eq!(broken.len(), 2, "{broken:?}");
    let fine = "fn f() { q(\"WITH w AS (SELECT 1) SELECT x FROM w JOIN webhooks h ON true FOR UPDATE OF h\"); \
                q(\"SELECT extract(epoch FROM now()), a IS DISTINCT FROM b FROM deliveries_live\"); }";
    assert!(table_violations(&[Source::new("crates/courier-scheduler/src/x.rs", fine)], &catalog).is_empty());
}

#[test]
fn a_cte_is_known_only_to_the_statements_that_embed_its_fragment() {
    let catalog = catalog();
    let fragment = "macro_rules! stored { () => { \"WITH fresh AS (SELECT 1 FROM webhooks)\" }; }";
    let embeds = "fn f() { q(concat!(stored!(), \" SELECT * FROM fresh\")); }";
    let does_not = "fn g() { q(\"SELECT * FROM fresh\"); }";
    let sources = [
        Source::new("crates/courier-store/src/webhooks/x.rs", fragment),
        Source::new("crates/courier-scheduler/src/a.rs", embeds),
        Source::new("crates/courier-scheduler/src/b.rs", does_not),
    ];
    let broken = table_violations(&sources, &catalog);
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].starts_with("crates/courier-scheduler/src/b.rs"), "{broken:?}");
}

#[test]
fn a_status_spelled_in_sql_is_found() {
    let copy = "fn f() { q(\"UPDATE deliveries SET status = 'cancelled' WHERE id = $1\"); }";
    assert_eq!(status_violations(&[Source::new("crates/courier-scheduler/src/x.rs", copy)]).len(), 1);
}

#[test]
fn the_api_naming_an_operator_path_is_found() {
    for copy in [
        "use courier_scheduler::logs::Visibility; fn f() { g(Visibility::Operator { tenant: None }); }",
        "use courier_store::operator; fn f() {}",
        "fn f() { courier_store::webhooks::state::disable(); }",
        "use courier_store::webhooks::state::{disable}; fn f() {}",
    ] {
        let broken = api_violations(&[Source::new("crates/courier-api/src/x.rs", copy)]);
        assert!(!broken.is_empty(), "not caught: {copy}");
    }
}

#[test]
fn the_queue_reading_a_process_clock_is_found() {
    let copy = "fn f() { let now = chrono::Utc::now(); }";
    assert_eq!(clock_violations(&[Source::new("crates/courier-scheduler/src/x.rs", copy)]).len(), 1);
}

#[test]
fn two_sibling_modules_using_each_other_are_found() {
    let page = Source::new("crates/courier-api/src/portal/page.rs", "use super::session::Viewer; fn f() {}");
    let session = Source::new("crates/courier-api/src/portal/session.rs", "use super::page::layout; fn g() {}");
    assert_eq!(import_circles(&[page, session]).len(), 1);
    let page = Source::new("crates/courier-api/src/portal/page.rs", "fn f() {}");
    let session = Source::new("crates/courier-api/src/portal/session.rs", "use super::page::layout; fn g() {}");
    assert!(import_circles(&[page, session]).is_empty());
}

#[test]
fn a_second_way_into_the_queue_is_found() {
    let copy = "fn f() { courier_store::events::insert_many(conn, owner, &events); }";
    assert_eq!(single_caller_violations(&[Source::new("crates/courier-scheduler/src/x.rs", copy)]).len(), 1);
    let owner = "fn f() { enqueue::store_and_fan_out(conn, &batch, &routes, None); }";
    assert!(single_caller_violations(&[Source::new("crates/courier-scheduler/src/fanout.rs", owner)]).is_empty());
    let fragment = "fn f() { q(concat!(courier_store::insert_events!(), \" SELECT 1 FROM new_events\")); }";
    assert_eq!(single_caller_violations(&[Source::new("crates/courier-scheduler/src/x.rs", fragment)]).len(), 1);
    let embedder = Source::new("crates/courier-scheduler/src/queue/enqueue.rs", fragment);
    assert!(single_caller_violations(&[embedder]).is_empty());
}

#[test]
fn sql_or_a_transaction_in_the_http_crate_is_found() {
    let copy = "async fn h(state: S) { let mut tx = state.pool.begin().await?; q(\"SELECT 1 FROM webhooks\"); }";
    assert_eq!(http_crate_violations(&[Source::new("crates/courier-api/src/routes/x.rs", copy)]).len(), 2);
}

#[test]
fn the_environment_read_outside_settings_or_app_using_a_command_is_found() {
    let env = "fn f() { let x = std::env::var(\"COURIER_X\"); }";
    assert_eq!(binary_violations(&[Source::new("src/app.rs", env)]).len(), 1);
    let command = "use crate::commands::dev; fn f() {}";
    assert_eq!(binary_violations(&[Source::new("src/app.rs", command)]).len(), 1);
    assert!(binary_violations(&[Source::new("src/settings/mod.rs", env)]).is_empty());
}

#[test]
fn a_forbidden_edge_an_impure_link_and_an_unowned_table_are_found() {
    let set = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<std::collections::BTreeSet<String>>();
    let mut deps = std::collections::BTreeMap::new();
    deps.insert("courier-api".to_owned(), set(&["courier-store", "courier-worker", "axum"]));
    deps.insert("courier-extra".to_owned(), set(&[]));
    let broken = edge_violations(&deps);
    assert!(broken.iter().any(|b| b == "courier-api depends on courier-worker"), "{broken:?}");
    assert!(broken.iter().any(|b| b.contains("courier-extra has no row")), "{broken:?}");
    assert_eq!(impure_links(&set(&["serde", "tokio"])), vec!["tokio".to_owned()]);
    let mut catalog = catalog();
    catalog.insert("shadow_queue".to_owned(), "shadow_queue".to_owned());
    assert_eq!(unowned_tables(&catalog), vec!["shadow_queue".to_owned()]);
}

//! Abusive input against `courier serve` as a process, where its memory can be measured.

use courier_core::Scope;

use crate::lifecycle::{Serve, http, keys};
use crate::support::fresh_database;

/// The peak a `courier serve` process may reach while it is sent four 16 MiB batches of tiny objects at once,
/// twice: it holds at most four large bodies at a time, never turns one into millions of JSON trees, and never
/// reads a body for a key that may not post events. (Before: 2.7 GiB.)
const PEAK_RSS_BOUND_MIB: f64 = 200.0;

fn tiny_objects_batch() -> Vec<u8> {
    let limit = courier_api::BATCH_BODY_LIMIT;
    let mut body = b"{\"events\":[".to_vec();
    while body.len() + 10 < limit {
        body.extend_from_slice(b"{\"\":0},");
    }
    body.pop();
    body.extend_from_slice(b"]}");
    assert!(body.len() <= limit && body.len() > limit - 64);
    body
}

async fn post_batches(base: &str, key: &str, body: &[u8]) -> Vec<Result<(u16, String), String>> {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (url, key, body) = (format!("{base}/api/v1/events/batch"), key.to_owned(), body.to_vec());
        calls.spawn(async move {
            let res = http()
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = res.status().as_u16();
            Ok((status, res.text().await.unwrap_or_default()))
        });
    }
    calls.join_all().await
}

#[tokio::test]
async fn sixteen_mib_batches_of_tiny_objects_stay_within_a_memory_bound() {
    let url = fresh_database().await;
    let keys = keys(&url, &[&[Scope::WebhooksRead], &[Scope::EventsWrite]]).await;
    let serve = Serve::start(&url, "5s");
    serve.wait_ready(&http()).await;
    let body = tiny_objects_batch();

    // A key without events:write: refused before the body is read (a client may see the connection closed while
    // it is still sending; it never sees anything but the 403).
    for (status, text) in post_batches(&serve.base, &keys[0], &body).await.into_iter().flatten() {
        assert_eq!(status, 403, "{text}");
    }
    // A key that may post: each batch is refused at its 1,001st item, naming the field.
    for answer in post_batches(&serve.base, &keys[1], &body).await {
        let (status, text) = answer.expect("an answer");
        assert_eq!(status, 422, "{text}");
        assert!(text.contains("\"field\":\"events\"") && text.contains("1 to 1000"), "{text}");
    }
    let peak = serve.peak_rss_mib();
    eprintln!("courier serve peak RSS after eight 16 MiB batches: {peak:.0} MiB");
    assert!(peak < PEAK_RSS_BOUND_MIB, "peak RSS {peak:.0} MiB, bound {PEAK_RSS_BOUND_MIB} MiB");
}

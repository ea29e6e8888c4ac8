//! Forwarding one relayed delivery to the developer's local target, as a real delivery would arrive there.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// How long the local target may take; under Courier's own attempt timeout (`COURIER_DELIVERY_TIMEOUT`, 15 s by
/// default), so the answer arrives in time.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// What Courier records of the local answer.
const MAX_BODY: usize = 4096;

#[derive(Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    to: reqwest::Url,
}

impl Forwarder {
    pub fn new(to: reqwest::Url) -> anyhow::Result<Self> {
        // No redirects, as Courier follows none; the target is the developer's own, so no SSRF guard here.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FORWARD_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Self { client, to })
    }

    /// POSTs the delivery in `frame` and returns the `result` frame for Courier; prints one line.
    pub async fn forward(&self, frame: &Value) -> Value {
        let started = Instant::now();
        let mut request = self.client.post(self.to.clone()).body(frame["body"].as_str().unwrap_or_default().to_owned());
        for pair in frame["headers"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (pair[0].as_str(), pair[1].as_str()) {
                request = request.header(name, value);
            }
        }
        let line = |outcome: &str| {
            let (event_type, event_id) = (frame["event_type"].as_str(), frame["event_id"].as_str());
            let ms = started.elapsed().as_millis();
            println!(
                "{}  {:<16} {}  → {outcome}  ({ms} ms)",
                super::now(),
                event_type.unwrap_or("?"),
                event_id.unwrap_or("?")
            );
        };
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                line(&format!("unreachable: {err}"));
                return super::unreachable(frame, err.to_string(), err.is_timeout());
            }
        };
        let status = response.status().as_u16();
        if !(100..=599).contains(&status) {
            line(&format!("status {status} is not HTTP"));
            return super::unreachable(frame, format!("the target answered status {status}"), false);
        }
        let (mut body, mut truncated) = (Vec::new(), false);
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                body.truncate(MAX_BODY);
                truncated = true;
                break;
            }
        }
        line(&status.to_string());
        let body = base64::engine::general_purpose::STANDARD.encode(body);
        json!({"type": "result", "delivery_id": frame["delivery_id"], "attempt": frame["attempt"], "status": status,
               "body": body, "truncated": truncated})
    }
}

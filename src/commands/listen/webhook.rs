//! The relay webhook `courier listen` receives through: the first one of the key's tenant and environment (every
//! key of them shares it), or a new one.

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The id of the key's relay webhook (created when it has none), its event filter set to `events` when given.
pub async fn find_or_create(api: &str, key: &str, events: &[String]) -> anyhow::Result<String> {
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{api}/api/v1/webhooks?limit=100");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page = call(http.get(url).bearer_auth(key)).await?;
        let relay = page["data"].as_array().into_iter().flatten().find(|w| w["destination"]["type"] == "relay");
        if let Some(relay) = relay {
            let id = relay["id"].as_str().context("a webhook without an id")?.to_owned();
            // This run's filter (every event when --events is absent), and on: a disabled relay receives nothing.
            let events: Vec<&str> =
                if events.is_empty() { vec!["*"] } else { events.iter().map(String::as_str).collect() };
            let change = json!({"filter": {"events": events}, "status": "enabled"});
            call(with_json(http.patch(format!("{api}/api/v1/webhooks/{id}")).bearer_auth(key), &change)).await?;
            return Ok(id);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut body = json!({"destination": {"type": "relay"}, "description": "courier listen"});
    if !events.is_empty() {
        body["filter"] = json!({"events": events});
    }
    let created = call(with_json(http.post(format!("{api}/api/v1/webhooks")).bearer_auth(key), &body)).await?;
    Ok(created["id"].as_str().context("the created webhook has no id")?.to_owned())
}

fn with_json(request: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    request.header("Content-Type", "application/json").body(body.to_string())
}

/// Sends `request`; a non-2xx answer is an error carrying Courier's message.
async fn call(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await.context("cannot reach Courier")?;
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        let details = body["error"]["details"].to_string();
        bail!("Courier answered {status}: {message} {details}");
    }
    Ok(body)
}

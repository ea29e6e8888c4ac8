//! `GET /api/v1/webhooks/{id}/listen`: the WebSocket a `courier listen` holds open for a relay webhook. Each
//! delivery this process's worker attempts for the webhook is sent down as JSON; the listener POSTs it to the
//! developer's local port and sends back what that port answered, which the worker records as the attempt.
//!
//! Messages, all JSON text frames:
//! - to the listener: `{"type": "ready", "webhook_id", "secret"}` once, then
//!   `{"type": "delivery", "delivery_id", "event_id", "event_type", "headers": [[name, value], …], "body"}`;
//! - from the listener: `{"type": "result", "delivery_id", "status", "body" (base64, at most 4 KiB),
//!   "truncated"}` or `{"type": "result", "delivery_id", "error"}` when its target could not be reached.
//!
//! Not in the OpenAPI document: OpenAPI cannot describe a WebSocket's messages; this comment and the README do.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use base64::Engine;
use courier_core::{ResponseBody, Scope, WebhookSecret};
use courier_scheduler::relay::{Listening, RelayAnswer};
use courier_store::webhooks;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::webhooks::parse_webhook_id;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The largest frame a listener may send: a result carries at most 4 KiB of body, base64-encoded.
const MAX_FRAME: usize = 64 * 1024;

/// How often the session pings the listener, so proxies keep the connection and a dead peer is noticed.
const PING_EVERY: Duration = Duration::from_secs(20);

/// Listen to a relay webhook's deliveries (WebSocket; `courier listen` speaks it).
pub async fn listen(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let owner = principal.require(Scope::WebhooksWrite)?;
    let id = parse_webhook_id(&id)?;
    let webhook = webhooks::get(&state.pool, owner, &id).await?.ok_or_else(|| ApiError::not_found("webhook"))?;
    if webhook.destination.as_ref().and_then(|d| d["type"].as_str()) != Some("relay") {
        return Err(ApiError::invalid(
            "id",
            "not a relay webhook (create one with {\"destination\": {\"type\": \"relay\"}})",
        ));
    }
    let relays = state.relays.clone().ok_or_else(|| {
        ApiError::conflict("this process runs no worker to hand deliveries to a listener; connect to `courier serve`")
    })?;
    let upgrade = upgrade.map_err(|_| ApiError::bad_request("connect with a WebSocket upgrade"))?;
    let secret = webhooks::signing_secret(&state.pool, &state.key, owner, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    let listening = relays.listen(id);
    Ok(upgrade.max_message_size(MAX_FRAME).on_upgrade(move |socket| session(socket, listening, secret)))
}

/// A listener's session: deliveries down, answers up, until either side leaves or a newer listener replaces it.
async fn session(mut socket: WebSocket, mut listening: Listening, secret: WebhookSecret) {
    let ready = serde_json::json!({"type": "ready", "secret": secret.expose()});
    if socket.send(Message::Text(ready.to_string().into())).await.is_err() {
        return;
    }
    // Answers not yet given; dropping one (the session ends) tells the worker the listener left.
    let mut waiting: HashMap<String, oneshot::Sender<RelayAnswer>> = HashMap::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            relayed = listening.deliveries.recv() => {
                let Some(relayed) = relayed else {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                };
                let message = serde_json::json!({
                    "type": "delivery", "delivery_id": relayed.delivery_id, "event_id": relayed.event_id,
                    "event_type": relayed.event_type, "headers": relayed.headers,
                    "body": String::from_utf8_lossy(&relayed.body),
                });
                if socket.send(Message::Text(message.to_string().into())).await.is_err() {
                    return;
                }
                waiting.insert(relayed.delivery_id, relayed.answer);
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    // Only this webhook's deliveries wait here, so a listener cannot answer for another's.
                    if let Some((id, answer)) = parse_result(&text)
                        && let Some(waiter) = waiting.remove(&id)
                    {
                        let _ = waiter.send(answer);
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct ResultFrame {
    #[serde(rename = "type")]
    kind: String,
    delivery_id: String,
    status: Option<u16>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    truncated: bool,
    error: Option<String>,
}

/// A listener's `result` frame as the delivery it answers and the answer; `None` for anything else.
fn parse_result(text: &str) -> Option<(String, RelayAnswer)> {
    let frame: ResultFrame = serde_json::from_str(text).ok()?;
    if frame.kind != "result" {
        return None;
    }
    let answer = match (frame.status, frame.error) {
        (Some(status), None) if (100..=599).contains(&status) => {
            let mut body = base64::engine::general_purpose::STANDARD.decode(frame.body).ok()?;
            let truncated = frame.truncated || body.len() > ResponseBody::MAX_BYTES;
            body.truncate(ResponseBody::MAX_BYTES);
            RelayAnswer::Response { status, body, truncated }
        }
        (None, Some(error)) => RelayAnswer::Unreachable(error.chars().take(512).collect()),
        _ => return None,
    };
    Some((frame.delivery_id, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_results_and_ignores_anything_else() {
        let ok = r#"{"type":"result","delivery_id":"dlv_1","status":201,"body":"b2s=","truncated":false}"#;
        let expected = RelayAnswer::Response { status: 201, body: b"ok".to_vec(), truncated: false };
        assert_eq!(parse_result(ok), Some(("dlv_1".to_owned(), expected)));
        let down = r#"{"type":"result","delivery_id":"dlv_2","error":"connection refused"}"#;
        assert_eq!(
            parse_result(down),
            Some(("dlv_2".to_owned(), RelayAnswer::Unreachable("connection refused".into())))
        );
        for bad in [
            r#"{"type":"result","delivery_id":"dlv_3","status":42}"#,
            r#"{"type":"result","delivery_id":"dlv_3","status":200,"error":"both"}"#,
            r#"{"type":"hello","delivery_id":"dlv_3","status":200}"#,
            r#"{"type":"result","delivery_id":"dlv_3","status":200,"body":"not base64!"}"#,
            "not json",
        ] {
            assert_eq!(parse_result(bad), None, "{bad}");
        }
    }
}

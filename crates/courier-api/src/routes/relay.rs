//! `GET /api/v1/webhooks/{id}/listen`: the WebSocket a `courier listen` holds open for a relay webhook. Each
//! delivery this process's worker attempts for the webhook is sent down as JSON; the listener POSTs it to the
//! developer's local port and sends back what that port answered, which the worker records as the attempt.
//!
//! Messages, all JSON text frames:
//! - to the listener: `{"type": "ready", "webhook_id", "secret"}` once, then
//!   `{"type": "delivery", "delivery_id", "attempt", "event_id", "event_type", "headers": [[name, value], …],
//!   "body"}`;
//! - from the listener: `{"type": "result", "delivery_id", "attempt", "status", "body" (base64, at most 4 KiB),
//!   "truncated"}`, or `{"type": "result", "delivery_id", "attempt", "error", "timeout"}` when its target could not
//!   be reached (`timeout`: it did not answer in time).
//!
//! The session closes with code 4001 when a newer listener of the same webhook replaces it (the listener should
//! stop, not reconnect), and 4003 when its key, the key's scope or the webhook is gone (checked every 20 s).
//!
//! Not in the OpenAPI document: OpenAPI cannot describe a WebSocket's messages; this comment and the README do.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use courier_core::{ResponseBody, Scope, WebhookId, WebhookSecret};
use courier_scheduler::relay::{Listening, QUEUE, RelayAnswer};
use courier_store::webhooks;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::webhooks::parse_webhook_id;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The largest frame a listener may send: a result carries at most 4 KiB of body, base64-encoded.
const MAX_FRAME: usize = 64 * 1024;

/// How often the session pings the listener and checks the key and the webhook again.
const PING_EVERY: Duration = Duration::from_secs(20);

/// How long one frame may take to go out before the listener counts as gone.
const SEND_WAIT: Duration = Duration::from_secs(10);

/// Close codes the listener acts on.
const REPLACED: u16 = 4001;
const UNAUTHORISED: u16 = 4003;

/// Listen to a relay webhook's deliveries (WebSocket; `courier listen` speaks it).
pub async fn listen(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let owner = principal.require(Scope::WebhooksWrite)?;
    let id = parse_webhook_id(&id)?;
    relay_webhook(&state, owner, &id).await?;
    if owner.environment.is_live() && !state.config.webhooks.relay_live {
        return Err(ApiError::invalid("id", "relay webhooks are for test-mode keys (COURIER_RELAY_LIVE)"));
    }
    let relays = state.relays.clone().ok_or_else(|| {
        ApiError::conflict("this process runs no worker to hand deliveries to a listener; connect to `courier serve`")
    })?;
    let upgrade = upgrade.map_err(|_| ApiError::bad_request("connect with a WebSocket upgrade"))?;
    let secret = webhooks::signing_secret(&state.pool, &state.key, owner, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    // Kept to check the key again while the session lasts: a revoked key stops its stream.
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.get(7..))
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    let listening = relays.listen(id.clone());
    let session = Session { state, owner, webhook: id, presented, secret };
    Ok(upgrade
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| session.run(socket, listening)))
}

/// The owner's webhook `id`, when it is a relay webhook.
async fn relay_webhook(state: &AppState, owner: courier_store::Owner, id: &WebhookId) -> ApiResult<()> {
    let webhook = webhooks::get(&state.pool, owner, id).await?.ok_or_else(|| ApiError::not_found("webhook"))?;
    if webhook.destination.as_ref().and_then(|d| d["type"].as_str()) != Some("relay") {
        return Err(ApiError::invalid(
            "id",
            "not a relay webhook (create one with {\"destination\": {\"type\": \"relay\"}})",
        ));
    }
    Ok(())
}

struct Session {
    state: AppState,
    owner: courier_store::Owner,
    webhook: WebhookId,
    presented: String,
    secret: WebhookSecret,
}

impl Session {
    /// Deliveries down, answers up, until either side leaves, a newer listener replaces this one, the listener
    /// stops answering pings, or the key or the webhook is gone.
    async fn run(self, mut socket: WebSocket, mut listening: Listening) {
        let ready = serde_json::json!({"type": "ready", "webhook_id": self.webhook, "secret": self.secret.expose()});
        if !send(&mut socket, Message::Text(ready.to_string().into())).await {
            return;
        }
        // Answers not yet given, by delivery and attempt; dropping one (the session ends) tells the worker the
        // listener left. At most QUEUE: past it, deliveries stay in the channel and the worker sees "busy".
        let mut waiting: HashMap<(String, u32), oneshot::Sender<RelayAnswer>> = HashMap::new();
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut last_pong = Instant::now();
        let closing = listening.closing();
        loop {
            tokio::select! {
                relayed = listening.deliveries.recv(), if waiting.len() < QUEUE => {
                    let Some(relayed) = relayed else {
                        return close(&mut socket, REPLACED, "a newer courier listen took this webhook over").await;
                    };
                    let message = serde_json::json!({
                        "type": "delivery", "delivery_id": relayed.delivery_id, "attempt": relayed.attempt,
                        "event_id": relayed.event_id, "event_type": relayed.event_type, "headers": relayed.headers,
                        "body": String::from_utf8_lossy(&relayed.body),
                    });
                    if !send(&mut socket, Message::Text(message.to_string().into())).await {
                        return;
                    }
                    // Attempts the worker stopped waiting for (its timeout) free their place.
                    waiting.retain(|_, waiter| !waiter.is_closed());
                    waiting.insert((relayed.delivery_id, relayed.attempt), relayed.answer);
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        // Only this webhook's deliveries wait here, so a listener cannot answer for another's.
                        if let Some((key, answer)) = parse_result(&text)
                            && let Some(waiter) = waiting.remove(&key)
                        {
                            let _ = waiter.send(answer);
                        }
                    }
                    Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
                () = closing.cancelled() => return close(&mut socket, 1001, "Courier is shutting down").await,
                _ = ping.tick() => {
                    if last_pong.elapsed() > PING_EVERY * 2 {
                        return close(&mut socket, 1001, "no answer to pings").await;
                    }
                    if !self.still_allowed().await {
                        return close(&mut socket, UNAUTHORISED, "the key or the webhook is gone").await;
                    }
                    if !send(&mut socket, Message::Ping(Default::default())).await {
                        return;
                    }
                }
            }
        }
    }

    /// Whether the key still proves this owner with `webhooks:write`, and the webhook is still a relay webhook.
    /// A database that cannot answer right now does not end the session.
    async fn still_allowed(&self) -> bool {
        match courier_store::api_keys::authenticate(&self.state.priority, &self.presented).await {
            Ok(courier_store::api_keys::KeyLookup::Valid(key)) => {
                if key.owner != self.owner || !key.scopes.contains(Scope::WebhooksWrite) {
                    return false;
                }
            }
            Ok(_) => return false,
            Err(_) => return true,
        }
        match relay_webhook(&self.state, self.owner, &self.webhook).await {
            Ok(()) => true,
            Err(err) => err.status().is_server_error(),
        }
    }
}

/// Sends one frame within [`SEND_WAIT`]; false when the listener is gone.
async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(tokio::time::timeout(SEND_WAIT, socket.send(message)).await, Ok(Ok(())))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = send(socket, Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

#[derive(Deserialize)]
struct ResultFrame {
    #[serde(rename = "type")]
    kind: String,
    delivery_id: String,
    attempt: u32,
    status: Option<u16>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    truncated: bool,
    error: Option<String>,
    #[serde(default)]
    timeout: bool,
}

/// A listener's `result` frame as the attempt it answers and the answer; `None` for anything else.
fn parse_result(text: &str) -> Option<((String, u32), RelayAnswer)> {
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
        (None, Some(error)) => {
            RelayAnswer::Unreachable { timed_out: frame.timeout, why: error.chars().take(512).collect() }
        }
        _ => return None,
    };
    Some(((frame.delivery_id, frame.attempt), answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_results_and_ignores_anything_else() {
        let ok = r#"{"type":"result","delivery_id":"dlv_1","attempt":2,"status":201,"body":"b2s=","truncated":false}"#;
        let expected = RelayAnswer::Response { status: 201, body: b"ok".to_vec(), truncated: false };
        assert_eq!(parse_result(ok), Some((("dlv_1".to_owned(), 2), expected)));
        let down = r#"{"type":"result","delivery_id":"dlv_2","attempt":1,"error":"timed out","timeout":true}"#;
        let expected = RelayAnswer::Unreachable { timed_out: true, why: "timed out".into() };
        assert_eq!(parse_result(down), Some((("dlv_2".to_owned(), 1), expected)));
        for bad in [
            r#"{"type":"result","delivery_id":"dlv_3","attempt":1,"status":42}"#,
            r#"{"type":"result","delivery_id":"dlv_3","attempt":1,"status":200,"error":"both"}"#,
            r#"{"type":"hello","delivery_id":"dlv_3","attempt":1,"status":200}"#,
            r#"{"type":"result","delivery_id":"dlv_3","attempt":1,"status":200,"body":"not base64!"}"#,
            r#"{"type":"result","delivery_id":"dlv_3","status":200}"#,
            "not json",
        ] {
            assert_eq!(parse_result(bad), None, "{bad}");
        }
    }
}

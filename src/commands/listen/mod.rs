//! `courier listen`: real deliveries on a developer's laptop without a public URL. Finds (or creates) the key's
//! `relay` webhook, holds a WebSocket to Courier open, POSTs each delivery to `--forward-to` with the headers a real
//! delivery carries (so the developer's verification code runs unchanged), and sends back the local answer, which
//! Courier records as the attempt. Reconnects with backoff; stops on Ctrl-C.

mod forward;
mod webhook;

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::cli::ListenArgs;

/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = args.url.trim_end_matches('/').to_owned();
    let forward_to = reqwest::Url::parse(&args.forward_to).context("--forward-to is not an absolute URL")?;
    let events: Vec<String> = args.events.iter().flat_map(|e| e.split(',')).map(str::trim).map(str::to_owned).collect();
    let mut webhook = webhook::find_or_create(&api, &args.key, &events).await?;
    println!("Forwarding {} to {forward_to} (relay webhook {webhook}); Ctrl-C stops.", describe(&events));
    let forwarder = forward::Forwarder::new(forward_to)?;
    let mut backoff = Duration::from_secs(1);
    let mut shown_secret: Option<String> = None;
    loop {
        let session = session(&api, &args.key, &webhook, &forwarder, &mut shown_secret);
        let ended = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ended = session => ended,
        };
        match ended {
            // Connected, then closed by the server (a restart, a deploy): reconnect after the shortest wait.
            Ok(Ended::Closed) => backoff = Duration::from_secs(1),
            Ok(Ended::Replaced) => bail!("another `courier listen` took this webhook over; stopping"),
            Ok(Ended::Refused(why)) => bail!("Courier refused the listener: {why}"),
            Ok(Ended::WebhookGone) => webhook = webhook::find_or_create(&api, &args.key, &events).await?,
            Err(err) => eprintln!("{}  disconnected: {err:#}; reconnecting in {}s", now(), backoff.as_secs()),
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn describe(events: &[String]) -> String {
    if events.is_empty() { "every event".to_owned() } else { events.join(", ") }
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// How a session ended, when not by a transport failure (an error, retried with backoff).
enum Ended {
    /// The server closed it (a restart, a deploy): reconnect.
    Closed,
    /// A newer listener of the same webhook took over: stop, or the two would take turns forever.
    Replaced,
    /// The key, its scope or the environment is not allowed: retrying cannot help.
    Refused(String),
    /// The webhook is gone: find or create one again.
    WebhookGone,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The WebSocket of `webhook`, or why the server refused it.
async fn connect(api: &str, key: &str, webhook: &str) -> anyhow::Result<Result<Socket, Ended>> {
    let ws_url = match api.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some(("http", rest)) => format!("ws://{rest}"),
        _ => bail!("--url must start with http:// or https://"),
    };
    let mut request = format!("{ws_url}/api/v1/webhooks/{webhook}/listen").into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {key}").parse().context("--key is not a header value")?);
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(Ok(socket)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            match status {
                404 => Ok(Err(Ended::WebhookGone)),
                401 | 403 | 409 | 422 => Ok(Err(Ended::Refused(format!("{status} {body}")))),
                _ => bail!("Courier answered {status} {body}"),
            }
        }
        Err(err) => Err(anyhow::Error::new(err).context("cannot connect")),
    }
}

/// One connection, until it ends.
async fn session(
    api: &str,
    key: &str,
    webhook: &str,
    forwarder: &forward::Forwarder,
    shown_secret: &mut Option<String>,
) -> anyhow::Result<Ended> {
    let socket = match connect(api, key, webhook).await? {
        Ok(socket) => socket,
        Err(ended) => return Ok(ended),
    };
    let (mut sink, mut stream) = socket.split();
    // Each delivery is forwarded on a task of its own; their results come back here to be sent in order of finish.
    let (results, mut finished) = mpsc::channel::<Value>(64);
    loop {
        tokio::select! {
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Close(Some(close)))) if u16::from(close.code) == 4001 => return Ok(Ended::Replaced),
                    Some(Ok(Message::Close(Some(close)))) if u16::from(close.code) == 4003 => {
                        return Ok(Ended::Refused(close.reason.to_string()));
                    }
                    None | Some(Ok(Message::Close(_))) => return Ok(Ended::Closed),
                    Some(Err(err)) => return Err(err.into()),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                };
                let frame: Value = serde_json::from_str(&text).context("Courier sent a frame that is not JSON")?;
                on_frame(frame, forwarder, &results, shown_secret);
            }
            Some(result) = finished.recv() => {
                sink.send(Message::Text(result.to_string().into())).await?;
            }
        }
    }
}

/// What a frame from Courier asks: show the secret, or forward a delivery (on a task; its result comes back
/// through `results`).
fn on_frame(frame: Value, forwarder: &forward::Forwarder, results: &mpsc::Sender<Value>, shown: &mut Option<String>) {
    match frame["type"].as_str() {
        Some("ready") => {
            let secret = frame["secret"].as_str().unwrap_or_default().to_owned();
            if shown.as_deref() == Some(secret.as_str()) {
                println!("{}  reconnected", now());
            } else {
                println!("Ready. Your webhook signing secret is {secret} (verify with it as in production).");
                *shown = Some(secret);
            }
        }
        Some("delivery") => {
            let (forwarder, results) = (forwarder.clone(), results.clone());
            tokio::spawn(async move {
                let result = forwarder.forward(&frame).await;
                let _ = results.send(result).await;
            });
        }
        _ => {}
    }
}

/// The frame that answers a delivery whose local target could not be reached (`timeout`: it did not answer).
fn unreachable(delivery: &Value, error: String, timeout: bool) -> Value {
    json!({"type": "result", "delivery_id": delivery["delivery_id"], "attempt": delivery["attempt"],
           "error": error, "timeout": timeout})
}

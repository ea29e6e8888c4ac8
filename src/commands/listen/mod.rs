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
    let webhook = webhook::find_or_create(&api, &args.key, &events).await?;
    println!("Forwarding {} to {forward_to} (relay webhook {webhook}); Ctrl-C stops.", describe(&events));
    let forwarder = forward::Forwarder::new(forward_to)?;
    let mut backoff = Duration::from_secs(1);
    let mut secret_shown = false;
    loop {
        let session = session(&api, &args.key, &webhook, &forwarder, &mut secret_shown);
        let ended = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ended = session => ended,
        };
        match ended {
            // Connected and then closed: a deploy, a newer listener; start over at once.
            Ok(true) => backoff = Duration::from_secs(1),
            Ok(false) => {}
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

/// One connection: `Ok(true)` when it was established and closed by the server, an error when it failed.
async fn session(
    api: &str,
    key: &str,
    webhook: &str,
    forwarder: &forward::Forwarder,
    secret_shown: &mut bool,
) -> anyhow::Result<bool> {
    let ws_url = match api.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some(("http", rest)) => format!("ws://{rest}"),
        _ => bail!("--url must start with http:// or https://"),
    };
    let mut request = format!("{ws_url}/api/v1/webhooks/{webhook}/listen").into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {key}").parse().context("--key is not a header value")?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await.context("cannot connect")?;
    let (mut sink, mut stream) = socket.split();
    // Each delivery is forwarded on a task of its own; their results come back here to be sent in order of finish.
    let (results, mut finished) = mpsc::channel::<Value>(64);
    loop {
        tokio::select! {
            frame = stream.next() => {
                let text = match frame {
                    None | Some(Ok(Message::Close(_))) => return Ok(true),
                    Some(Err(err)) => return Err(err.into()),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                };
                let frame: Value = serde_json::from_str(&text).context("Courier sent a frame that is not JSON")?;
                match frame["type"].as_str() {
                    Some("ready") if !*secret_shown => {
                        *secret_shown = true;
                        let secret = frame["secret"].as_str().unwrap_or_default();
                        println!("Ready. Your webhook signing secret is {secret} (verify with it as in production).");
                    }
                    Some("ready") => println!("{}  reconnected", now()),
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
            Some(result) = finished.recv() => {
                sink.send(Message::Text(result.to_string().into())).await?;
            }
        }
    }
}

/// The frame that answers a delivery whose local target could not be reached.
fn unreachable(delivery_id: &str, error: String) -> Value {
    json!({"type": "result", "delivery_id": delivery_id, "error": error})
}

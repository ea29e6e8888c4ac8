//! Deliveries of `relay` webhooks, handed in memory from this process's worker to a `courier listen` connected
//! to this process's API over a WebSocket, and the listener's answer handed back.
//!
//! In memory on purpose: a relay is a developer's tool, run against `courier serve` (one process holds both
//! ends). A worker in another process has no listener and records `no_listener`, like a listener that is not
//! running; the delivery is retried like any other. The API refuses a listener where no worker runs beside it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use courier_core::WebhookId;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Deliveries a listener may have on its way before the next one is refused as busy; its session also holds at
/// most this many waiting for an answer.
pub const QUEUE: usize = 64;

/// Each webhook's listener: which connection it is (so a replaced one leaving removes nothing) and its queue.
type Listeners = HashMap<WebhookId, (u64, mpsc::Sender<Relayed>)>;

/// The listeners connected to this process, one per webhook. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Relays {
    listeners: Arc<Mutex<Listeners>>,
    next: Arc<AtomicU64>,
    /// Cancelled when the process shuts down: every session says goodbye (the listener reconnects later).
    closing: CancellationToken,
}

/// One delivery on its way to a listener, and where its answer goes.
#[derive(Debug)]
pub struct Relayed {
    pub delivery_id: String,
    /// The attempt this is: with the delivery id, what the listener's answer names (a late answer to an earlier
    /// attempt is not taken for this one's).
    pub attempt: u32,
    pub event_id: String,
    pub event_type: String,
    /// The headers a real delivery carries (signatures, custom headers), so the developer's code runs unchanged.
    pub headers: Vec<(String, String)>,
    /// The signed envelope.
    pub body: Vec<u8>,
    pub answer: oneshot::Sender<RelayAnswer>,
}

/// What the listener's local target answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAnswer {
    Response {
        status: u16,
        body: Vec<u8>,
        truncated: bool,
    },
    /// The listener could not reach its local target: nothing listens there, or (`timed_out`) it did not answer.
    Unreachable {
        timed_out: bool,
        why: String,
    },
}

/// Why a delivery could not be handed to a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotRelayed {
    #[error("no `courier listen` is connected for this webhook")]
    NoListener,
    #[error("the listener has {QUEUE} deliveries on their way already")]
    Busy,
}

/// A listener's end: the deliveries for it. Dropping it disconnects the listener, unless a newer one replaced it.
#[derive(Debug)]
pub struct Listening {
    pub deliveries: mpsc::Receiver<Relayed>,
    relays: Relays,
    webhook: WebhookId,
    id: u64,
}

impl Relays {
    /// Connects a listener for `webhook`. An earlier listener of the same webhook is replaced: its deliveries end
    /// (its session sees the channel close), so the newest `courier listen` is the one that receives.
    pub fn listen(&self, webhook: WebhookId) -> Listening {
        let (sender, deliveries) = mpsc::channel(QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(webhook.clone(), (id, sender));
        Listening { deliveries, relays: self.clone(), webhook, id }
    }

    /// Hands `relayed` to the webhook's listener, without waiting.
    pub fn send(&self, webhook: &WebhookId, relayed: Relayed) -> Result<(), NotRelayed> {
        let sender = self.lock().get(webhook).map(|(_, sender)| sender.clone()).ok_or(NotRelayed::NoListener)?;
        sender.try_send(relayed).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => NotRelayed::Busy,
            mpsc::error::TrySendError::Closed(_) => NotRelayed::NoListener,
        })
    }

    /// Ends every session: the process is shutting down (a WebSocket would otherwise hold the server open).
    pub fn close_all(&self) {
        self.closing.cancel();
    }

    /// Whether a listener is connected for `webhook`.
    pub fn has_listener(&self, webhook: &WebhookId) -> bool {
        self.lock().contains_key(webhook)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Listeners> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Listening {
    /// Cancelled when the process shuts down ([`Relays::close_all`]).
    pub fn closing(&self) -> CancellationToken {
        self.relays.closing.clone()
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let mut listeners = self.relays.lock();
        if listeners.get(&self.webhook).is_some_and(|(id, _)| *id == self.id) {
            listeners.remove(&self.webhook);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed() -> (Relayed, oneshot::Receiver<RelayAnswer>) {
        let (answer, answered) = oneshot::channel();
        let relayed = Relayed {
            delivery_id: "dlv_1".into(),
            attempt: 1,
            event_id: "evt_1".into(),
            event_type: "call.completed".into(),
            headers: Vec::new(),
            body: b"{}".to_vec(),
            answer,
        };
        (relayed, answered)
    }

    #[test]
    fn the_newest_listener_receives_and_leaving_disconnects_only_itself() {
        let relays = Relays::default();
        let webhook = WebhookId::generate();
        assert_eq!(relays.send(&webhook, relayed().0), Err(NotRelayed::NoListener));
        let mut first = relays.listen(webhook.clone());
        let mut second = relays.listen(webhook.clone());
        relays.send(&webhook, relayed().0).expect("sent");
        assert!(second.deliveries.try_recv().is_ok(), "the newest listener receives");
        assert!(first.deliveries.try_recv().is_err(), "the replaced one does not");
        drop(first);
        assert!(relays.has_listener(&webhook), "a replaced listener leaving does not disconnect the newest");
        drop(second);
        assert!(!relays.has_listener(&webhook));
    }

    #[test]
    fn a_full_listener_is_busy() {
        let relays = Relays::default();
        let webhook = WebhookId::generate();
        let _listening = relays.listen(webhook.clone());
        for _ in 0..QUEUE {
            relays.send(&webhook, relayed().0).expect("room");
        }
        assert_eq!(relays.send(&webhook, relayed().0), Err(NotRelayed::Busy));
    }
}

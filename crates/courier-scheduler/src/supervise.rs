//! Long-running loops that must not die quietly: the ingest dispatcher, the replay, retention and key-usage loops
//! and the delivery worker, each started by the binary's `Application` (or `courier worker`) under its shutdown
//! token. It lives here, beside the loops, not in the HTTP crate: the API only reads [`Components`] for `/readyz`.
//!
//! A loop that fails or panics is restarted with backoff; the restart is logged, counted in
//! `courier_component_restarts_total{component}`, and `/readyz` answers 503 naming the component until it runs
//! again. A process is never left half-alive, serving an API whose events nobody delivers.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first wait before a restart; doubled after each failure that came quickly, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A loop that ran this long before failing starts its backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The supervised components of this process and, for each that is down, why.
#[derive(Clone, Default)]
pub struct Components {
    down: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Components {
    fn set(&self, name: &'static str, down: Option<String>) {
        let mut map = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match down {
            Some(why) => map.insert(name, why),
            None => map.remove(name),
        };
    }

    /// Components that are not running now, with why, by name.
    pub fn down(&self) -> Vec<(&'static str, String)> {
        let map = self.down.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(name, why)| (*name, why.clone())).collect()
    }
}

/// Runs `start()` until it returns `Ok` or `shutdown` is cancelled, restarting it with backoff whenever it fails or
/// panics. Returns once the loop ended normally or shutdown was asked for.
pub async fn supervise<F, Fut, E>(name: &'static str, components: Components, shutdown: CancellationToken, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        components.set(name, None);
        let started = tokio::time::Instant::now();
        let why = match tokio::spawn(start()).await {
            Ok(Ok(())) => return,
            Ok(Err(err)) => format!("failed: {err}"),
            Err(join) if join.is_panic() => {
                let payload = join.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                format!("panicked: {text}")
            }
            Err(_) => "was cancelled".to_owned(),
        };
        if shutdown.is_cancelled() {
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::error!(component = name, reason = %why, backoff_ms = backoff.as_millis() as u64,
            "a supervised loop stopped; restarting it");
        metrics::counter!("courier_component_restarts_total", "component" => name).increment(1);
        components.set(name, Some(why));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_or_panicking_loop_is_restarted_and_reported_until_it_runs() {
        let components = Components::default();
        let shutdown = CancellationToken::new();
        let starts = Arc::new(AtomicUsize::new(0));
        let (running_tx, running_rx) = tokio::sync::oneshot::channel::<()>();
        let running_tx = Arc::new(Mutex::new(Some(running_tx)));
        let task = {
            let (components, shutdown, starts) = (components.clone(), shutdown.clone(), starts.clone());
            tokio::spawn(supervise("worker", components, shutdown.clone(), move || {
                let n = starts.fetch_add(1, Ordering::SeqCst);
                let (shutdown, running_tx) = (shutdown.clone(), running_tx.clone());
                async move {
                    match n {
                        0 => panic!("boom"),
                        1 => Err("the database went away"),
                        _ => {
                            if let Some(tx) = running_tx.lock().expect("lock").take() {
                                let _ = tx.send(());
                            }
                            shutdown.cancelled().await;
                            Err("stopped by shutdown")
                        }
                    }
                }
            }))
        };
        running_rx.await.expect("the third start runs");
        assert_eq!(starts.load(Ordering::SeqCst), 3, "restarted after a panic and after an error");
        assert!(components.down().is_empty(), "running again: ready");
        shutdown.cancel();
        task.await.expect("supervisor ends");
        assert_eq!(starts.load(Ordering::SeqCst), 3, "no restart after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_component_is_reported_while_it_waits_to_restart() {
        let components = Components::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(supervise("ingest", components.clone(), shutdown.clone(), || async {
            Err::<(), _>("no database")
        }));
        // Let it fail once and enter its backoff.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let down = components.down();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].0, "ingest");
        assert!(down[0].1.contains("no database"), "{down:?}");
        shutdown.cancel();
        task.await.expect("supervisor ends");
    }
}

//! Stopping on SIGTERM or ctrl-c, within a hard deadline.
//!
//! The first signal cancels the token: no new claims or requests, in-flight attempts finish, records are written,
//! the rest is released. Whatever still runs when `COURIER_SHUTDOWN_TIMEOUT` has passed (a database that stopped
//! answering, a stuck receiver) does not keep the process alive: it exits non-zero, and the leases of anything it
//! held bring that work back to another worker. A second signal exits at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or ctrl-c and ends the process `deadline` later if it is still running.
pub fn on_signals(token: CancellationToken, deadline: Duration) {
    tokio::spawn(async move {
        let Some(mut signals) = Signals::listen() else {
            return;
        };
        signals.next().await;
        tracing::info!(
            deadline_s = deadline.as_secs_f64(),
            "shutting down: no new claims, finishing in-flight deliveries"
        );
        token.cancel();
        exit_after(deadline);
        signals.next().await;
        tracing::warn!("second signal: exiting now; unfinished deliveries come back when their leases run out");
        std::process::exit(130);
    });
}

/// Ends the process `deadline` from now, from a thread of its own, so a blocked runtime cannot hold it up.
pub fn exit_after(deadline: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        tracing::error!(
            deadline_s = deadline.as_secs_f64(),
            "shutdown did not finish within COURIER_SHUTDOWN_TIMEOUT; exiting (leases bring unfinished work back)"
        );
        std::process::exit(1);
    });
}

struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> Option<Self> {
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => Some(Self { term }),
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for SIGTERM");
                    None
                }
            }
        }
        #[cfg(not(unix))]
        Some(Self {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

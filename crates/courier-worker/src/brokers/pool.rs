//! Idle broker connections, per destination, bounded: at most [`MAX_IDLE`] per destination and [`MAX_DESTINATIONS`]
//! destinations by default, so a tenant with many brokers holds no more than its share of sockets. Kafka's
//! producers, each one record in flight on one connection and costly to open (metadata and a producer id), keep
//! more per destination and fewer destinations ([`Pool::with_limits`]).

use std::collections::HashMap;
use std::sync::Mutex;

/// Idle connections kept per destination; more in flight at once are opened and closed.
const MAX_IDLE: usize = 4;

/// Destinations whose idle connections are kept; past it a connection is closed after its attempt.
const MAX_DESTINATIONS: usize = 512;

/// Keyed by what reaches a destination, credentials included, so it has no `Debug`.
pub(crate) struct Pool<C> {
    idle: Mutex<HashMap<String, Vec<C>>>,
    max_idle: usize,
    max_destinations: usize,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Self::with_limits(MAX_IDLE, MAX_DESTINATIONS)
    }
}

impl<C> Pool<C> {
    /// A pool keeping at most `max_idle` per destination, of at most `max_destinations`.
    pub(crate) fn with_limits(max_idle: usize, max_destinations: usize) -> Self {
        Self { idle: Mutex::new(HashMap::new()), max_idle, max_destinations }
    }

    pub(crate) fn take(&self, key: &str) -> Option<C> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let connections = idle.get_mut(key)?;
        let connection = connections.pop();
        if connections.is_empty() {
            idle.remove(key);
        }
        connection
    }

    pub(crate) fn put(&self, key: String, connection: C) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_destinations && !idle.contains_key(&key) {
            return;
        }
        let connections = idle.entry(key).or_default();
        if connections.len() < self.max_idle {
            connections.push(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_number_per_destination() {
        let pool = Pool::<u32>::default();
        for n in 0..10 {
            pool.put("a".to_owned(), n);
        }
        let mut taken = Vec::new();
        while let Some(n) = pool.take("a") {
            taken.push(n);
        }
        assert_eq!(taken.len(), MAX_IDLE);
        assert_eq!(pool.take("b"), None);
    }
}

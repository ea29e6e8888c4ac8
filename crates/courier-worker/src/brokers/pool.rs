//! Idle broker connections, per destination, bounded: at most [`MAX_IDLE`] per destination and [`MAX_DESTINATIONS`]
//! destinations, so a tenant with many brokers holds no more than its share of sockets.

use std::collections::HashMap;
use std::sync::Mutex;

/// Idle connections kept per destination; more in flight at once are opened and closed.
const MAX_IDLE: usize = 4;

/// Destinations whose idle connections are kept; past it a connection is closed after its attempt.
const MAX_DESTINATIONS: usize = 512;

/// Keyed by what reaches a destination, credentials included, so it has no `Debug`.
pub(crate) struct Pool<C> {
    idle: Mutex<HashMap<String, Vec<C>>>,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Self { idle: Mutex::new(HashMap::new()) }
    }
}

impl<C> Pool<C> {
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
        if idle.len() >= MAX_DESTINATIONS && !idle.contains_key(&key) {
            return;
        }
        let connections = idle.entry(key).or_default();
        if connections.len() < MAX_IDLE {
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

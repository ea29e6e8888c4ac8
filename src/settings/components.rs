//! Each component's own configuration, cut from the settings tree: the API's and the worker's. Components never
//! see the tree (or the environment), only these.

use std::time::Duration;

use courier_api::{ApiConfig, PortalConfig, RateLimit, WebhookRules};
use courier_worker::{AutoDisable, WorkerConfig};

use super::Settings;

impl Settings {
    pub fn api_config(&self) -> ApiConfig {
        let api = &self.api;
        ApiConfig {
            rate_limit: api.rate_limit.map(|(per_second, burst)| RateLimit { per_second, burst }),
            statement_timeout: api.statement_timeout,
            max_running_replays: api.max_running_replays,
            trusted_proxies: api.trusted_proxies.clone(),
            portal: PortalConfig {
                public_url: api.public_url.as_str().trim_end_matches('/').to_owned(),
                secure_cookie: api.public_url.scheme() == "https",
                frame_ancestors: api.portal_frame_ancestors.clone(),
            },
            webhooks: WebhookRules {
                allow_http: api.allow_http,
                relay_live: api.relay_live,
                // The API refuses at creation what the worker would refuse at delivery: one list for both.
                allowed_targets: self.delivery.allowed_targets.clone(),
                rotation_grace: api.rotation_grace,
                default_max_attempts: self.delivery.max_attempts,
                max_webhooks: api.max_webhooks,
            },
        }
    }

    pub fn worker_config(&self) -> WorkerConfig {
        let d = &self.delivery;
        WorkerConfig {
            retry: d.retry,
            timeout: d.timeout,
            connect_timeout: d.connect_timeout,
            allowed_targets: d.allowed_targets.clone(),
            concurrency: d.concurrency,
            per_webhook: d.per_webhook_concurrency,
            per_tenant: d.per_tenant_concurrency,
            poll_interval: d.poll_interval,
            // In-flight attempts get at most two thirds of the hard deadline; recording and releasing use the rest.
            shutdown_grace: (d.timeout + Duration::from_secs(1)).min(self.lifecycle.shutdown_timeout * 2 / 3),
            lease: WorkerConfig::default_lease(d.timeout),
            auto_disable: (!d.disable_after.is_zero())
                .then_some(AutoDisable { after: d.disable_after, min_failures: d.disable_min_failures }),
        }
    }
}

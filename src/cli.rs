//! The command line: `courier <command>`. Every command reads the same configuration as the server.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "courier", version, about = "Durable outbound webhook delivery engine", propagate_version = true)]
pub struct Cli {
    /// A TOML file of settings (see config/courier.toml); the environment overrides it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations (idempotent).
    Migrate,
    /// Development mode: start the embedded PostgreSQL under .courier/, migrate, create a development tenant and
    /// key once, print them with a ready curl, and serve the API and workers.
    Dev,
    /// Run the API and the delivery workers in one process (migrates first).
    Serve,
    /// Run the API alone (migrates first); pair it with `courier worker` processes.
    Api,
    /// Run the delivery worker alone; run more of them on the same database to scale out.
    Worker,
    /// Forward a test-mode key's events to a local port: real deliveries, signed as in production, without a
    /// public URL (a `relay` webhook, over a WebSocket to Courier).
    #[command(
        after_help = "Example:\n  courier listen --url http://127.0.0.1:8080 --key as_test_… --forward-to http://localhost:3000/webhooks --events call.completed,call.failed"
    )]
    Listen(ListenArgs),
    /// Inspect deliveries across tenants.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Replay a tenant's deliveries in bulk (failed ones unless --status says otherwise).
    #[command(
        after_help = "Examples:\n  courier replay --tenant 0193… --since 2h --dry-run\n  courier replay --tenant 0193… --webhook wh_… --event-type call.completed"
    )]
    Replay(ReplayArgs),
    /// Erase a tenant's events, deliveries and attempts (erasure requests).
    #[command(
        after_help = "Examples:\n  courier purge --tenant 0193…\n  courier purge --tenant 0193… --before 2026-01-01T00:00:00Z"
    )]
    Purge {
        #[arg(long)]
        tenant: String,
        /// Only what was received before this time (RFC 3339) or this long ago (90d).
        #[arg(long)]
        before: Option<String>,
    },
    /// List, enable and disable webhooks.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// What Kafka ingest set aside (COURIER_INGEST_KAFKA_*).
    #[command(subcommand)]
    Ingest(IngestCommand),
    /// Manage the embedded development PostgreSQL cluster.
    #[command(subcommand)]
    Db(DbCommand),
    /// Create and list tenants.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Courier's base URL.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// An API key with `webhooks:write` (test mode, unless COURIER_RELAY_LIVE).
    #[arg(long)]
    pub key: String,
    /// Where to POST each delivery.
    #[arg(long, value_name = "URL")]
    pub forward_to: String,
    /// Only these event types (comma-separated); every type when omitted.
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Start the cluster (creating it on first use) and print its DATABASE_URL.
    Start,
    /// Stop the cluster.
    Stop,
    /// Print the cluster's DATABASE_URL without starting it.
    Url,
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant.
    #[command(after_help = "Example:\n  courier tenants create --name \"Acme Voice\" --json")]
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EnvArg {
    Live,
    Test,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; it is printed once and cannot be shown again.
    #[command(
        after_help = "Example:\n  courier keys create --tenant 0193… --env test --scopes events:write,webhooks:read --json"
    )]
    Create(KeyCreate),
    /// List a tenant's keys (prefixes only).
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (`key_…`).
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct KeyCreate {
    #[arg(long)]
    pub tenant: String,
    #[arg(long, value_enum)]
    pub env: EnvArg,
    /// Comma-separated: webhooks:read, webhooks:write, deliveries:read, deliveries:replay, events:write.
    #[arg(long)]
    pub scopes: String,
    #[arg(long)]
    pub json: bool,
}

/// Which deliveries an operator command acts on.
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Tenant id (UUID).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Webhook id (wh_…).
    #[arg(long)]
    pub webhook: Option<String>,
    /// pending, delivering, succeeded, failed or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// Of events received within this long (2h, 30m, 7d) or since an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Of events received before this long ago or before an RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Event type; repeat for several.
    #[arg(long = "event-type")]
    pub event_type: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Newest first: a table, or JSON lines with --json.
    #[command(
        after_help = "Examples:\n  courier deliveries list --status failed --since 2h\n  courier deliveries list --tenant 0193… --json"
    )]
    List {
        #[command(flatten)]
        select: SelectArgs,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One delivery with its event, webhook URL and every attempt.
    #[command(after_help = "Example:\n  courier deliveries show dlv_01M8…")]
    Show { id: String },
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Count what would be replayed without replaying it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// A tenant's webhooks.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Enable a webhook (after a `gone` or `failing` disable, say).
    Enable { id: String },
    /// Disable a webhook and cancel its pending deliveries.
    Disable { id: String },
}

#[derive(Debug, Subcommand)]
pub enum IngestCommand {
    /// Kafka records set aside instead of accepted, newest first: topic, partition, offset, reason, first bytes.
    Rejects {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

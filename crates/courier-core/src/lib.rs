//! Courier's pure domain model.
//!
//! Everything here is a value or a pure function: no IO, no async runtime, no database.
//! The only impure thing is drawing random bytes for new ids, secrets, nonces and jitter, which cannot fail.
//! Sealing webhook secrets (AES-256-GCM) is pure crypto and lives here too, so the worker opens them without the store.
//! The webhook envelope's JSON lives here because it *is* the product's wire format.

pub mod destination;
pub mod envelope;
pub mod environment;
pub mod event;
pub mod headers;
pub mod id;
pub mod outcome;
pub mod response;
pub mod retry;
pub mod samples;
pub mod scope;
pub mod scram;
pub mod sealed;
pub mod secret;
pub mod signature;
pub mod target;
pub mod trace_parent;

pub use destination::Broker;
pub use envelope::{Envelope, PayloadFilter};
pub use environment::Environment;
pub use event::{Event, EventData, EventSelector, EventType};
pub use headers::CustomHeaders;
pub use id::{ApiKeyId, DeliveryId, EventId, IdError, PortalSessionId, ReplayId, TenantId, WebhookId};
pub use outcome::{AttemptResult, ErrorKind, Next};
pub use response::ResponseBody;
pub use retry::RetryPolicy;
pub use scope::{Scope, Scopes};
pub use sealed::{MasterKey, SealedSecrets};
pub use secret::{Redacted, WebhookSecret};
pub use trace_parent::TraceParent;

-- Tenant portal sessions (DESIGN.md §3.7). An API key mints one; its login token is redeemed once through a magic
-- link and becomes a session cookie. Only SHA-256 digests of both tokens are stored, like API keys.
CREATE TABLE portal_sessions (
    id                  text PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    environment         text NOT NULL CHECK (environment IN ('live', 'test')),
    -- The key that minted the session: revoking the key ends its sessions.
    api_key_id          text NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    scopes              text[] NOT NULL,
    login_hash          bytea NOT NULL UNIQUE CHECK (length(login_hash) = 32),
    login_expires_at    timestamptz NOT NULL,
    redeemed_at         timestamptz,
    session_hash        bytea UNIQUE CHECK (length(session_hash) = 32),
    expires_at          timestamptz NOT NULL,
    revoked_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- A session cookie exists only once the login token was spent.
    CHECK ((session_hash IS NULL) = (redeemed_at IS NULL))
);
CREATE INDEX portal_sessions_expiry ON portal_sessions (expires_at);

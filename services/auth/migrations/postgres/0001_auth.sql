-- Credentials: one row per account. The email is stored normalized (trimmed,
-- lower-cased) and is unique; the password only as an Argon2id PHC string.
CREATE TABLE credentials (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_ms    BIGINT NOT NULL
);

-- Profiles users has not confirmed yet: written with the credential, deleted once
-- users' CreateProfile answered, retried with backoff until then.
CREATE TABLE pending_profiles (
    user_id         TEXT PRIMARY KEY NOT NULL,
    email           TEXT NOT NULL,
    name            TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error      TEXT,
    created_ms      BIGINT NOT NULL
);

-- Refresh tokens, only as SHA-256 hashes. A family is every token descended from one
-- sign-in; reuse of a rotated token revokes the family.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    family_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    issued_ms  BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    rotated_ms BIGINT,
    revoked_ms BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_ms);

-- Ed25519 signing keys. The active key has no rotated_ms; a rotated key stays
-- published in the JWKS until retire_after_ms (every token it signed has expired).
CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY NOT NULL,
    private_key     TEXT NOT NULL,
    public_key      TEXT NOT NULL,
    created_ms      BIGINT NOT NULL,
    rotated_ms      BIGINT,
    retire_after_ms BIGINT
);

-- Failed sign-ins per account and per client address, for lockout.
CREATE TABLE login_throttle (
    throttle_key    TEXT PRIMARY KEY NOT NULL,
    failures        BIGINT NOT NULL,
    last_failure_ms BIGINT NOT NULL,
    locked_until_ms BIGINT NOT NULL
);

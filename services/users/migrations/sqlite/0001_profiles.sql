-- One profile per user; the id is the user id auth assigned (UUIDv7).
CREATE TABLE profiles (
    id         TEXT PRIMARY KEY NOT NULL,
    email      TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX profiles_email ON profiles (email);

//! Profiles and the rules for their fields: pure, no I/O.

/// A user's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The user id auth assigned (UUIDv7).
    pub id: String,
    /// The email the account was registered with (owned and changed only by auth).
    pub email: String,
    /// The display name.
    pub name: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
}

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest email, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// A display name: 1–100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// Parses a name, saying what is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be empty");
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err("must be at most 100 characters");
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, owned.
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Checks the user id auth sends: a UUID.
pub fn parse_user_id(raw: &str) -> Result<String, &'static str> {
    uuid::Uuid::parse_str(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| "must be a UUID")
}

/// Checks an email's shape (auth validated it; this is the store's last line).
pub fn parse_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim();
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && email.len() <= MAX_EMAIL_BYTES
                && !email.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(email.to_owned())
        }
        _ => Err("must be an email address"),
    }
}

/// Now, RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse(&"x".repeat(101)).is_err());
        assert!(Name::parse(&"é".repeat(100)).is_ok());
        assert!(Name::parse("a\u{0}b").is_err());
    }

    #[test]
    fn ids_and_emails() {
        assert!(parse_user_id("not-a-uuid").is_err());
        assert!(parse_user_id(&uuid::Uuid::now_v7().to_string()).is_ok());
        assert!(parse_email("a@b.example").is_ok());
        assert!(parse_email("a b@c").is_err());
        assert!(parse_email("@c").is_err());
    }
}

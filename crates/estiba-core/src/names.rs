//! Name rules shared by clusters, services, task definition families and capacity providers.

/// Up to 255 letters (uppercase and lowercase), numbers, underscores and hyphens.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A name for an error message: long names are cut so the message stays readable.
pub fn shown(s: &str) -> String {
    if s.chars().count() > 64 {
        format!("{}...", s.chars().take(64).collect::<String>())
    } else {
        s.to_owned()
    }
}

//! Repository names and tags, as the distribution spec allows them (checked by hand: the
//! grammar is small and this runs on every request).

use crate::{Code, RegistryError};

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, 2 to 256 bytes
/// (ECR's bounds).
pub fn check_repository(name: &str) -> Result<(), RegistryError> {
    let ok = (2..=256).contains(&name.len()) && name.split('/').all(component_ok);
    if ok {
        Ok(())
    } else {
        Err(RegistryError::new(
            Code::NameInvalid,
            format!(
                "invalid repository name {name:?}: use 2 to 256 lowercase letters, digits and separators (. _ __ - /), \
                 starting and ending each path component with a letter or digit"
            ),
        ))
    }
}

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__" or one or more "-", followed by an alphanumeric.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), RegistryError> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty() && b.len() <= 128 && word(b[0]) && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(RegistryError::new(
            Code::TagInvalid,
            format!("invalid tag {tag:?}: up to 128 letters, digits, _ . and -, not starting with . or -"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for good in ["ab", "my-app", "team/app", "a.b_c__d---e/f0", "x/y/z9"] {
            assert!(check_repository(good).is_ok(), "{good}");
        }
        for bad in ["a", "A", "-a", "a-", "a//b", "/ab", "ab/", "a___b", "a_.b", "../etc", "a/../b", "a b", "ab%2f"] {
            assert_eq!(check_repository(bad).unwrap_err().code, Code::NameInvalid, "{bad}");
        }
    }

    #[test]
    fn tags() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d"] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", &"x".repeat(129)] {
            assert_eq!(check_tag(bad).unwrap_err().code, Code::TagInvalid, "{bad}");
        }
    }
}

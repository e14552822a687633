//! Resource tags: the limits ECS enforces beyond the model's lengths and patterns.

use estiba_api::ecs::Tag;

use crate::bail;
use crate::error::Result;

pub const MAX_TAGS: usize = 50;

fn reserved(s: &str) -> bool {
    s.len() >= 4 && s[..4].eq_ignore_ascii_case("aws:")
}

/// Checks tags a caller sets: keys present, not reserved, unique, and at most 50.
pub fn validate(tags: &[Tag]) -> Result<()> {
    let mut keys = std::collections::BTreeSet::new();
    for t in tags {
        let Some(key) = t.key.as_deref() else {
            bail!(invalid, "Tag keys must be specified.");
        };
        if reserved(key) {
            bail!(invalid, "Tag key '{key}' is not valid: the 'aws:' prefix is reserved for AWS use.");
        }
        if !keys.insert(key) {
            bail!(invalid, "Tag key '{key}' is given more than once.");
        }
    }
    if tags.len() > MAX_TAGS {
        bail!(invalid, "A resource can have at most {MAX_TAGS} tags; {} were given.", tags.len());
    }
    Ok(())
}

/// Adds or replaces `new` tags in `current`, keeping the order of first appearance.
pub fn merge(current: &mut Vec<Tag>, new: &[Tag]) -> Result<()> {
    validate(new)?;
    for t in new {
        match current.iter_mut().find(|c| c.key == t.key) {
            Some(c) => c.value = t.value.clone(),
            None => current.push(t.clone()),
        }
    }
    if current.len() > MAX_TAGS {
        bail!(invalid, "A resource can have at most {MAX_TAGS} tags; this request would make it {}.", current.len());
    }
    Ok(())
}

pub fn remove(current: &mut Vec<Tag>, keys: &[String]) {
    current.retain(|t| !t.key.as_ref().is_some_and(|k| keys.contains(k)));
}

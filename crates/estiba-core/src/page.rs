//! Pagination like AWS's: `maxResults` bounds a page and an opaque `nextToken` continues it.
//! The token carries the sort key of the last item returned, so pages stay correct when
//! items are added or removed between calls.

use base64::Engine;

use crate::bail;
use crate::error::Result;

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// Resolves `maxResults`: absent or 0 means `default`; outside 1..=`max` is an error.
pub fn limit(max_results: Option<i32>, default: usize, max: usize) -> Result<usize> {
    match max_results {
        None | Some(0) => Ok(default),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(n) => bail!(invalid, "maxResults must be between 1 and {max}, got {n}."),
    }
}

fn encode(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes())
}

fn decode(token: &str) -> Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            crate::EcsError::invalid("Invalid nextToken: pass the nextToken of a previous response unchanged.")
        })
}

/// Takes one page of `items`, which must be sorted by `key` (descending when `desc`).
/// Keys are computed only where needed: to skip past a token, and for the last item of a page
/// that has a next one.
pub fn paginate<T, K: AsRef<str>>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
    next_token: Option<&str>,
    limit: usize,
    desc: bool,
) -> Result<Page<T>> {
    let after = next_token.filter(|t| !t.is_empty()).map(decode).transpose()?;
    let mut out = Vec::new();
    let mut more = false;
    for item in items {
        if let Some(a) = &after {
            let k = key(&item);
            let past = if desc { k.as_ref() < a.as_str() } else { k.as_ref() > a.as_str() };
            if !past {
                continue;
            }
        }
        if out.len() == limit {
            more = true;
            break;
        }
        out.push(item);
    }
    let next_token = if more { out.last().map(|l| encode(key(l).as_ref())) } else { None };
    Ok(Page { items: out, next_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_through() {
        let items: Vec<String> = (0..7).map(|i| format!("k{i}")).collect();
        let mut token = None;
        let mut seen = Vec::new();
        loop {
            let p = paginate(items.clone(), |s| s.clone(), token.as_deref(), 3, false).unwrap();
            seen.extend(p.items);
            token = p.next_token;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen, items);
        let rev: Vec<String> = items.iter().rev().cloned().collect();
        let p1 = paginate(rev.clone(), |s| s.clone(), None, 4, true).unwrap();
        let p2 = paginate(rev.clone(), |s| s.clone(), p1.next_token.as_deref(), 4, true).unwrap();
        assert_eq!(p1.items.len() + p2.items.len(), 7);
        assert!(p2.next_token.is_none());
        assert_eq!(p2.items[0], "k2");
        assert!(paginate(items, |s| s.clone(), Some("!!!"), 3, false).is_err());
        assert_eq!(limit(None, 10, 100).unwrap(), 10);
        assert!(limit(Some(101), 10, 100).is_err());
    }
}

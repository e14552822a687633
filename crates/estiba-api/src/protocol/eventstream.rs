//! The AWS event stream encoding (`application/vnd.amazon.eventstream`): the framing of
//! streaming answers such as CloudWatch Logs' StartLiveTail. Each message is a prelude (total
//! length and headers length, big-endian u32s, and the prelude's CRC32), the headers (name
//! length u8, name, value type 7 = string, value length u16, value), the payload, and the
//! CRC32 of all that precedes it.
//!
//! Written by hand: the framing is a few dozen lines, and the crates that implement it come
//! with the AWS SDK's runtime (aws-smithy-eventstream and its dependencies) for what is here
//! one function; the CRC is `crc32fast`'s (IEEE, as botocore checks it).

/// Header value type: a UTF-8 string.
const STRING: u8 = 7;

/// One message with string headers.
pub fn message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(STRING);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_be_bytes());
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&m);
    m.extend_from_slice(&prelude_crc.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

/// An event of type `event_type` with a JSON payload (`initial-response` first, for AWS JSON
/// services: botocore reads the operation's other output members from it).
pub fn event(event_type: &str, json: &[u8]) -> Vec<u8> {
    message(&[(":message-type", "event"), (":event-type", event_type), (":content-type", "application/json")], json)
}

/// An exception that ends the stream (a modeled error member of the stream's union).
pub fn exception(exception_type: &str, json: &[u8]) -> Vec<u8> {
    message(
        &[(":message-type", "exception"), (":exception-type", exception_type), (":content-type", "application/json")],
        json,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let m = event("sessionStart", b"{}");
        let total = u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize;
        let hlen = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, m.len());
        assert_eq!(u32::from_be_bytes(m[8..12].try_into().unwrap()), crc32fast::hash(&m[0..8]));
        assert_eq!(&m[12 + hlen..total - 4], b"{}");
        assert_eq!(u32::from_be_bytes(m[total - 4..].try_into().unwrap()), crc32fast::hash(&m[..total - 4]));
        // The first header: ":message-type" = "event".
        assert_eq!(m[12] as usize, ":message-type".len());
        assert_eq!(&m[13..26], b":message-type");
        assert_eq!(m[26], STRING);
        assert_eq!(&m[27..29], &5u16.to_be_bytes());
        assert_eq!(&m[29..34], b"event");
        // A known CRC: an empty message has prelude [0,0,0,16, 0,0,0,0].
        let empty = message(&[], b"");
        assert_eq!(empty.len(), 16);
        assert_eq!(&empty[8..12], &0x05c2_48ebu32.to_be_bytes());
    }
}

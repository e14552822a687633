//! The Session Manager data channel's wire format, as the `session-manager-plugin` speaks it
//! (ECS Exec's `streamUrl`): the binary `ClientMessage` (a 120-byte big-endian header with
//! the message id's UUID halves swapped and a SHA-256 digest of the payload), the JSON of
//! acknowledgements, the handshake and `channel_closed`, and ECS Exec's command string
//! (split into arguments as a shell would, and joined back by clients).
//!
//! May not: do I/O or keep session state (sequence numbers, acks owed): callers do.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `HeaderLength` as the plugin writes it: the header without the payload length field
/// (the payload starts at `HeaderLength + 4`).
pub const HEADER_LENGTH: u32 = 116;
/// Where the payload starts.
pub const PAYLOAD_OFFSET: usize = 120;

pub const INPUT_STREAM_DATA: &str = "input_stream_data";
pub const OUTPUT_STREAM_DATA: &str = "output_stream_data";
pub const ACKNOWLEDGE: &str = "acknowledge";
pub const CHANNEL_CLOSED: &str = "channel_closed";
pub const START_PUBLICATION: &str = "start_publication";
pub const PAUSE_PUBLICATION: &str = "pause_publication";

/// What a message's payload is (`PayloadType`).
pub mod payload {
    pub const OUTPUT: u32 = 1;
    pub const ERROR: u32 = 2;
    pub const SIZE: u32 = 3;
    pub const PARAMETER: u32 = 4;
    pub const HANDSHAKE_REQUEST: u32 = 5;
    pub const HANDSHAKE_RESPONSE: u32 = 6;
    pub const HANDSHAKE_COMPLETE: u32 = 7;
    pub const FLAG: u32 = 10;
    pub const STDERR: u32 = 11;
    pub const EXIT_CODE: u32 = 12;
}

/// Why bytes are not a ClientMessage.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a client message needs at least {PAYLOAD_OFFSET} bytes, got {0}")]
    Short(usize),
    #[error("the header length is {0}")]
    HeaderLength(u32),
    #[error("the message type is empty")]
    NoType,
    #[error("the created date is zero")]
    NoDate,
    #[error("the payload length {0} does not match the {1} bytes that follow the header")]
    PayloadLength(u32, usize),
    #[error("the payload digest does not match the payload")]
    Digest,
}

/// One data channel message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientMessage {
    pub message_type: String,
    pub schema_version: u32,
    /// Milliseconds since the Unix epoch.
    pub created_date: u64,
    pub sequence_number: i64,
    pub flags: u64,
    /// The UUID in its usual byte order (the wire swaps its halves).
    pub message_id: [u8; 16],
    pub payload_type: u32,
    pub payload: Vec<u8>,
}

impl ClientMessage {
    /// A message of `message_type` with id `message_id` (a random UUID the caller made).
    pub fn new(
        message_type: &str,
        sequence_number: i64,
        payload_type: u32,
        payload: Vec<u8>,
        now_ms: u64,
        message_id: [u8; 16],
    ) -> Self {
        ClientMessage {
            message_type: message_type.to_owned(),
            schema_version: 1,
            created_date: now_ms.max(1),
            sequence_number,
            flags: 0,
            message_id,
            payload_type,
            payload,
        }
    }

    /// The acknowledgement of this message (`acknowledge`, sequence 0, flags 3).
    pub fn ack(&self, now_ms: u64, message_id: [u8; 16]) -> ClientMessage {
        let content = AcknowledgeContent {
            acknowledged_message_type: self.message_type.clone(),
            acknowledged_message_id: format_uuid(&self.message_id),
            acknowledged_message_sequence_number: self.sequence_number,
            is_sequential_message: true,
        };
        let mut m =
            ClientMessage::new(ACKNOWLEDGE, 0, 0, serde_json::to_vec(&content).unwrap_or_default(), now_ms, message_id);
        m.flags = 3;
        m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PAYLOAD_OFFSET + self.payload.len());
        out.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
        let mut ty = [b' '; 32];
        let n = self.message_type.len().min(32);
        ty[..n].copy_from_slice(&self.message_type.as_bytes()[..n]);
        out.extend_from_slice(&ty);
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.created_date.to_be_bytes());
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.message_id[8..]);
        out.extend_from_slice(&self.message_id[..8]);
        out.extend_from_slice(&Sha256::digest(&self.payload));
        out.extend_from_slice(&self.payload_type.to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes and validates a message as the plugin does (the digest is checked when there
    /// is a payload; publication messages are not validated).
    pub fn decode(b: &[u8]) -> Result<ClientMessage, FrameError> {
        if b.len() < PAYLOAD_OFFSET {
            return Err(FrameError::Short(b.len()));
        }
        let u32_at = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let header_length = u32_at(0);
        let message_type =
            String::from_utf8_lossy(&b[4..36]).trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_owned();
        let mut message_id = [0u8; 16];
        message_id[8..].copy_from_slice(&b[64..72]);
        message_id[..8].copy_from_slice(&b[72..80]);
        let m = ClientMessage {
            schema_version: u32_at(36),
            created_date: u64_at(40),
            sequence_number: u64_at(48) as i64,
            flags: u64_at(56),
            message_id,
            payload_type: u32_at(112),
            payload: Vec::new(),
            message_type,
        };
        let payload_length = u32_at(116);
        let start = (header_length as usize).saturating_add(4);
        if header_length == 0 || start > b.len() {
            return Err(FrameError::HeaderLength(header_length));
        }
        let rest = &b[start..];
        if rest.len() != payload_length as usize {
            return Err(FrameError::PayloadLength(payload_length, rest.len()));
        }
        let m = ClientMessage { payload: rest.to_vec(), ..m };
        if m.message_type == START_PUBLICATION || m.message_type == PAUSE_PUBLICATION {
            return Ok(m);
        }
        if m.message_type.is_empty() {
            return Err(FrameError::NoType);
        }
        if m.created_date == 0 {
            return Err(FrameError::NoDate);
        }
        if payload_length != 0 && Sha256::digest(&m.payload).as_slice() != &b[80..112] {
            return Err(FrameError::Digest);
        }
        Ok(m)
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The payload of an `acknowledge` message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AcknowledgeContent {
    pub acknowledged_message_type: String,
    pub acknowledged_message_id: String,
    pub acknowledged_message_sequence_number: i64,
    pub is_sequential_message: bool,
}

/// The first (text) frame a client sends on the data channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpenDataChannel {
    pub message_schema_version: String,
    pub request_id: String,
    pub token_value: String,
    pub client_id: String,
    #[serde(default)]
    pub client_version: String,
}

/// The server's handshake request: one `SessionType` action.
pub fn handshake_request(agent_version: &str, session_type: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "AgentVersion": agent_version,
        "RequestedClientActions": [{
            "ActionType": "SessionType",
            "ActionParameters": {"SessionType": session_type, "Properties": {}},
        }],
    }))
    .unwrap_or_default()
}

/// A client's answer to [`handshake_request`]: every action processed successfully.
pub fn handshake_response(client_version: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ClientVersion": client_version,
        "ProcessedClientActions": [{"ActionType": "SessionType", "ActionStatus": 1, "ActionResult": null, "Error": ""}],
        "Errors": null,
    }))
    .unwrap_or_default()
}

/// The server's handshake completion (`HandshakeTimeToComplete` in nanoseconds).
pub fn handshake_complete(took_ns: i64, customer_message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"HandshakeTimeToComplete": took_ns, "CustomerMessage": customer_message}))
        .unwrap_or_default()
}

/// The payload of `channel_closed`. `ExitCode` is estiba's: the plugin ignores fields it
/// does not know, and `estiba exec` exits with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChannelClosed {
    pub message_id: String,
    pub created_date: String,
    pub destination_id: String,
    pub session_id: String,
    pub message_type: String,
    pub schema_version: u32,
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// A terminal size (`PayloadType` 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    pub cols: u32,
    pub rows: u32,
}

/// Splits an ExecuteCommand `command` into arguments as a POSIX shell would without
/// expanding anything: blanks separate, single quotes keep everything, double quotes keep
/// all but `\"`, `\\`, `\$` and `` \` ``, a backslash outside quotes escapes the next
/// character. `None` when a quote is not closed.
pub fn split_command(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            '\'' => {
                any = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        x => cur.push(x),
                    }
                }
            }
            '"' => {
                any = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            x @ ('"' | '\\' | '$' | '`') => cur.push(x),
                            '\n' => {}
                            x => {
                                cur.push('\\');
                                cur.push(x);
                            }
                        },
                        x => cur.push(x),
                    }
                }
            }
            '\\' => {
                any = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(x) => cur.push(x),
                }
            }
            x => {
                any = true;
                cur.push(x);
            }
        }
    }
    if any {
        out.push(cur);
    }
    Some(out)
}

/// Joins arguments into one command string that [`split_command`] (or a shell) splits back.
pub fn join_command<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| {
            let a = a.as_ref();
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
                a.to_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message laid out by hand from the plugin's offsets.
    fn by_hand(ty: &str, seq: i64, id: [u8; 16], payload_type: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 120];
        b[0..4].copy_from_slice(&116u32.to_be_bytes());
        let mut t = [b' '; 32];
        t[..ty.len()].copy_from_slice(ty.as_bytes());
        b[4..36].copy_from_slice(&t);
        b[36..40].copy_from_slice(&1u32.to_be_bytes());
        b[40..48].copy_from_slice(&1_700_000_000_000u64.to_be_bytes());
        b[48..56].copy_from_slice(&seq.to_be_bytes());
        // The UUID's second half first.
        b[64..72].copy_from_slice(&id[8..]);
        b[72..80].copy_from_slice(&id[..8]);
        b[80..112].copy_from_slice(&Sha256::digest(payload));
        b[112..116].copy_from_slice(&payload_type.to_be_bytes());
        b[116..120].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    const ID: [u8; 16] =
        [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x47, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00];

    #[test]
    fn decodes_the_plugins_layout_with_swapped_uuid_halves() {
        let b = by_hand("input_stream_data", 7, ID, 1, b"ls\r");
        let m = ClientMessage::decode(&b).unwrap();
        assert_eq!(m.message_type, "input_stream_data");
        assert_eq!(m.sequence_number, 7);
        assert_eq!(m.message_id, ID);
        assert_eq!(format_uuid(&m.message_id), "11223344-5566-4788-99aa-bbccddeeff00");
        assert_eq!(m.payload_type, 1);
        assert_eq!(m.payload, b"ls\r");
        assert_eq!(m.created_date, 1_700_000_000_000);
    }

    #[test]
    fn encodes_byte_for_byte_what_the_plugin_reads() {
        let m = ClientMessage {
            message_type: "output_stream_data".into(),
            schema_version: 1,
            created_date: 1_700_000_000_000,
            sequence_number: 3,
            flags: 0,
            message_id: ID,
            payload_type: 1,
            payload: b"hello\r\n".to_vec(),
        };
        assert_eq!(m.encode(), by_hand("output_stream_data", 3, ID, 1, b"hello\r\n"));
        assert_eq!(ClientMessage::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn a_wrong_digest_or_length_is_refused() {
        let mut b = by_hand("input_stream_data", 0, ID, 1, b"abc");
        b[85] ^= 1;
        assert_eq!(ClientMessage::decode(&b), Err(FrameError::Digest));
        let mut b = by_hand("input_stream_data", 0, ID, 1, b"abc");
        b.push(0);
        assert_eq!(ClientMessage::decode(&b), Err(FrameError::PayloadLength(3, 4)));
        assert_eq!(ClientMessage::decode(&b[..50]), Err(FrameError::Short(50)));
        let mut b = by_hand("input_stream_data", 0, ID, 1, b"abc");
        b[40..48].fill(0);
        assert_eq!(ClientMessage::decode(&b), Err(FrameError::NoDate));
        // An empty payload is not digest-checked.
        let mut b = by_hand("acknowledge", 0, ID, 0, b"");
        b[80..112].fill(0);
        assert!(ClientMessage::decode(&b).is_ok());
    }

    #[test]
    fn acks_name_the_message_as_the_plugin_expects() {
        let m = ClientMessage::decode(&by_hand("input_stream_data", 9, ID, 1, b"x")).unwrap();
        let a = m.ack(5, [7; 16]);
        assert_eq!((a.message_type.as_str(), a.sequence_number, a.flags, a.payload_type), ("acknowledge", 0, 3, 0));
        let v: serde_json::Value = serde_json::from_slice(&a.payload).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "AcknowledgedMessageType": "input_stream_data",
                "AcknowledgedMessageId": "11223344-5566-4788-99aa-bbccddeeff00",
                "AcknowledgedMessageSequenceNumber": 9,
                "IsSequentialMessage": true,
            })
        );
        assert_eq!(a.message_id, [7; 16]);
    }

    #[test]
    fn commands_split_and_join_like_a_shell() {
        assert_eq!(split_command("/bin/sh").unwrap(), ["/bin/sh"]);
        assert_eq!(split_command(r#"sh -c 'echo hi; exit 3'"#).unwrap(), ["sh", "-c", "echo hi; exit 3"]);
        assert_eq!(split_command(r#"echo "a \"b\" \x" c\ d ''"#).unwrap(), ["echo", r#"a "b" \x"#, "c d", ""]);
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_command("echo 'open"), None);
        let args = ["sh", "-c", "echo it's $HOME; exit 3", ""];
        assert_eq!(split_command(&join_command(&args)).unwrap(), args);
    }
}

//! ECS Exec between the control plane and the node that runs the container: what a session
//! runs ([`ExecTarget`]) and the frames the two ends exchange over the byte stream that
//! carries it (an in-process pipe on the server's own node, an upgraded agent API
//! connection from an agent on another machine). The Session Manager protocol the client
//! speaks ends at the server; nodes only see these frames.
//!
//! May not: do I/O.

use serde::{Deserialize, Serialize};

/// What one exec session runs, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecTarget {
    pub session_id: String,
    /// The node that runs the task.
    pub node: String,
    pub task_arn: String,
    pub task_id: String,
    pub container: String,
    /// The command's arguments (ExecuteCommand's `command`, split as a shell would).
    pub command: Vec<String>,
}

/// One frame of an exec stream: a kind byte, a big-endian u32 length, the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Server → node: bytes for the command's terminal.
    Input(Vec<u8>),
    /// Server → node: the terminal's size.
    Resize { cols: u16, rows: u16 },
    /// Node → server: what the command wrote to its terminal.
    Output(Vec<u8>),
    /// Node → server: the command ended with this code (128 + signal when killed).
    Exit(i32),
    /// Node → server: the command could not be started.
    Error(String),
}

/// The largest frame payload either end accepts.
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unknown exec frame kind {0}")]
    Kind(u8),
    #[error("exec frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("malformed exec frame of kind {0}")]
    Malformed(u8),
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Input(b) => (1, b.clone()),
            Frame::Resize { cols, rows } => (2, [cols.to_be_bytes(), rows.to_be_bytes()].concat()),
            Frame::Output(b) => (3, b.clone()),
            Frame::Exit(c) => (4, c.to_be_bytes().to_vec()),
            Frame::Error(m) => (5, m.as_bytes().to_vec()),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Takes one whole frame off the front of `buf`; `Ok(None)` when more bytes are needed.
    pub fn take(buf: &mut Vec<u8>) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let kind = buf[0];
        let len = u32::from_be_bytes(buf[1..5].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if buf.len() < 5 + len {
            return Ok(None);
        }
        let payload: Vec<u8> = buf.drain(..5 + len).skip(5).collect();
        let frame = match kind {
            1 => Frame::Input(payload),
            2 if payload.len() == 4 => Frame::Resize {
                cols: u16::from_be_bytes([payload[0], payload[1]]),
                rows: u16::from_be_bytes([payload[2], payload[3]]),
            },
            3 => Frame::Output(payload),
            4 if payload.len() == 4 => Frame::Exit(i32::from_be_bytes(payload[..4].try_into().expect("4 bytes"))),
            5 => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
            2 | 4 => return Err(FrameError::Malformed(kind)),
            k => return Err(FrameError::Kind(k)),
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_across_split_reads() {
        let frames = vec![
            Frame::Input(b"echo hi\r".to_vec()),
            Frame::Resize { cols: 120, rows: 40 },
            Frame::Output(vec![]),
            Frame::Exit(-1),
            Frame::Error("no such container".into()),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some(f) = Frame::take(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(Frame::take(&mut vec![9, 0, 0, 0, 0]), Err(FrameError::Kind(9)));
        assert_eq!(Frame::take(&mut vec![2, 0, 0, 0, 1, 0]), Err(FrameError::Malformed(2)));
        assert_eq!(Frame::take(&mut vec![1, 0xff, 0, 0, 0]), Err(FrameError::TooLarge(0xff00_0000)));
    }
}

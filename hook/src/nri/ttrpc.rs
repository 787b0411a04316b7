//! NRI's transport: ttrpc (containerd's small RPC: a 10-byte frame header, protobuf `Request`
//! and `Response` envelopes) carried over one unix socket that NRI multiplexes into logical
//! connections. Written from the protocols' definitions:
//!
//! - mux frame: 4 bytes connection id, 4 bytes payload length (both big-endian), payload. The
//!   payload is a slice of that connection's byte stream (a ttrpc message may span frames).
//!   Connection 1 carries the plugin's service (the runtime calls us), 2 the runtime's (we call it).
//! - ttrpc message: 4 bytes length, 4 bytes stream id (both big-endian), 1 byte type
//!   (1 request, 2 response), 1 byte flags, then `length` bytes of protobuf. Clients use odd
//!   stream ids.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use prost::Message;

pub const PLUGIN_CONN: u32 = 1;
pub const RUNTIME_CONN: u32 = 2;

const MUX_HEADER: usize = 8;
/// NRI's mux refuses larger frames; so do we, on read (a runtime bug, not a reason to allocate).
const MUX_MAX_PAYLOAD: usize = 1 << 24;
const TTRPC_HEADER: usize = 10;
/// ttrpc's default message limit.
const TTRPC_MAX: usize = 4 << 20;

pub const TYPE_REQUEST: u8 = 1;
pub const TYPE_RESPONSE: u8 = 2;

/// gRPC status codes the plugin answers with.
pub const CODE_UNIMPLEMENTED: i32 = 12;
pub const CODE_FAILED_PRECONDITION: i32 = 9;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the runtime closed the NRI connection")]
    Closed,
    #[error("NRI connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("NRI protocol error: {0}")]
    Protocol(String),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    #[prost(int64, tag = "4")]
    pub timeout_nano: i64,
}

/// google.rpc.Status (details left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// One ttrpc message as read from a logical connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub conn: u32,
    pub stream: u32,
    pub kind: u8,
    pub body: Vec<u8>,
}

/// The writing half: every write is one mux frame carrying one whole ttrpc message, under a
/// lock so that messages from several threads never interleave.
#[derive(Clone)]
pub struct Writer {
    sock: Arc<Mutex<UnixStream>>,
}

impl Writer {
    pub fn send(
        &self,
        conn: u32,
        stream: u32,
        kind: u8,
        body: &[u8],
    ) -> Result<(), TransportError> {
        let msg = encode_frame(conn, stream, kind, body)?;
        let mut s = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        s.write_all(&msg)?;
        Ok(())
    }

    pub fn shutdown(&self) {
        let s = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}

/// A mux frame holding one ttrpc message.
pub fn encode_frame(
    conn: u32,
    stream: u32,
    kind: u8,
    body: &[u8],
) -> Result<Vec<u8>, TransportError> {
    if body.len() > TTRPC_MAX {
        return Err(TransportError::Protocol(format!(
            "message of {} bytes exceeds ttrpc's {TTRPC_MAX}",
            body.len()
        )));
    }
    let inner = TTRPC_HEADER + body.len();
    let mut out = Vec::with_capacity(MUX_HEADER + inner);
    out.extend_from_slice(&conn.to_be_bytes());
    out.extend_from_slice(&(inner as u32).to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(kind);
    out.push(0);
    out.extend_from_slice(body);
    Ok(out)
}

/// The reading half: demultiplexes frames into per-connection byte streams and cuts ttrpc
/// messages out of them.
pub struct Reader<R> {
    src: R,
    pending: HashMap<u32, Vec<u8>>,
    ready: std::collections::VecDeque<Frame>,
}

impl<R: Read> Reader<R> {
    pub fn new(src: R) -> Self {
        Reader { src, pending: HashMap::new(), ready: Default::default() }
    }

    /// The next whole ttrpc message on any connection.
    pub fn next_message(&mut self) -> Result<Frame, TransportError> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(f);
            }
            let mut hdr = [0u8; MUX_HEADER];
            read_exact_or_closed(&mut self.src, &mut hdr)?;
            let conn = u32::from_be_bytes(hdr[0..4].try_into().expect("4 bytes"));
            let len = u32::from_be_bytes(hdr[4..8].try_into().expect("4 bytes")) as usize;
            if len > MUX_MAX_PAYLOAD {
                return Err(TransportError::Protocol(format!("mux frame of {len} bytes")));
            }
            let mut payload = vec![0u8; len];
            read_exact_or_closed(&mut self.src, &mut payload)?;
            let buf = self.pending.entry(conn).or_default();
            buf.extend_from_slice(&payload);
            while buf.len() >= TTRPC_HEADER {
                let n = u32::from_be_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
                if n > TTRPC_MAX {
                    return Err(TransportError::Protocol(format!("ttrpc message of {n} bytes")));
                }
                if buf.len() < TTRPC_HEADER + n {
                    break;
                }
                let stream = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
                let kind = buf[8];
                let body = buf[TTRPC_HEADER..TTRPC_HEADER + n].to_vec();
                buf.drain(..TTRPC_HEADER + n);
                self.ready.push_back(Frame { conn, stream, kind, body });
            }
        }
    }
}

fn read_exact_or_closed(r: &mut impl Read, buf: &mut [u8]) -> Result<(), TransportError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(TransportError::Closed),
        Err(e) => Err(TransportError::Io(e)),
    }
}

/// Splits a connected socket into its reader and its shared writer.
pub fn split(sock: UnixStream) -> Result<(Reader<UnixStream>, Writer), TransportError> {
    let r = sock.try_clone()?;
    Ok((Reader::new(r), Writer { sock: Arc::new(Mutex::new(sock)) }))
}

/// A ttrpc response body: the payload, or a status with a message.
pub fn response(result: Result<Vec<u8>, (i32, String)>) -> Vec<u8> {
    match result {
        Ok(payload) => Response { status: None, payload }.encode_to_vec(),
        Err((code, message)) => {
            Response { status: Some(Status { code, message }), payload: vec![] }.encode_to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_split_over_mux_frames_and_two_in_one_frame_are_both_read_whole() {
        let a = encode_frame(PLUGIN_CONN, 1, TYPE_REQUEST, b"hello").unwrap();
        let b = encode_frame(PLUGIN_CONN, 3, TYPE_REQUEST, b"world!").unwrap();
        // Re-frame: a's ttrpc message in two mux frames, b's after the second part of a.
        let inner_a = &a[MUX_HEADER..];
        let inner_b = &b[MUX_HEADER..];
        let mut wire = Vec::new();
        let mut frame = |conn: u32, data: &[u8]| {
            wire.extend_from_slice(&conn.to_be_bytes());
            wire.extend_from_slice(&(data.len() as u32).to_be_bytes());
            wire.extend_from_slice(data);
        };
        frame(PLUGIN_CONN, &inner_a[..4]);
        frame(RUNTIME_CONN, &encode_frame(0, 1, TYPE_RESPONSE, b"r").unwrap()[MUX_HEADER..]);
        let mut rest = inner_a[4..].to_vec();
        rest.extend_from_slice(inner_b);
        frame(PLUGIN_CONN, &rest);
        let mut r = Reader::new(&wire[..]);
        let f = r.next_message().unwrap();
        assert_eq!(
            (f.conn, f.stream, f.kind, f.body.as_slice()),
            (RUNTIME_CONN, 1, TYPE_RESPONSE, &b"r"[..])
        );
        let f = r.next_message().unwrap();
        assert_eq!((f.conn, f.stream, f.body.as_slice()), (PLUGIN_CONN, 1, &b"hello"[..]));
        let f = r.next_message().unwrap();
        assert_eq!((f.conn, f.stream, f.body.as_slice()), (PLUGIN_CONN, 3, &b"world!"[..]));
        assert!(matches!(r.next_message(), Err(TransportError::Closed)));
    }

    #[test]
    fn the_header_layout_is_big_endian_conn_length_then_ttrpc_length_stream_type_flags() {
        let f = encode_frame(2, 7, TYPE_REQUEST, &[0xaa, 0xbb]).unwrap();
        assert_eq!(f, [0, 0, 0, 2, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 7, 1, 0, 0xaa, 0xbb]);
    }

    #[test]
    fn oversized_frames_are_a_protocol_error_not_an_allocation() {
        let mut wire = vec![0, 0, 0, 1];
        wire.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Reader::new(&wire[..]).next_message(), Err(TransportError::Protocol(_))));
    }
}

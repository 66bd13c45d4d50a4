//! MongoDB wire-protocol framing: reading OP_MSG (kind-0 body, kind-1 document
//! sequences folded into the body as arrays, checksum tolerated, moreToCome noted) and
//! the legacy OP_QUERY handshake, and writing OP_MSG / OP_REPLY replies.

use bson::{Bson, Document};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// OP_REPLY opcode (legacy reply to OP_QUERY).
const OP_REPLY: i32 = 1;
/// OP_QUERY opcode (legacy; only the handshake uses it).
const OP_QUERY: i32 = 2004;
/// OP_MSG opcode.
const OP_MSG: i32 = 2013;
/// OP_COMPRESSED opcode (never negotiated; rejected).
const OP_COMPRESSED: i32 = 2012;
/// Largest message accepted (`maxMessageSizeBytes`).
pub const MAX_MESSAGE_SIZE: usize = 48_000_000;

/// Largest request buffer a connection keeps between requests.
const KEEP_BUFFER: usize = 16 * 1024 * 1024;

const CHECKSUM_PRESENT: u32 = 1;
const MORE_TO_COME: u32 = 1 << 1;

/// How the request arrived, which decides the reply framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// OP_MSG: reply with OP_MSG.
    Msg,
    /// OP_QUERY: reply with OP_REPLY.
    Query,
}

/// A decoded client request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The header's requestID (the reply's responseTo).
    pub request_id: i32,
    /// The command document, document sequences merged in as array fields.
    pub body: Document,
    /// moreToCome: the client expects no reply.
    pub more_to_come: bool,
    /// Framing to reply with.
    pub framing: Framing,
    /// For OP_QUERY: the `fullCollectionName` (e.g. `admin.$cmd`).
    pub full_collection_name: Option<String>,
}

/// Reasons to drop a connection.
#[derive(Debug)]
pub enum WireError {
    /// Socket error or clean EOF.
    Io(std::io::Error),
    /// Malformed or unsupported message.
    Protocol(String),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        WireError::Io(e)
    }
}

/// Read one message into `payload` (a connection's buffer, reused so a large request
/// costs no fresh zeroed allocation). `Ok(None)` at a clean end of stream.
pub async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
    payload: &mut Vec<u8>,
) -> Result<Option<Request>, WireError> {
    let mut header = [0u8; 16];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let request_id = i32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let op_code = i32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    if len < 16 || len as usize > MAX_MESSAGE_SIZE {
        return Err(WireError::Protocol(format!("bad message length {len}")));
    }
    let need = len as usize - 16;
    if payload.capacity() > KEEP_BUFFER && need <= KEEP_BUFFER {
        // One huge request does not pin its buffer for the connection's lifetime.
        *payload = Vec::new();
    }
    payload.resize(need, 0);
    r.read_exact(payload).await?;
    match op_code {
        OP_MSG => parse_msg(request_id, payload).map(Some),
        OP_QUERY => parse_query(request_id, payload).map(Some),
        OP_COMPRESSED => Err(WireError::Protocol("compression was not negotiated".into())),
        other => Err(WireError::Protocol(format!("unsupported opcode {other}"))),
    }
}

fn parse_msg(request_id: i32, p: &[u8]) -> Result<Request, WireError> {
    let bad = |m: &str| WireError::Protocol(m.to_string());
    if p.len() < 4 {
        return Err(bad("short OP_MSG"));
    }
    let flags = u32::from_le_bytes(p[0..4].try_into().expect("4 bytes"));
    let end = if flags & CHECKSUM_PRESENT != 0 {
        p.len()
            .checked_sub(4)
            .ok_or_else(|| bad("short checksum"))?
    } else {
        p.len()
    };
    let mut pos = 4;
    let mut body: Option<Document> = None;
    let mut sequences: Vec<(String, Vec<Bson>)> = Vec::new();
    while pos < end {
        let kind = p[pos];
        pos += 1;
        match kind {
            0 => {
                let (d, n) = read_doc(&p[pos..end])?;
                if body.is_some() {
                    return Err(bad("two kind-0 sections"));
                }
                body = Some(d);
                pos += n;
            }
            1 => {
                let size = read_i32(&p[pos..end])? as usize;
                if size < 5 || pos + size > end {
                    return Err(bad("bad document sequence size"));
                }
                let sec = &p[pos + 4..pos + size];
                let nul = sec
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| bad("unterminated identifier"))?;
                let ident = String::from_utf8_lossy(&sec[..nul]).into_owned();
                let mut at = nul + 1;
                let mut docs = Vec::new();
                while at < sec.len() {
                    let (d, n) = read_doc(&sec[at..])?;
                    docs.push(Bson::Document(d));
                    at += n;
                }
                sequences.push((ident, docs));
                pos += size;
            }
            _ => return Err(bad("unknown section kind")),
        }
    }
    let mut body = body.ok_or_else(|| bad("OP_MSG without body"))?;
    for (ident, docs) in sequences {
        body.insert(ident, Bson::Array(docs));
    }
    Ok(Request {
        request_id,
        body,
        more_to_come: flags & MORE_TO_COME != 0,
        framing: Framing::Msg,
        full_collection_name: None,
    })
}

fn parse_query(request_id: i32, p: &[u8]) -> Result<Request, WireError> {
    let bad = |m: &str| WireError::Protocol(m.to_string());
    if p.len() < 4 {
        return Err(bad("short OP_QUERY"));
    }
    let rest = &p[4..];
    let nul = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| bad("unterminated collection name"))?;
    let name = String::from_utf8_lossy(&rest[..nul]).into_owned();
    let at = nul + 1 + 8; // numberToSkip, numberToReturn
    if rest.len() < at {
        return Err(bad("short OP_QUERY"));
    }
    let (mut query, _) = read_doc(&rest[at..])?;
    // Drivers may wrap the command as {$query: cmd, $readPreference: …}.
    if let Ok(inner) = query.get_document("$query") {
        query = inner.clone();
    }
    Ok(Request {
        request_id,
        body: query,
        more_to_come: false,
        framing: Framing::Query,
        full_collection_name: Some(name),
    })
}

fn read_i32(b: &[u8]) -> Result<i32, WireError> {
    if b.len() < 4 {
        return Err(WireError::Protocol("truncated int".into()));
    }
    Ok(i32::from_le_bytes(b[0..4].try_into().expect("4 bytes")))
}

fn read_doc(b: &[u8]) -> Result<(Document, usize), WireError> {
    let n = read_i32(b)?;
    if n < 5 || n as usize > b.len() {
        return Err(WireError::Protocol("bad document length".into()));
    }
    let n = n as usize;
    let d = Document::from_reader(&mut &b[..n])
        .map_err(|e| WireError::Protocol(format!("invalid BSON: {e}")))?;
    Ok((d, n))
}

/// Encode a reply to `request` carrying the encoded document `body`.
pub fn encode_reply(request: &Request, reply_id: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 40);
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&reply_id.to_le_bytes());
    out.extend_from_slice(&request.request_id.to_le_bytes());
    match request.framing {
        Framing::Msg => {
            out.extend_from_slice(&OP_MSG.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.push(0);
        }
        Framing::Query => {
            out.extend_from_slice(&OP_REPLY.to_le_bytes());
            out.extend_from_slice(&0i32.to_le_bytes()); // responseFlags
            out.extend_from_slice(&0i64.to_le_bytes()); // cursorID
            out.extend_from_slice(&0i32.to_le_bytes()); // startingFrom
            out.extend_from_slice(&1i32.to_le_bytes()); // numberReturned
        }
    }
    out.extend_from_slice(body);
    let len = out.len() as i32;
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out
}

/// Write an encoded reply.
pub async fn write_reply<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "i/o error: {e}"),
            WireError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for WireError {}

//! Frames: one tag byte, a big-endian u32 payload length, the payload.
//!
//! | tag | payload |
//! |-----|---------|
//! | `J` | a JSON object: request, reply, greeting, or an error |
//! | `D` | a chunk of file data |
//! | `E` | end of a data stream (empty) |
//! | `A` | the sender abandons the data stream it was sending (empty) |

use std::io::{self, Read, Write};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Larger frames are refused: a corrupt length must not make us allocate gigabytes.
pub const MAX_FRAME: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Json(Value),
    Data(Vec<u8>),
    End,
    Abort,
}

/// For messages about a frame that came where another was expected: its kind and size, and
/// the start of a JSON one. Never the payload of a data frame, which is up to a chunk of file
/// content, in an error line or a log.
impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frame::Json(v) => {
                let text = v.to_string();
                match text.char_indices().nth(200) {
                    Some((cut, _)) => write!(f, "a JSON frame {}...", &text[..cut]),
                    None => write!(f, "a JSON frame {text}"),
                }
            }
            Frame::Data(d) => write!(f, "a data frame of {} bytes", d.len()),
            Frame::End => f.write_str("an end frame"),
            Frame::Abort => f.write_str("an abort frame"),
        }
    }
}

fn header(tag: u8, len: usize) -> [u8; 5] {
    let l = (len as u32).to_be_bytes();
    [tag, l[0], l[1], l[2], l[3]]
}

pub fn encode_json(v: &Value) -> Vec<u8> {
    let body = v.to_string().into_bytes();
    let mut out = header(b'J', body.len()).to_vec();
    out.extend_from_slice(&body);
    out
}

pub fn write_json(w: &mut dyn Write, v: &Value) -> io::Result<()> {
    w.write_all(&encode_json(v))
}

pub fn write_data(w: &mut dyn Write, data: &[u8]) -> io::Result<()> {
    w.write_all(&header(b'D', data.len()))?;
    w.write_all(data)
}

pub fn write_empty(w: &mut dyn Write, tag: u8) -> io::Result<()> {
    w.write_all(&header(tag, 0))
}

fn decode(tag: u8, payload: Vec<u8>) -> io::Result<Frame> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    match tag {
        b'J' => serde_json::from_slice(&payload)
            .map(Frame::Json)
            .map_err(|_| bad("invalid JSON frame")),
        b'D' => Ok(Frame::Data(payload)),
        b'E' => Ok(Frame::End),
        b'A' => Ok(Frame::Abort),
        _ => Err(bad("unknown frame tag")),
    }
}

fn check_len(len: usize) -> io::Result<()> {
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too large"),
        ));
    }
    Ok(())
}

/// Reads one frame; `None` on a clean end of stream before a frame starts.
pub fn read_frame(r: &mut dyn Read) -> io::Result<Option<Frame>> {
    let mut h = [0u8; 5];
    let mut got = 0;
    while got < 5 {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    check_len(len)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    decode(h[0], payload).map(Some)
}

pub async fn read_frame_async<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
) -> io::Result<Option<Frame>> {
    let mut h = [0u8; 5];
    let n = r.read(&mut h[..1]).await?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut h[1..]).await?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    check_len(len)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    decode(h[0], payload).map(Some)
}

pub async fn write_frame_async<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    tag: u8,
    payload: &[u8],
) -> io::Result<()> {
    w.write_all(&header(tag, payload.len())).await?;
    w.write_all(payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let mut buf = Vec::new();
        write_json(&mut buf, &serde_json::json!({"op": "list"})).unwrap();
        write_data(&mut buf, b"abc").unwrap();
        write_empty(&mut buf, b'E').unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some(Frame::Json(serde_json::json!({"op": "list"})))
        );
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some(Frame::Data(b"abc".to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), Some(Frame::End));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let huge = header(b'D', MAX_FRAME + 1);
        assert!(read_frame(&mut &huge[..]).is_err());
        assert!(read_frame(&mut &b"X\0\0\0\0"[..]).is_err());
        assert!(read_frame(&mut &b"D\0\0"[..]).is_err(), "truncated header");
    }

    /// Error lines name a stray frame without its payload (a data frame is up to a chunk of
    /// file content) and only the start of a long JSON one.
    #[test]
    fn a_frame_in_a_message_is_short() {
        assert_eq!(
            Frame::Data(vec![7; 512 * 1024]).to_string(),
            "a data frame of 524288 bytes"
        );
        let long = Frame::Json(serde_json::json!({ "ok": "é".repeat(1000) })).to_string();
        assert!(long.starts_with("a JSON frame {\"ok\":\"éé") && long.ends_with("..."));
        assert!(long.chars().count() < 220, "{long}");
        assert_eq!(
            Frame::Json(serde_json::json!({"ok": 1})).to_string(),
            "a JSON frame {\"ok\":1}"
        );
        assert_eq!(Frame::End.to_string(), "an end frame");
    }
}

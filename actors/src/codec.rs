//! Framing and encoding of admin messages: a 4-byte big-endian length, then
//! the message encoded with bincode.
//!
//! Every use of bincode in kiln is in this file. bincode's maintainers have
//! stopped development (3.0.0 is only a `compile_error!`), so it is pinned to
//! 2.0.1; moving to wincode (bincode-compatible) or postcard changes only
//! this file. Decoding is bounded (`max_frame`, and bincode's own allocation
//! limit), so a hostile length never allocates more than a frame's worth.
//!
//! Answers are the exception to that allocation limit: a client trusts the
//! daemon it connected to, and an answer may decode to more than its frame
//! (a list of 100,000 nodes does), or be longer than a frame and arrive in
//! parts ([`crate::protocol::Response::Part`]). Answers are decoded with
//! [`decode_answer`], bounded by [`MAX_ANSWER`] instead.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The default largest frame (ARCHITECTURE.md, "API boundaries").
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// The most a client takes of one answer, all its parts together, and
/// lets it allocate once decoded.
pub const MAX_ANSWER: usize = 1 << 30;

/// The bincode configuration: standard, with an allocation limit equal to
/// the default largest frame.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DEFAULT_MAX_FRAME>()
}

/// The same, with the allocation limit of an answer.
fn answer_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_ANSWER>()
}

/// A frame could not be read, written, encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("connection error")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes a message as one frame (length prefix included).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    frame_of(&encode_body(msg)?)
}

/// Encodes a message without its length prefix.
pub fn encode_body<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(msg, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Puts the length prefix before an encoded message.
pub fn frame_of(body: &[u8]) -> Result<Vec<u8>, CodecError> {
    let len =
        u32::try_from(body.len()).map_err(|_| CodecError::TooLarge { len: body.len(), max: u32::MAX as usize })?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    Ok(frame)
}

/// Decodes one frame's body; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let decoded = bincode::serde::decode_from_slice(body, config());
    whole(body, decoded.map_err(|e| CodecError::Decode(e.to_string()))?)
}

/// Decodes an answer from the daemon: one frame's body, or the parts of a
/// long answer joined. Its allocation limit is [`MAX_ANSWER`].
pub fn decode_answer<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let decoded = bincode::serde::decode_from_slice(body, answer_config());
    whole(body, decoded.map_err(|e| CodecError::Decode(e.to_string()))?)
}

/// The decoded message, unless bytes were left after it.
fn whole<T>(body: &[u8], (msg, used): (T, usize)) -> Result<T, CodecError> {
    if used != body.len() {
        return Err(CodecError::Decode(format!("{} bytes after the message", body.len() - used)));
    }
    Ok(msg)
}

/// Reads one frame's length; `Ok(None)` at a clean end of stream.
pub async fn read_len<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<usize>, CodecError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    Ok(Some(len))
}

/// Reads one frame's body of `len` bytes. The buffer grows with the bytes
/// that actually arrive, so a peer announcing a large frame and sending
/// little holds little memory.
pub async fn read_body<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<Vec<u8>, CodecError> {
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let got = (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if got < len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(body)
}

/// Reads and decodes one message; `Ok(None)` at a clean end of stream.
pub async fn read_message<R, T>(r: &mut R, max: usize) -> Result<Option<T>, CodecError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let Some(len) = read_len(r, max).await? else {
        return Ok(None);
    };
    let body = read_body(r, len).await?;
    decode(&body).map(Some)
}

/// Encodes and writes one message.
pub async fn write_message<W, T>(w: &mut W, msg: &T) -> Result<(), CodecError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let frame = encode_frame(msg)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PROTOCOL_VERSION, Request};

    #[test]
    fn a_request_round_trips() {
        let req = Request::Hello { version: PROTOCOL_VERSION, client: "test".into() };
        let frame = encode_frame(&req).unwrap();
        assert_eq!(u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
        assert_eq!(decode::<Request>(&frame[4..]).unwrap(), req);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [&[][..], &[0xff; 3][..], &[200, 1, 2, 3, 4, 5, 6, 7][..], &[0xfc, 0xff, 0xff, 0xff, 0xff][..]] {
            assert!(decode::<Request>(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn an_answer_may_decode_to_more_than_a_frame_a_request_may_not() {
        // 3 MB encoded, 26 MB in memory: as 100,000 nodes (11 MB encoded)
        // are larger decoded than the 16 MiB a request may claim.
        let list = vec![[1u64; 16]; 200_000];
        let body = encode_body(&list).unwrap();
        assert!(body.len() < DEFAULT_MAX_FRAME / 4, "{}", body.len());
        let err = decode::<Vec<[u64; 16]>>(&body).unwrap_err();
        assert!(err.to_string().contains("LimitExceeded"), "{err}");
        assert_eq!(decode_answer::<Vec<[u64; 16]>>(&body).unwrap(), list);
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_reading_the_body() {
        let mut input: &[u8] = &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = read_len(&mut input, DEFAULT_MAX_FRAME).await.unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { .. }), "{err}");
    }
}

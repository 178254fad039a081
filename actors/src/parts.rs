//! Answers longer than a frame, sent in parts.
//!
//! Why: the admin protocol bounds every frame by `max_frame` (16 MiB by
//! default; ARCHITECTURE.md, "API boundaries"), and some answers are longer
//! at the sizes kiln is built for:
//! `kiln job list --limit 0` over a million live jobs is 196 MB, and
//! `kiln node list` on 100,000 demo nodes is 11 MB, more with real nodes'
//! driver info and properties. Such an answer used to reach the CLI as
//! "lost the connection to the daemon: frame of ... bytes is larger than
//! the limit". Now the
//! daemon cuts the answer's encoding into [`Response::Part`]s, each one frame
//! holding one encoded message as the framing rule asks, and the client
//! joins them and decodes the whole once. Cutting bytes rather than lists
//! works for every answer, a job with 100,000 per-node results included,
//! and the client decodes what it would have decoded from one frame.
//!
//! A short answer is one frame, as before; a client that never meets a long
//! answer never sees a part.

use crate::codec::{self, CodecError, DEFAULT_MAX_FRAME, MAX_ANSWER};
use crate::protocol::Response;

/// What a part's own encoding adds to its bytes: the variant, the length
/// of the bytes and the `last` flag (at most 1 + 10 + 1).
const PART_OVERHEAD: usize = 16;

/// The frames that carry `answer` to a client that reads frames of up to
/// `max_frame` bytes (and never more than [`DEFAULT_MAX_FRAME`], the most a
/// client takes): one frame when it fits, else its parts.
pub fn answer_frames(answer: &Response, max_frame: usize) -> Result<Vec<Vec<u8>>, CodecError> {
    let body = codec::encode_body(answer)?;
    let max_frame = max_frame.min(DEFAULT_MAX_FRAME);
    if body.len() <= max_frame {
        return Ok(vec![codec::frame_of(&body)?]);
    }
    let piece = max_frame.saturating_sub(PART_OVERHEAD).max(1);
    let count = body.len().div_ceil(piece);
    body.chunks(piece)
        .enumerate()
        .map(|(i, bytes)| codec::encode_frame(&Response::Part { bytes: bytes.to_vec(), last: i + 1 == count }))
        .collect()
}

/// Puts an answer back together from what the client reads, frame by frame.
#[derive(Default)]
pub struct Joiner {
    bytes: Vec<u8>,
}

impl Joiner {
    /// Takes one frame's body: the answer when it is complete (a plain
    /// answer, or the last part), `None` while parts are still to come.
    pub fn take(&mut self, body: &[u8]) -> Result<Option<Response>, CodecError> {
        match codec::decode_answer(body)? {
            Response::Part { bytes, last } => {
                if self.bytes.len() + bytes.len() > MAX_ANSWER {
                    return Err(CodecError::TooLarge { len: self.bytes.len() + bytes.len(), max: MAX_ANSWER });
                }
                self.bytes.extend_from_slice(&bytes);
                if !last {
                    return Ok(None);
                }
                let whole = std::mem::take(&mut self.bytes);
                match codec::decode_answer(&whole)? {
                    Response::Part { .. } => Err(CodecError::Decode("a part inside a part".into())),
                    answer => Ok(Some(answer)),
                }
            }
            answer if self.bytes.is_empty() => Ok(Some(answer)),
            _ => Err(CodecError::Decode("an answer came between the parts of another".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KilnError;

    fn join(frames: &[Vec<u8>]) -> Vec<Option<Response>> {
        let mut joiner = Joiner::default();
        frames.iter().map(|f| joiner.take(&f[4..]).unwrap()).collect()
    }

    fn long_answer() -> Response {
        Response::Error(KilnError::InvalidInput("x".repeat(10_000)))
    }

    #[test]
    fn a_short_answer_is_one_plain_frame() {
        let answer = Response::Done;
        let frames = answer_frames(&answer, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(frames, [codec::encode_frame(&answer).unwrap()]);
        assert_eq!(join(&frames), [Some(answer)]);
    }

    #[test]
    fn a_long_answer_comes_in_parts_none_longer_than_a_frame() {
        let answer = long_answer();
        let frames = answer_frames(&answer, 1024).unwrap();
        assert_eq!(frames.len(), 10, "10,000 bytes in pieces of 1,008");
        for frame in &frames {
            assert!(frame.len() - 4 <= 1024, "{}", frame.len());
            assert_eq!(u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
        }
        let joined = join(&frames);
        assert!(joined[..9].iter().all(Option::is_none));
        assert_eq!(joined[9], Some(answer));
    }

    #[test]
    fn a_frame_limit_above_what_clients_take_is_held_to_it() {
        let answer = Response::Error(KilnError::InvalidInput("x".repeat(DEFAULT_MAX_FRAME + 10)));
        let frames = answer_frames(&answer, 4 * DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|f| f.len() - 4 <= DEFAULT_MAX_FRAME));
        assert_eq!(join(&frames)[1], Some(answer));
    }

    #[test]
    fn parts_out_of_order_or_nested_are_errors_not_answers() {
        let frames = answer_frames(&long_answer(), 1024).unwrap();
        let mut joiner = Joiner::default();
        assert_eq!(joiner.take(&frames[0][4..]).unwrap(), None);
        let err = joiner.take(&codec::encode_body(&Response::Done).unwrap()).unwrap_err();
        assert!(err.to_string().contains("between the parts"), "{err}");

        let inner = codec::encode_body(&Response::Part { bytes: vec![1, 2], last: true }).unwrap();
        let nested = codec::encode_body(&Response::Part { bytes: inner, last: true }).unwrap();
        let err = Joiner::default().take(&nested).unwrap_err();
        assert!(err.to_string().contains("a part inside a part"), "{err}");
    }
}

//! The typed messages between strata and its sandbox processes, as frames: a little-endian u32
//! length, then that many bytes of JSON. A frame never reads past its own end (a reader takes
//! exactly what the length says), so one pipe carries the task and, later, a signal, without a
//! buffered reader swallowing the second; a length over [`MAX_FRAME`] is refused before any
//! allocation.
//!
//! Three channels, each in one direction:
//! - the task pipe (strata → child, the child's fd 4): the [`Task`](super::Task), then
//!   [`ToChild`] signals;
//! - the report pipe (child → strata, fd 3): [`Report`](super::Report)s until EOF;
//! - the session socket (a SOCK_SEQPACKET pair): a one-byte request carrying the new child's
//!   descriptors (SCM_RIGHTS), answered by a [`SessionReply`] datagram.

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The largest frame accepted: a spec with a build's whole environment and mounts is far below.
pub const MAX_FRAME: u32 = 64 << 20;

/// What strata tells a sandbox child after its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToChild {
    /// The session only: the uid/gid maps of its user namespace are written.
    Mapped,
    /// slirp4netns has configured the step's network namespace: the process may start.
    NetworkReady,
}

/// The byte that starts a request for a child (with its descriptors).
pub const FORK_REQUEST: u8 = b'T';
/// The byte that starts a [`SessionRequest`] (JSON after it, no descriptors).
pub const JSON_REQUEST: u8 = b'E';
/// The largest request datagram the session reads.
pub const MAX_REQUEST: usize = 64 << 10;

/// A request to the session other than a fork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionRequest {
    /// Register these handlers in the session's own binfmt_misc instance (mounted on the first
    /// such request): see [`super::emulation`].
    Emulate(Vec<super::binfmt::Registration>),
}

/// The session's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionReply {
    /// The child for the request exists with this pid (in strata's pid namespace).
    Started(u32),
    /// The session could not make the child (or do the request).
    Failed(super::SetupError),
    /// The handlers of an [`SessionRequest::Emulate`] are registered.
    Emulating,
    /// The session could not have a binfmt_misc instance of its own (nothing is mounted: the
    /// host's handlers apply as they are).
    NoInstance(super::SetupError),
}

/// `msg` as one frame's bytes, or an error naming its size when it is over [`MAX_FRAME`].
pub fn encode_frame<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|n| *n <= MAX_FRAME)
        .ok_or_else(|| {
            io::Error::other(format!(
                "a frame of {} bytes is over the sandbox's limit of {} bytes",
                body.len(),
                MAX_FRAME
            ))
        })?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&body);
    Ok(buf)
}

/// Write `msg` as one frame (one write call: a frame under PIPE_BUF is atomic on a pipe).
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    w.write_all(&encode_frame(msg)?)
}

/// Read one frame; `Ok(None)` at a clean end of the stream (no byte of a new frame).
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a frame of {len} bytes is over the limit"
        )));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_never_read_past_their_end() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &SessionReply::Started(42)).unwrap();
        write_frame(&mut buf, &ToChild::NetworkReady).unwrap();
        let mut r = io::Cursor::new(buf);
        let a: SessionReply = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(a, SessionReply::Started(42));
        // The first read left the second frame whole.
        let b: ToChild = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(b, ToChild::NetworkReady);
        assert!(read_frame::<ToChild>(&mut r).unwrap().is_none());
    }

    #[test]
    fn a_truncated_or_oversized_frame_is_an_error_not_an_allocation() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &ToChild::Mapped).unwrap();
        buf.pop();
        assert!(read_frame::<ToChild>(&mut io::Cursor::new(buf)).is_err());
        let huge = (MAX_FRAME + 1).to_le_bytes().to_vec();
        let e = read_frame::<ToChild>(&mut io::Cursor::new(huge)).unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");
        // Half a length is a truncated stream, not a clean end.
        assert!(read_frame::<ToChild>(&mut io::Cursor::new(vec![1u8, 0])).is_err());
    }
}

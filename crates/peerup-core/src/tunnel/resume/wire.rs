//! The resumable session's messages: the hello that opens or resumes a session on a fresh
//! underlying connection, its reply, and the frames that follow.
//!
//! Every integer is big-endian. Every length a peer sends is checked against a bound before
//! anything is allocated for it.

use futures::{AsyncRead, AsyncReadExt};

/// Version byte of the hello.
const VERSION: u8 = 1;
/// The most bytes one data frame carries.
pub(crate) const MAX_FRAME: usize = 64 * 1024;

/// A session's identity: random, made by the dialling side, known only to the two ends (it only
/// ever travels inside their authenticated, encrypted connections), and looked up only under the
/// peer ID that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Id(pub(crate) [u8; 16]);

impl Id {
    /// A fresh random identity.
    pub(crate) fn random() -> Result<Self, getrandom::Error> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)?;
        Ok(Self(id))
    }
}

/// A malformed message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed resumable-session message: {0}")]
pub(crate) struct Malformed(pub(crate) &'static str);

/// What the dialling side asks on a fresh underlying connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hello {
    /// A new session to `service`.
    New { id: Id, service: String },
    /// Continue session `id`; the dialler has received `received` bytes of it.
    Resume { id: Id, received: u64 },
}

/// The answer to a [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Go on; the answering side has received `received` bytes of the session.
    Ok { received: u64 },
    /// No such session (ended, expired, or never this peer's).
    Unknown,
    /// The service is not offered to this peer.
    Refused,
    /// The service could not be reached.
    Unavailable,
}

/// One frame after the hello, either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// The next bytes of the stream.
    Data(Vec<u8>),
    /// Everything up to this offset has arrived.
    Ack(u64),
    /// Everything up to this offset has arrived, and it is the end of the stream.
    AckFin(u64),
    /// The stream ends at this offset (the sender's local socket read its end).
    Fin(u64),
    /// The sender's local socket failed: reset yours.
    Reset,
}

const NEW: u8 = 0;
const RESUME: u8 = 1;
const DATA: u8 = 0;
const ACK: u8 = 1;
const FIN: u8 = 2;
const RESET: u8 = 3;
const ACK_FIN: u8 = 4;

impl Hello {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, Malformed> {
        let mut out = vec![VERSION];
        match self {
            Hello::New { id, service } => {
                let len =
                    u8::try_from(service.len()).map_err(|_| Malformed("service name too long"))?;
                out.push(NEW);
                out.extend_from_slice(&id.0);
                out.push(len);
                out.extend_from_slice(service.as_bytes());
            }
            Hello::Resume { id, received } => {
                out.push(RESUME);
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&received.to_be_bytes());
            }
        }
        Ok(out)
    }

    pub(crate) async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Self, ReadError> {
        let mut head = [0u8; 18];
        r.read_exact(&mut head).await?;
        let [version, kind, id @ ..] = head;
        if version != VERSION {
            return Err(Malformed("unknown hello version").into());
        }
        let id = Id(id);
        match kind {
            NEW => {
                let mut len = [0u8; 1];
                r.read_exact(&mut len).await?;
                let mut name = vec![0u8; usize::from(len[0])];
                r.read_exact(&mut name).await?;
                let service =
                    String::from_utf8(name).map_err(|_| Malformed("service name is not UTF-8"))?;
                Ok(Hello::New { id, service })
            }
            RESUME => Ok(Hello::Resume { id, received: read_u64(r).await? }),
            _ => Err(Malformed("unknown hello kind").into()),
        }
    }
}

impl Reply {
    pub(crate) fn encode(&self) -> [u8; 9] {
        let (status, received) = match self {
            Reply::Ok { received } => (0, *received),
            Reply::Unknown => (1, 0),
            Reply::Refused => (2, 0),
            Reply::Unavailable => (3, 0),
        };
        let mut out = [0u8; 9];
        out[0] = status;
        out[1..].copy_from_slice(&received.to_be_bytes());
        out
    }

    pub(crate) async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Self, ReadError> {
        let mut b = [0u8; 9];
        r.read_exact(&mut b).await?;
        let received = u64::from_be_bytes(b[1..].try_into().unwrap_or_default());
        match b[0] {
            0 => Ok(Reply::Ok { received }),
            1 => Ok(Reply::Unknown),
            2 => Ok(Reply::Refused),
            3 => Ok(Reply::Unavailable),
            _ => Err(Malformed("unknown reply status").into()),
        }
    }
}

/// Reading a message failed: the connection under it, or the message itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The connection failed or ended.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something malformed.
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

async fn read_u64<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).await?;
    Ok(u64::from_be_bytes(b))
}

/// The header of a data frame carrying `len` bytes (which follow it).
pub(crate) fn data_header(len: usize) -> [u8; 5] {
    let mut h = [DATA, 0, 0, 0, 0];
    h[1..].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

impl Frame {
    /// A control frame's bytes (a data frame is written as [`data_header`] and its bytes).
    pub(crate) fn encode_control(&self) -> Vec<u8> {
        match self {
            Frame::Data(bytes) => [&data_header(bytes.len())[..], bytes].concat(),
            Frame::Ack(at) => [&[ACK][..], &at.to_be_bytes()].concat(),
            Frame::AckFin(at) => [&[ACK_FIN][..], &at.to_be_bytes()].concat(),
            Frame::Fin(at) => [&[FIN][..], &at.to_be_bytes()].concat(),
            Frame::Reset => vec![RESET],
        }
    }

    /// Reads one frame; a data frame's bytes go into `buf` (resized to fit).
    pub(crate) async fn read<R: AsyncRead + Unpin>(
        r: &mut R,
        buf: &mut Vec<u8>,
    ) -> Result<Frame, ReadError> {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).await?;
        match tag[0] {
            DATA => {
                let mut len = [0u8; 4];
                r.read_exact(&mut len).await?;
                let len = u32::from_be_bytes(len) as usize;
                if len == 0 || len > MAX_FRAME {
                    return Err(Malformed("data frame length out of bounds").into());
                }
                buf.resize(len, 0);
                r.read_exact(buf).await?;
                Ok(Frame::Data(std::mem::take(buf)))
            }
            ACK => Ok(Frame::Ack(read_u64(r).await?)),
            ACK_FIN => Ok(Frame::AckFin(read_u64(r).await?)),
            FIN => Ok(Frame::Fin(read_u64(r).await?)),
            RESET => Ok(Frame::Reset),
            _ => Err(Malformed("unknown frame").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn hello_of(bytes: &[u8]) -> Result<Hello, ReadError> {
        Hello::read(&mut &bytes[..]).await
    }

    #[tokio::test]
    async fn messages_round_trip() {
        let id = Id::random().unwrap();
        for hello in
            [Hello::New { id, service: "ssh".into() }, Hello::Resume { id, received: u64::MAX - 3 }]
        {
            assert_eq!(hello_of(&hello.encode().unwrap()).await.unwrap(), hello);
        }
        for reply in
            [Reply::Ok { received: 77 }, Reply::Unknown, Reply::Refused, Reply::Unavailable]
        {
            assert_eq!(Reply::read(&mut &reply.encode()[..]).await.unwrap(), reply);
        }
        let mut buf = Vec::new();
        for frame in [
            Frame::Data(vec![1, 2, 3]),
            Frame::Ack(9),
            Frame::AckFin(9),
            Frame::Fin(10),
            Frame::Reset,
        ] {
            let bytes = frame.encode_control();
            assert_eq!(Frame::read(&mut &bytes[..], &mut buf).await.unwrap(), frame);
        }
        assert_ne!(Id::random().unwrap(), id, "identities are random");
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic_or_an_allocation() {
        let id = [7u8; 16];
        let mut bad: Vec<Vec<u8>> = vec![
            vec![],
            vec![2, 0],                                    // unknown version
            [&[1, 9][..], &id].concat(),                   // unknown kind
            [&[1, 0][..], &id, &[5, b'a']].concat(),       // name cut short
            [&[1, 0][..], &id, &[2, 0xff, 0xfe]].concat(), // not UTF-8
            [&[1, 1][..], &id, &[0; 4]].concat(),          // offset cut short
        ];
        for b in bad.drain(..) {
            assert!(hello_of(&b).await.is_err(), "{b:?}");
        }
        assert!(Hello::New { id: Id(id), service: "x".repeat(300) }.encode().is_err());
        let mut buf = Vec::new();
        // A length beyond the bound is refused before anything is allocated for it.
        let huge = [&[DATA][..], &u32::MAX.to_be_bytes()].concat();
        assert!(matches!(
            Frame::read(&mut &huge[..], &mut buf).await,
            Err(ReadError::Malformed(_))
        ));
        assert!(buf.capacity() < MAX_FRAME);
        let empty = [&[DATA][..], &0u32.to_be_bytes()].concat();
        assert!(Frame::read(&mut &empty[..], &mut buf).await.is_err());
        assert!(Frame::read(&mut &[9u8][..], &mut buf).await.is_err());
        assert!(Reply::read(&mut &[7u8; 9][..]).await.is_err());
    }
}

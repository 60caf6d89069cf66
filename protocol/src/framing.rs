//! Reading whole frames from an async byte stream with a size limit. Generic over
//! `tokio::io::AsyncRead` so the same code serves the daemon and the client and is testable on
//! in-memory pipes; it never touches a socket itself.

use rkyv::util::AlignedVec;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::codec::{body_length, CodecError, LENGTH_PREFIX_BYTES};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameReadError {
    /// The peer broke a framing rule (size, emptiness); the stream cannot continue.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The stream ended in the middle of a frame, or failed.
    #[error("stream failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame body into `body` (replacing its contents). Returns `Ok(false)` on a clean end
/// of stream at a frame boundary.
pub async fn read_frame<R>(
    reader: &mut R,
    limit: u32,
    body: &mut AlignedVec,
) -> Result<bool, FrameReadError>
where
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let mut filled = 0;
    while filled < LENGTH_PREFIX_BYTES {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(false);
            }
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        filled += n;
    }
    let length = body_length(prefix, limit)?;
    body.clear();
    body.resize(length, 0);
    reader.read_exact(body.as_mut_slice()).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn reads_frames_back_to_back_then_a_clean_end() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            a.write_all(&[3, 0, 0, 0, 1, 2, 3, 1, 0, 0, 0, 9])
                .await
                .unwrap();
        });
        let mut body = AlignedVec::new();
        assert!(read_frame(&mut b, 16, &mut body).await.unwrap());
        assert_eq!(body.as_slice(), &[1, 2, 3]);
        assert!(read_frame(&mut b, 16, &mut body).await.unwrap());
        assert_eq!(body.as_slice(), &[9]);
        assert!(!read_frame(&mut b, 16, &mut body).await.unwrap());
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_before_reading_it() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&100u32.to_le_bytes()).await.unwrap();
        let mut body = AlignedVec::new();
        let err = read_frame(&mut b, 16, &mut body).await.unwrap_err();
        assert_eq!(err.to_string(), "frame is 100 bytes; the limit is 16");
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[8, 0, 0, 0, 1]).await.unwrap();
        drop(a);
        let mut body = AlignedVec::new();
        assert!(read_frame(&mut b, 16, &mut body).await.is_err());
    }
}

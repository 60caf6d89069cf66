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
    match read_first_byte(reader).await? {
        None => Ok(false),
        Some(first) => read_frame_rest(reader, first, limit, body)
            .await
            .map(|()| true),
    }
}

/// Waits for the first byte of the next frame; `None` on a clean end of stream. Split from
/// [`read_frame_rest`] so a server can wait for a frame as long as the connection lives, yet
/// bound how long the frame itself may take to arrive.
pub async fn read_first_byte<R>(reader: &mut R) -> Result<Option<u8>, FrameReadError>
where
    R: AsyncRead + Unpin,
{
    let mut first = [0u8; 1];
    match reader.read(&mut first).await? {
        0 => Ok(None),
        _ => Ok(Some(first[0])),
    }
}

/// Reads the rest of a frame whose first byte was `first` into `body`.
pub async fn read_frame_rest<R>(
    reader: &mut R,
    first: u8,
    limit: u32,
    body: &mut AlignedVec,
) -> Result<(), FrameReadError>
where
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    prefix[0] = first;
    reader
        .read_exact(&mut prefix[1..LENGTH_PREFIX_BYTES])
        .await?;
    let length = body_length(prefix, limit)?;
    body.clear();
    body.resize(length, 0);
    reader.read_exact(body.as_mut_slice()).await?;
    Ok(())
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

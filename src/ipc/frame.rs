//! Length-prefixed JSON frames, in a blocking flavour (CLI) and an async one (daemon).

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::MAX_FRAME_BYTES;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("frame is not valid JSON for this protocol: {0}")]
    Malformed(serde_json::Error),
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg).map_err(FrameError::Malformed)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn body_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

fn closed_on_eof(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Closed
    } else {
        FrameError::Io(e)
    }
}

/// Writes one frame (blocking).
pub fn write_sync<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame (blocking).
pub fn read_sync<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).map_err(closed_on_eof)?;
    let mut body = vec![0u8; body_len(header)?];
    r.read_exact(&mut body).map_err(closed_on_eof)?;
    serde_json::from_slice(&body).map_err(FrameError::Malformed)
}

/// Writes one frame (async).
pub async fn write_async<T: Serialize>(
    w: &mut (impl AsyncWriteExt + Unpin),
    msg: &T,
) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame (async).
pub async fn read_async<T: DeserializeOwned>(
    r: &mut (impl AsyncReadExt + Unpin),
) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await.map_err(closed_on_eof)?;
    let mut body = vec![0u8; body_len(header)?];
    r.read_exact(&mut body).await.map_err(closed_on_eof)?;
    serde_json::from_slice(&body).map_err(FrameError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::Request;

    #[test]
    fn round_trip_and_limits() {
        let mut buf = Vec::new();
        write_sync(&mut buf, &Request::Status).unwrap();
        let back: Request = read_sync(&mut buf.as_slice()).unwrap();
        assert!(matches!(back, Request::Status));

        let huge = (MAX_FRAME_BYTES as u32 + 1).to_be_bytes();
        let e = read_sync::<Request>(&mut huge.as_slice()).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge(_)));

        let mut garbage = 3u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(b"{x}");
        assert!(matches!(
            read_sync::<Request>(&mut garbage.as_slice()),
            Err(FrameError::Malformed(_))
        ));

        assert!(matches!(
            read_sync::<Request>(&mut [0u8, 0].as_slice()),
            Err(FrameError::Closed)
        ));
    }
}

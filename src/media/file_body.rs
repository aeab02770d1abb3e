//! A response body streamed from a file in chunks of `media.read_chunk_bytes`: a download never
//! holds more than one chunk of it in memory.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use metrics::Counter;
use tokio::io::{AsyncReadExt as _, Take};
use tokio_util::io::poll_read_buf;

/// `length` bytes of an open file from its current position.
#[derive(Debug)]
pub struct FileBody {
    file: Take<tokio::fs::File>,
    remaining: u64,
    chunk: usize,
    buffer: BytesMut,
    bytes_out: Counter,
}

impl FileBody {
    /// Streams `length` bytes of `file` (already positioned), counting them in `bytes_out`.
    pub fn new(file: tokio::fs::File, length: u64, chunk: usize, bytes_out: Counter) -> Self {
        Self {
            file: file.take(length),
            remaining: length,
            chunk,
            buffer: BytesMut::new(),
            bytes_out,
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        if this.buffer.capacity() < this.chunk {
            this.buffer.reserve(this.chunk);
        }
        match poll_read_buf(Pin::new(&mut this.file), cx, &mut this.buffer) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error))),
            Poll::Ready(Ok(0)) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "media file shorter than its record",
            )))),
            Poll::Ready(Ok(read)) => {
                this.remaining -= read as u64;
                this.bytes_out.increment(read as u64);
                Poll::Ready(Some(Ok(Frame::data(this.buffer.split().freeze()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

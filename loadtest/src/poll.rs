//! Polling a future once without waiting, to take what a socket already holds.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// The future's output if it is ready at once; `None` (and the future dropped) otherwise.
///
/// Only for cancel-safe futures such as `ClientReader::recv`: a dropped, pending future must not
/// lose data.
pub fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_futures_give_their_output_and_pending_ones_nothing() {
        assert_eq!(now_or_never(async { 7 }), Some(7));
        assert_eq!(now_or_never(std::future::pending::<u8>()), None);
    }

    #[tokio::test]
    async fn buffered_socket_data_is_taken_and_nothing_is_lost() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tern::client::Client::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // Nothing sent yet: pending, and polling must not disturb later reads.
        assert!(now_or_never(client.reader.recv()).is_none());
        let mut wire = bytes::BytesMut::new();
        let pong = tern::proto::v1::ServerFrame {
            frame: Some(tern::proto::v1::server_frame::Frame::Pong(
                tern::proto::v1::Pong {
                    nonce: 9,
                    server_time_ms: 0,
                },
            )),
        };
        tern::frame::encode(&pong, &mut wire);
        tern::frame::encode(&pong, &mut wire);
        server.write_all(&wire).await.unwrap();
        let first = client.reader.recv().await.unwrap();
        assert_eq!(first, Some(pong.clone()));
        // The second frame is already buffered: ready at once.
        let second = now_or_never(client.reader.recv());
        assert!(matches!(second, Some(Ok(Some(ref f))) if *f == pong));
    }
}

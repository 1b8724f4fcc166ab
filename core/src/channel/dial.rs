//! Opening the WebSocket to the server, with Nagle's algorithm off: the
//! protocol sends small messages back to back (the handshake's last, the
//! server's "admitted" and its session reply), and with Nagle on each
//! second one waited for the peer's delayed acknowledgement, 40 ms on
//! Linux, several times per connection.

use tokio_tungstenite::tungstenite;

/// The stream every client connection of the device uses.
pub type ClientStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `url` (`ws://` or `wss://`), Nagle off.
pub async fn open(url: &str) -> Result<ClientStream, tungstenite::Error> {
    tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map(|(ws, _)| ws)
}

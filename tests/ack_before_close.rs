//! A message that reaches the server in the same read as the client's close
//! frame still counts: a client that acknowledges and closes at once (as
//! `tether listen` does on SIGTERM) leaves its events acknowledged.

mod common;

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

#[test]
fn an_ack_sent_together_with_the_close_frame_is_applied() {
    let server = start();
    let (mut client, _) = server.new_session("ac1");
    server.publish_n(4, "a");
    client.recv_events(4);
    // Both frames go out in one write, so the server reads them together.
    client
        .ws
        .write(Message::text(r#"{"type":"ack","seq":4}"#))
        .unwrap();
    client
        .ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .unwrap();
    client.ws.flush().unwrap();
    let (code, _) = client.recv_until_closed();
    assert_eq!(code, Some(1000));
    server.wait_state("ac1", "disconnected");
    let session = server.session("ac1");
    assert_eq!(session["acked_seq"], 4);
    assert_eq!(session["retained_events"], 0);
}

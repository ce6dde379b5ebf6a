//! Prints every message a tether server sends, one JSON object per line.
//!
//!     cargo run --example watch -- 'ws://127.0.0.1:8765/ws?client_id=demo&client_type=cli'
//!
//! Stop it with Ctrl-C, and run it again with the `resume_token` it printed
//! and the last `seq` it printed to get exactly what was missed.

use tungstenite::{connect, Message};

fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8765/ws?client_type=cli".into());
    let (mut ws, _) = match connect(url.as_str()) {
        Ok(connected) => connected,
        Err(e) => {
            eprintln!("cannot connect to {url}: {e}");
            std::process::exit(1);
        }
    };
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => println!("{text}"),
            Ok(Message::Close(frame)) => {
                eprintln!("closed by the server: {frame:?}");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("connection ended: {e}");
                std::process::exit(1);
            }
        }
    }
}

//! An application following a tether session with the client library: every
//! event once and in order, across disconnects and restarts.
//!
//!     cargo run --example follow -- ws://127.0.0.1:8765/ws follow.state
//!
//! Stop it (even with kill -9), publish, start it again: it carries on where
//! it stopped, from the state file.

use tether::client::{Client, ClientConfig, Received};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or("ws://127.0.0.1:8765/ws".into());
    let state = args.next().unwrap_or("follow.state".into());
    let mut client = Client::new(ClientConfig {
        state_file: Some(state.into()),
        preferences: Some(serde_json::json!({"event_types": ["build.*", "deploy.*"]})),
        ..ClientConfig::new(url)
    })?;
    loop {
        // Coming back here marks the previous event as processed.
        match client.recv()? {
            Received::Event(event) => {
                println!("#{} {} {}", event.seq, event.event_type, event.data)
            }
            // Events the server no longer had: say so, never hide it.
            Received::Gap(gap) => eprintln!("warning: {gap}"),
            Received::Notice(notice) => eprintln!("{notice}"),
        }
    }
}

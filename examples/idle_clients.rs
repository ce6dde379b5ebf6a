//! Opens N WebSocket connections to a tether server and holds them idle,
//! for measuring what an idle connection costs the server.
//!
//!     cargo run --release --example idle_clients -- ws://127.0.0.1:8765/ws 1000 30
//!
//! Arguments: URL, number of clients, seconds to hold them (default 30).

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8765/ws".into());
    let n: usize = args.next().map_or(1000, |s| s.parse().expect("a count"));
    let secs: u64 = args.next().map_or(30, |s| s.parse().expect("seconds"));
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let client_url = format!("{url}{sep}client_id=idle-{i}&client_type=cli");
        let (mut ws, _) = tungstenite::connect(client_url.as_str()).expect("connect");
        ws.read().expect("first message");
        clients.push(ws);
    }
    eprintln!("{n} clients connected; holding them for {secs} s");
    std::thread::sleep(Duration::from_secs(secs));
}

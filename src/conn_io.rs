//! The stream under a connection's tungstenite `WebSocket`: what lets one
//! `WebSocket` be read by the connection's reader thread and written by the
//! writer pool without any thread ever blocking on the socket while holding
//! the connection's lock (see `connection.rs`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// tungstenite hands every frame straight to [`ConnIo`], which collects
/// them until the next flush: a writer turn's events leave in one system
/// call, and the buffer is the writer thread's, not the connection's.
pub(crate) const WS_WRITE_BUFFER: usize = 0;
/// The largest upgrade request head kept to answer a non-upgrade request.
const MAX_RECORDED_HEAD: usize = 8 * 1024;

/// The stream under a connection's `WebSocket`.
///
/// During the handshake it reads and writes the socket directly, each
/// read and write bounded by what is left of the handshake's time, keeping
/// a copy of what it read so a request that is not an upgrade can still be
/// answered. After the handshake it reads only the bytes
/// the reader thread fed it, and collects what is written until a flush
/// sends it without blocking; what the socket does not take waits for the
/// next flush.
#[derive(Debug)]
pub struct ConnIo {
    stream: Arc<TcpStream>,
    /// `Some` while handshaking.
    handshake: Option<Handshaking>,
    /// Bytes fed by the reader thread and not yet read, from `input_pos` on.
    input: Vec<u8>,
    input_pos: usize,
    /// Framed bytes not yet sent, from `output_sent` on.
    output: Vec<u8>,
    output_sent: usize,
    /// `output` is a writer thread's buffer (see [`ConnIo::lend`]).
    lent: bool,
}

/// A handshake in progress.
#[derive(Debug)]
pub(crate) struct Handshaking {
    /// The bytes read so far.
    pub(crate) head: Arc<Mutex<Vec<u8>>>,
    /// When the whole handshake must be over. A timeout per read would let
    /// a client that sends a byte every few seconds hold its thread (and a
    /// place under `--max-connections`) for as long as it likes.
    pub(crate) deadline: Instant,
}

impl Handshaking {
    /// What is left of the handshake's time; an error once it is over.
    fn time_left(&self) -> io::Result<std::time::Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake took too long",
            ));
        }
        Ok(left)
    }
}

impl ConnIo {
    /// `handshake` is `Some` while handshaking (see the type's documentation).
    pub(crate) fn new(stream: Arc<TcpStream>, handshake: Option<Handshaking>) -> ConnIo {
        ConnIo {
            stream,
            handshake,
            input: Vec::new(),
            input_pos: 0,
            output: Vec::new(),
            output_sent: 0,
            lent: false,
        }
    }

    /// The handshake is over: from now on reads hand out fed bytes and
    /// writes are collected.
    pub(crate) fn end_handshake(&mut self) {
        self.handshake = None;
    }

    /// Gives the `WebSocket` a copy of `bytes` to read. The copy is freed
    /// once read, so a connection waiting for its client holds no input
    /// buffer: with thousands of idle clients, a kibibyte each adds up.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.input = bytes.to_vec();
        self.input_pos = 0;
    }

    /// Writes go into `buffer` (empty, but with the capacity a whole writer
    /// turn needs) until [`ConnIo::give_back`]. Only called with nothing
    /// waiting to be sent.
    pub(crate) fn lend(&mut self, buffer: &mut Vec<u8>) {
        debug_assert!(self.output.is_empty());
        self.output = std::mem::take(buffer);
        self.lent = true;
    }

    /// Appends one text message of `len` bytes, which `fill` writes, framed
    /// by tungstenite's own [`FrameHeader`]: event messages are built in
    /// place in the output, instead of in a `String` that tungstenite would
    /// then copy into its buffer and hand on to this one.
    ///
    /// Only for a `WebSocket` that [can write](tungstenite::WebSocket::can_write): then
    /// tungstenite's own buffer is empty (`WS_WRITE_BUFFER` is 0 and writes
    /// here never fail), so frames stay in order.
    pub(crate) fn write_text_frame(&mut self, len: usize, fill: impl FnOnce(&mut Vec<u8>)) {
        let header = FrameHeader {
            opcode: OpCode::Data(OpData::Text),
            ..FrameHeader::default()
        };
        header
            .format(len as u64, &mut self.output)
            .expect("writing to a Vec cannot fail");
        let start = self.output.len();
        fill(&mut self.output);
        debug_assert_eq!(self.output.len() - start, len, "a message's length");
    }

    /// Bytes written but not yet taken by the socket.
    pub(crate) fn unsent(&self) -> usize {
        self.output.len() - self.output_sent
    }

    /// Returns the lent buffer if everything in it was sent; otherwise the
    /// connection keeps it until its socket takes the rest.
    pub(crate) fn give_back(&mut self, buffer: &mut Vec<u8>) {
        if self.output.is_empty() {
            *buffer = std::mem::take(&mut self.output);
        }
        self.lent = false;
    }
}

impl Read for ConnIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(handshake) = &self.handshake {
            self.stream.set_read_timeout(Some(handshake.time_left()?))?;
            let n = (&*self.stream).read(buf)?;
            let mut head = handshake.head.lock().unwrap_or_else(|e| e.into_inner());
            if head.len() < MAX_RECORDED_HEAD {
                head.extend_from_slice(&buf[..n]);
            }
            return Ok(n);
        }
        let available = &self.input[self.input_pos..];
        if available.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.input_pos += n;
        if self.input_pos == self.input.len() {
            self.input = Vec::new();
            self.input_pos = 0;
        }
        Ok(n)
    }
}

impl Write for ConnIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(handshake) = &self.handshake {
            self.stream
                .set_write_timeout(Some(handshake.time_left()?))?;
            return (&*self.stream).write(buf);
        }
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// Sends what was written, without blocking: `WouldBlock` if the socket
    /// is full.
    fn flush(&mut self) -> io::Result<()> {
        let socket = socket2::SockRef::from(&*self.stream);
        while self.output_sent < self.output.len() {
            let unsent = &self.output[self.output_sent..];
            match socket.send_with_flags(unsent, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.output_sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output_sent = 0;
        if self.lent {
            self.output.clear();
        } else {
            // An idle connection keeps no buffer: its own writes are rare
            // and small (replies, pings), and bursts use a lent buffer.
            self.output = Vec::new();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::thread;
    use std::time::{Duration, Instant};

    use tungstenite::{Message, WebSocket};

    use crate::connection::{Conn, Flushed};

    #[test]
    fn fed_bytes_are_read_in_pieces_then_freed() {
        let (conn, _client) = Conn::for_test(2, "d");
        let mut ws = conn.ws();
        let io = ws.get_mut();
        io.feed(b"hello, world");
        let mut piece = [0u8; 5];
        let mut read = Vec::new();
        let end = loop {
            match io.read(&mut piece) {
                Ok(n) => read.extend_from_slice(&piece[..n]),
                Err(e) => break e.kind(),
            }
        };
        assert_eq!(read, b"hello, world");
        assert_eq!(end, ErrorKind::WouldBlock);
        assert_eq!(
            io.input.capacity(),
            0,
            "a waiting connection keeps no input"
        );
    }

    #[test]
    fn frames_written_in_place_reach_a_websocket_client_whole() {
        let (conn, client) = Conn::for_test(1, "c");
        // Each length format of the header: 7-bit, 16-bit and 64-bit.
        let texts: Vec<String> = [5, 300, 70_000].iter().map(|&n| "x".repeat(n)).collect();
        let count = texts.len() + 1;
        let reader = thread::spawn(move || {
            let role = tungstenite::protocol::Role::Client;
            let mut peer = WebSocket::from_raw_socket(client, role, None);
            (0..count)
                .map(|_| match peer.read().unwrap() {
                    Message::Text(got) => got.as_str().to_string(),
                    other => panic!("unexpected {other:?}"),
                })
                .collect::<Vec<_>>()
        });
        let mut ws = conn.ws();
        let mut buffer = Vec::new();
        ws.get_mut().lend(&mut buffer);
        for text in &texts {
            ws.get_mut()
                .write_text_frame(text.len(), |out| out.extend_from_slice(text.as_bytes()));
        }
        // tungstenite's own messages go after them, in order.
        ws.write(Message::text("last")).unwrap();
        let mut flushed = Conn::flush(&mut ws);
        let deadline = Instant::now() + Duration::from_secs(10);
        while flushed == Flushed::Blocked && Instant::now() < deadline {
            thread::yield_now();
            flushed = Conn::flush(&mut ws);
        }
        assert_eq!(flushed, Flushed::Done);
        ws.get_mut().give_back(&mut buffer);
        assert!(
            buffer.capacity() > 70_000,
            "the buffer comes back once sent"
        );
        let mut expected = texts;
        expected.push("last".into());
        assert_eq!(reader.join().unwrap(), expected);
    }
}

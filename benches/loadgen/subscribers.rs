//! Reading many subscribers at once, in one of two shapes.
//!
//! - [`Readers::Polled`]: [`POLL_THREADS`] threads, each waiting on its share
//!   of the sockets with epoll and reading whichever are ready. M2b uses it:
//!   1000 events a second to 1000 clients is a million deliveries a second,
//!   and a thread per client wakes for each of them on the same two cores as
//!   the server. Clients on machines of their own cost the server nothing;
//!   the Node load generator behind the issue's orientation figures read all
//!   its clients from one event loop too.
//! - [`Readers::ThreadEach`]: a blocking thread per client, as every
//!   scenario used before; M2 still does, and `BENCH_THREAD_CLIENTS=1` makes
//!   M2b do so, to compare.
//!
//! Either way each subscriber's events are checked by a [`Reading`].

use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread;

use tungstenite::{Error, Message};

use crate::client::{receive, Reading, Received, Ws, TIMEOUT};
use crate::scenarios::CLIENT_STACK;

/// The threads of [`Readers::Polled`]. Far fewer than clients, but not one
/// per core: each time the server's threads preempt a poller, all its
/// sockets wait. In quick M2b runs against tether, 2 pollers gave p99s of
/// 58-84 ms and 8 gave 28-30, against 31-39 with a thread per client.
const POLL_THREADS: usize = 8;

/// How subscribers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    ThreadEach,
    Polled,
}

impl Readers {
    /// M2b's shape: polled, unless `BENCH_THREAD_CLIENTS` is set.
    pub fn for_latency() -> Readers {
        match std::env::var_os("BENCH_THREAD_CLIENTS") {
            Some(_) => Readers::ThreadEach,
            None => Readers::Polled,
        }
    }
}

/// Subscribers being read.
pub struct Subscribers(Vec<thread::JoinHandle<Vec<Received>>>);

impl Subscribers {
    /// Starts reading each of `sockets`, checked by a [`Reading`] from
    /// `reading`.
    pub fn start(sockets: Vec<Ws>, readers: Readers, reading: impl Fn() -> Reading) -> Self {
        let spawn = |f: Box<dyn FnOnce() -> Vec<Received> + Send>| {
            thread::Builder::new()
                .stack_size(CLIENT_STACK)
                .spawn(f)
                .expect("a client thread")
        };
        let handles = match readers {
            Readers::ThreadEach => sockets
                .into_iter()
                .map(|mut ws| {
                    let reading = reading();
                    spawn(Box::new(move || vec![receive(&mut ws, reading)]))
                })
                .collect(),
            Readers::Polled => {
                let share = sockets.len().div_ceil(POLL_THREADS).max(1);
                let mut sockets = sockets.into_iter();
                let mut handles = Vec::new();
                loop {
                    let clients: Vec<_> = sockets
                        .by_ref()
                        .take(share)
                        .map(|ws| (ws, reading()))
                        .collect();
                    if clients.is_empty() {
                        break handles;
                    }
                    handles.push(spawn(Box::new(move || poll(clients))));
                }
            }
        };
        Subscribers(handles)
    }

    /// Waits until every subscriber has read all or failed; what each saw,
    /// in the order they were started.
    pub fn join(self) -> Vec<Received> {
        self.0
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    }
}

/// One polling thread: reads its clients as they become readable until
/// each has read everything, ended, or seen nothing for [`TIMEOUT`].
fn poll(clients: Vec<(Ws, Reading)>) -> Vec<Received> {
    let epoll = Epoll::new().expect("epoll");
    let mut open: Vec<(Ws, Option<Reading>)> = Vec::with_capacity(clients.len());
    for (i, (ws, reading)) in clients.into_iter().enumerate() {
        ws.get_ref().set_nonblocking(true).expect("non-blocking");
        epoll.add(ws.get_ref(), i as u64).expect("epoll add");
        open.push((ws, Some(reading)));
    }
    let mut results: Vec<Option<Received>> = open.iter().map(|_| None).collect();
    let mut left = open.len();
    let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 256];
    while left > 0 {
        let n = epoll.wait(&mut ready).expect("epoll wait");
        if n == 0 {
            for ((_, reading), result) in open.iter_mut().zip(&mut results) {
                if let Some(reading) = reading.take() {
                    *result = Some(reading.finish(Some("timed out")));
                }
            }
            break;
        }
        for event in &ready[..n] {
            let i = { event.u64 } as usize;
            let (ws, reading) = &mut open[i];
            let Some(end) = read_ready(ws, reading.as_mut().expect("still open")) else {
                continue;
            };
            epoll.delete(ws.get_ref()).expect("epoll delete");
            // Finished now, so that a complete reading records when.
            results[i] = reading.take().map(|r| r.finish(end));
            left -= 1;
        }
    }
    results.into_iter().map(|r| r.expect("finished")).collect()
}

/// Reads all that `ws` has: `None` while more is wanted, `Some(None)` once
/// everything came, `Some(Some(why))` if the connection ended first.
fn read_ready(ws: &mut Ws, reading: &mut Reading) -> Option<Option<&'static str>> {
    const ENDED: Option<Option<&str>> = Some(Some("connection ended"));
    loop {
        match ws.read() {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                for ack in reading.take_message(&message) {
                    // A full socket keeps the ack queued in `ws` for the
                    // flush below or a later one; a connection that ended
                    // fails the next read.
                    let _ = ws.send(ack);
                }
                if reading.done() {
                    return Some(None);
                }
            }
            Ok(Message::Close(_)) => return ENDED,
            Ok(_) => {}
            Err(Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                let _ = ws.flush();
                return None;
            }
            Err(_) => return ENDED,
        }
    }
}

/// The three epoll calls the polling threads need; std has no poller.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result
        // is a new descriptor that only this value owns.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: as above, `fd` is open and owned by no one else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `socket` for reading; its events carry `token`.
    fn add(&self, socket: &impl AsRawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open and `event` outlives the call.
        check(unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        })
        .map(drop)
    }

    fn delete(&self, socket: &impl AsRawFd) -> io::Result<()> {
        // SAFETY: both descriptors are open; DEL ignores the event pointer.
        check(unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                socket.as_raw_fd(),
                std::ptr::null_mut(),
            )
        })
        .map(drop)
    }

    /// Waits up to [`TIMEOUT`] for ready sockets; how many of `ready` were
    /// filled (0: none came in time).
    fn wait(&self, ready: &mut [libc::epoll_event]) -> io::Result<usize> {
        let timeout = TIMEOUT.as_millis() as libc::c_int;
        loop {
            // SAFETY: `ready` is valid for writes of `ready.len()` events.
            let n = unsafe {
                libc::epoll_wait(
                    self.0.as_raw_fd(),
                    ready.as_mut_ptr(),
                    ready.len() as libc::c_int,
                    timeout,
                )
            };
            match check(n) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                n => return n.map(|n| n as usize),
            }
        }
    }
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Checks both shapes against a server in this process: client 0 gets
/// every event and acknowledges them, client 1 misses one, client 2's
/// connection ends early.
pub fn self_check() {
    use std::net::{TcpListener, TcpStream};
    const EVENTS: u64 = 6;
    for readers in [Readers::ThreadEach, Readers::Polled] {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = thread::spawn(move || {
            let mut sockets = listener.incoming().take(3);
            let mut accept = || {
                let stream = sockets.next().expect("a client").expect("accept");
                stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
                tungstenite::accept(stream).expect("handshake")
            };
            let (mut all, mut gap, mut short) = (accept(), accept(), accept());
            for (ws, seqs) in [
                (&mut all, &[1, 2, 3, 4, 5, 6][..]),
                (&mut gap, &[1, 3, 4, 5, 6, 7]),
                (&mut short, &[1, 2]),
            ] {
                for seq in seqs {
                    let text = format!(r#"{{"type":"event","seq":{seq},"data":{{"t":1}}}}"#);
                    ws.send(Message::text(text)).expect("send");
                }
            }
            drop(short);
            let mut acks = Vec::new();
            while acks.len() < 3 {
                if let Message::Text(t) = all.read().expect("an ack") {
                    acks.push(t.to_string());
                }
            }
            acks
        });
        let sockets = (0..3)
            .map(|i| {
                let stream = TcpStream::connect(addr).expect("connect");
                let url = format!("ws://{addr}/ws?client_id={i}");
                tungstenite::client(url.as_str(), stream)
                    .expect("handshake")
                    .0
            })
            .collect();
        let got = Subscribers::start(sockets, readers, || {
            Reading::new(EVENTS, Some(1), Some(2), true)
        })
        .join();
        let acks = server.join().expect("server");
        assert_eq!(acks[2], r#"{"type":"ack","seq":6}"#, "{readers:?}");
        assert!(
            got[0].error.is_none() && got[0].done_at.is_some(),
            "{readers:?}"
        );
        assert_eq!(got[0].latencies.len(), 6, "{readers:?}");
        assert_eq!(
            got[1].error.as_deref(),
            Some("seq 3 after 1"),
            "{readers:?}"
        );
        assert_eq!(
            got[2].error.as_deref(),
            Some("connection ended after seq 2"),
            "{readers:?}"
        );
    }
}

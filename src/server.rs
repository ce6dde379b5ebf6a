//! Starting and stopping the server: the shared state and every thread.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::info;

use crate::admin_server::AdminServer;
use crate::clock::now_ms;
use crate::config::{resolve, Config};
use crate::connection::{close, Conn};
use crate::dispatcher::{self, PublishRequest, Published};
use crate::error::{Error, Result};
use crate::event::{LiveEvents, NewEvent};
use crate::listener;
use crate::metrics::Metrics;
use crate::protocol::Announcement;
use crate::session_table::SessionTable;
use crate::store::{self, Recovery, Store};
use crate::token::random_below;
use crate::writer::{self, Writer};
use crate::{cleanup, heartbeat};

/// Publish requests waiting for the dispatcher before publishers wait.
const PUBLISH_QUEUE: usize = 256;
/// How long shutdown waits for connections to finish closing.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// The shortest `retry_after_ms` told to clients at shutdown.
const RETRY_AFTER_MIN_MS: u64 = 1000;

/// State every thread shares.
#[derive(Debug)]
pub struct Shared {
    pub(crate) config: Config,
    pub(crate) table: SessionTable,
    pub(crate) metrics: Metrics,
    pub(crate) writer: Writer,
    pub(crate) live_events: Arc<LiveEvents>,
    publish: Sender<PublishRequest>,
    /// Connection threads alive, handshaking or not.
    pub(crate) conn_threads: AtomicUsize,
    /// Upgraded connections, counted against `--max-connections`.
    pub(crate) connections: AtomicUsize,
    pub(crate) next_conn_id: AtomicU64,
    shutting_down: AtomicBool,
    pub(crate) started: Instant,
    pub(crate) ws_addr: SocketAddr,
    pub(crate) admin_addr: SocketAddr,
    /// The data directory, with `--data-dir`.
    pub(crate) store: Option<Arc<Store>>,
}

/// Why a publish was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// The server is stopping.
    ShuttingDown,
    /// The data directory cannot be written.
    Storage,
}

impl Shared {
    /// The highest event id writers may send: all of them in memory-only
    /// mode, the durable ones with a data directory.
    pub(crate) fn durable_event_id(&self) -> u64 {
        self.store
            .as_ref()
            .map_or(u64::MAX, |s| s.durable_event_id())
    }

    /// Whether the data directory could not be written: publishes and new
    /// sessions are refused from then on.
    pub(crate) fn storage_failed(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.has_failed())
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Closes `conn` because the server is going away, with the reason
    /// `{"retry_after_ms":N}`: N is drawn from a window that grows with the
    /// number of connections, so clients do not all come back at once.
    pub(crate) fn close_going_away(&self, conn: &Conn) {
        let connections = self.connections.load(Ordering::Acquire) as u64;
        let spread = (connections * 5).clamp(1000, 30_000);
        let retry_after_ms = RETRY_AFTER_MIN_MS + random_below(spread);
        let reason = format!(r#"{{"retry_after_ms":{retry_after_ms}}}"#);
        conn.close(close::GOING_AWAY, &reason);
    }

    /// Hands events to the dispatcher and waits for their ids (with a data
    /// directory, until they are durable).
    pub(crate) fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Published>, PublishError> {
        let refused = || {
            if self.storage_failed() {
                PublishError::Storage
            } else {
                PublishError::ShuttingDown
            }
        };
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.publish
            .send(PublishRequest { events, reply })
            .map_err(|_| refused())?;
        answer.recv().map_err(|_| refused())
    }
}

/// A running tether server. Dropping it shuts it down.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    acceptor: Option<JoinHandle<()>>,
    admin: Option<AdminServer>,
    storer: Option<JoinHandle<()>>,
}

impl Server {
    /// Recovers the data directory if there is one, binds both listeners and
    /// starts every thread.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, [`Error::Io`] when a
    /// listener cannot be bound or the data directory cannot be read,
    /// [`Error::Thread`] when a thread cannot start.
    pub fn start(config: Config) -> Result<Server> {
        config.validate()?;
        let table = SessionTable::new(config.max_missed_events, Announcement::new(&config));
        let live_events = Arc::new(LiveEvents::default());
        let (store, recovery) = match &config.data_dir {
            Some(dir) => {
                let (store, recovery) =
                    store::open(dir, config.fsync_interval_ms, &table, &live_events).map_err(
                        |e| {
                            Error::Io(io::Error::new(
                                e.kind(),
                                format!("--data-dir {}: {e}", dir.display()),
                            ))
                        },
                    )?;
                // What expired while the server was down goes at once.
                let retention = config.retention().as_millis() as u64;
                table.expire(now_ms().saturating_sub(retention));
                table.set_store(Arc::clone(&store));
                (Some(store), recovery)
            }
            None => (None, Recovery::default()),
        };
        let ws_listener = bind("--ws-listen", &config.ws_listen)?;
        let admin_listener = bind("--admin-listen", &config.admin_listen)?;
        // tiny_http writes responses in small pieces; without TCP_NODELAY
        // (inherited by accepted sockets) Nagle holds the end of a large
        // answer until the client's delayed ACK, 40 ms per publish.
        let _ = socket2::SockRef::from(&admin_listener).set_tcp_nodelay(true);
        let ws_addr = ws_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;

        let (writer, work, later) = Writer::new();
        let (publish, requests) = crossbeam_channel::bounded(PUBLISH_QUEUE);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::new(Shared {
            table,
            config,
            metrics: Metrics::default(),
            writer,
            live_events,
            publish,
            conn_threads: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            next_conn_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            ws_addr,
            admin_addr,
            store,
        });

        let mut server = Server {
            shared: Arc::clone(&shared),
            stop: Some(stop),
            threads: Vec::new(),
            acceptor: None,
            admin: None,
            storer: None,
        };
        // Each background thread gets the shared state and the stop signal.
        let mut spawn = |name: &str, run: Box<dyn FnOnce(Arc<Shared>, Receiver<()>) + Send>| {
            let (s, r) = (Arc::clone(&shared), stopped.clone());
            let handle = thread::Builder::new()
                .name(name.into())
                .spawn(move || run(s, r))
                .map_err(Error::Thread)?;
            server.threads.push(handle);
            Ok::<(), Error>(())
        };
        let next_event_id = recovery.next_event_id.max(1);
        spawn(
            "tether-dispatch",
            Box::new(move |s, r| dispatcher::run(s, requests, r, next_event_id)),
        )?;
        for _ in 0..writer_threads() {
            let work = work.clone();
            spawn(
                "tether-writer",
                Box::new(move |s, r| writer::run_pool_thread(s, work, r)),
            )?;
        }
        spawn(
            "tether-timer",
            Box::new(move |s, r| writer::run_timer(s, later, r)),
        )?;
        spawn("tether-heartbeat", Box::new(heartbeat::run))?;
        spawn("tether-cleanup", Box::new(cleanup::run))?;
        if let Some(store) = &shared.store {
            let (s, st) = (Arc::clone(&shared), Arc::clone(store));
            server.storer = Some(
                thread::Builder::new()
                    .name("tether-store".into())
                    .spawn(move || store::run(s, st, recovery))
                    .map_err(Error::Thread)?,
            );
        }
        server.admin = Some(AdminServer::start(&shared, admin_listener)?);
        {
            let s = Arc::clone(&shared);
            server.acceptor = Some(
                thread::Builder::new()
                    .name("tether-accept".into())
                    .spawn(move || listener::run(s, ws_listener))
                    .map_err(Error::Thread)?,
            );
        }
        info!("websocket listening on {ws_addr}");
        info!("admin listening on {admin_addr}");
        Ok(server)
    }

    /// The address the WebSocket listener is bound to.
    pub fn ws_addr(&self) -> SocketAddr {
        self.shared.ws_addr
    }

    /// The address the admin API is bound to.
    pub fn admin_addr(&self) -> SocketAddr {
        self.shared.admin_addr
    }

    /// Stops accepting, closes every connection with 1001, stops every
    /// thread, writes the data directory out, and returns once all of that
    /// is done (connections get a few seconds).
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if self.shared.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        info!("shutting down");
        if let Some(acceptor) = self.acceptor.take() {
            // accept() has no timeout; a connection of our own wakes it.
            let _ =
                TcpStream::connect_timeout(&reachable(self.shared.ws_addr), Duration::from_secs(1));
            let _ = acceptor.join();
        }
        for conn in self.shared.table.connections() {
            self.shared.close_going_away(&conn);
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        while self.shared.connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        self.stop.take();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        if let (Some(store), Some(storer)) = (&self.shared.store, self.storer.take()) {
            store.stop();
            let _ = storer.join();
            store.release_lock();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn bind(flag: &str, addr: &str) -> Result<TcpListener> {
    let resolved = resolve(flag, addr)?;
    TcpListener::bind(resolved).map_err(|e| {
        Error::Io(io::Error::new(
            e.kind(),
            format!("cannot listen on {resolved} ({flag}): {e}"),
        ))
    })
}

/// Writer-pool size: one per core, at least two so one thread busy with a
/// large replay leaves another for everyone else, at most four.
fn writer_threads() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4))
}

/// The address a local client can reach a listener bound to `addr` on.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

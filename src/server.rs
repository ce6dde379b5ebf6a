//! Starting and stopping the server: the shared state and every thread.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::info;

use crate::admin::AdminServer;
use crate::config::{resolve, Config};
use crate::connection::close;
use crate::dispatcher::{self, PublishRequest, Published};
use crate::error::{Error, Result};
use crate::event::{LiveEvents, NewEvent};
use crate::listener;
use crate::metrics::Metrics;
use crate::protocol::Announcement;
use crate::session_table::SessionTable;
use crate::writer::{self, Writer};
use crate::{cleanup, heartbeat};

/// Publish requests waiting for the dispatcher before publishers wait.
const PUBLISH_QUEUE: usize = 256;
/// How long shutdown waits for connections to finish closing.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

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
}

impl Shared {
    /// Whether shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Hands events to the dispatcher and waits for their ids. `None` if
    /// the server is shutting down.
    pub(crate) fn publish(&self, events: Vec<NewEvent>) -> Option<Vec<Published>> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.publish.send(PublishRequest { events, reply }).ok()?;
        answer.recv().ok()
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
}

impl Server {
    /// Binds both listeners and starts every thread.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, [`Error::Io`] when a
    /// listener cannot be bound, [`Error::Thread`] when a thread cannot start.
    pub fn start(config: Config) -> Result<Server> {
        config.validate()?;
        let ws_listener = bind("--ws-listen", &config.ws_listen)?;
        let admin_listener = bind("--admin-listen", &config.admin_listen)?;
        let ws_addr = ws_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;

        let (writer, work, later) = Writer::new();
        let (publish, requests) = crossbeam_channel::bounded(PUBLISH_QUEUE);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::new(Shared {
            table: SessionTable::new(config.max_missed_events, Announcement::new(&config)),
            config,
            metrics: Metrics::default(),
            writer,
            live_events: Arc::new(LiveEvents::default()),
            publish,
            conn_threads: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            next_conn_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            ws_addr,
            admin_addr,
        });

        let mut server = Server {
            shared: Arc::clone(&shared),
            stop: Some(stop),
            threads: Vec::new(),
            acceptor: None,
            admin: None,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(Error::Thread)
        };
        {
            let (s, r) = (Arc::clone(&shared), stopped.clone());
            server.threads.push(spawn(
                "tether-dispatch",
                Box::new(move || dispatcher::run(s, requests, r)),
            )?);
        }
        for _ in 0..writer_threads() {
            let (s, w, r) = (Arc::clone(&shared), work.clone(), stopped.clone());
            server.threads.push(spawn(
                "tether-writer",
                Box::new(move || writer::run_pool_thread(s, w, r)),
            )?);
        }
        {
            let (s, r) = (Arc::clone(&shared), stopped.clone());
            server.threads.push(spawn(
                "tether-timer",
                Box::new(move || writer::run_timer(s, later, r)),
            )?);
        }
        if shared.config.heartbeat_enabled {
            let (s, r) = (Arc::clone(&shared), stopped.clone());
            server.threads.push(spawn(
                "tether-heartbeat",
                Box::new(move || heartbeat::run(s, r)),
            )?);
        }
        {
            let (s, r) = (Arc::clone(&shared), stopped.clone());
            server.threads.push(spawn(
                "tether-cleanup",
                Box::new(move || cleanup::run(s, r)),
            )?);
        }
        server.admin = Some(AdminServer::start(&shared, admin_listener)?);
        {
            let s = Arc::clone(&shared);
            server.acceptor = Some(spawn(
                "tether-accept",
                Box::new(move || listener::run(s, ws_listener)),
            )?);
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
    /// thread and returns once they are gone (connections get a few seconds).
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
            conn.close(close::GOING_AWAY, "server shutting down");
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

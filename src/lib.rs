//! tether: a small, synchronous WebSocket event server whose sessions
//! survive disconnects.
//!
//! A client connects to `/ws`, gets a session and a resume token, and
//! receives every published event with a per-session `seq`. When it drops,
//! its session stays and its events are retained; when it comes back with
//! its token and the last seq it processed, it gets exactly what it missed,
//! in order, then live events. The wire contract is `PROTOCOL.md`; the
//! README tells how to run and operate the server.
//!
//! The crate is also the client half: [`client`] follows a session the way
//! contract section 8 says (exactly once, in seq order, gaps reported), and
//! the `tether listen`, `publish` and `sessions` subcommands are built on it
//! and on [`admin_client`].
//!
//! # Threads and channels
//!
//! ```text
//!  POST /events ─► admin handlers ──(publish channel)──► dispatcher
//!                                                           │ seqs, retain (Arc<Event>)
//!                                                           ▼
//!                                            session table (Mutex) ◄── admin API
//!                                              │ wake          │ records (--data-dir)
//!                                              ▼               ▼
//!  accept loop ─► handshake thread     writer pool        store thread: log, fsync,
//!                 └► reader thread     (2-4 threads)      snapshots; answers publishers
//!                    per connection    non-blocking       and wakes writers once
//!                    (blocking read,   writes through     events are durable
//!                    no lock held)     each connection's
//!                         │            WebSocket
//!                         └── same Mutex<WebSocket> ──┘
//!  heartbeat thread (pings, 4001, systemd watchdog)   timer: pacing, full sockets
//!  cleanup thread (expiry)
//! ```
//!
//! - the dispatcher and publishers never touch a socket: a slow client only
//!   falls behind, its events waiting in its retained buffer;
//! - an event retained by many sessions is stored once;
//! - an idle connection costs one blocked thread and about 11 KiB of
//!   resident memory (the thread's kernel stack and structures besides),
//!   and wakes nobody.
//!
//! # Log levels
//!
//! - `error`: the server lost a capability (a listener stopped accepting);
//! - `warn`: resources ran short (descriptors, threads, `--max-connections`);
//! - `info`: start-up addresses and shutdown;
//! - `debug`: connections opening, closing and being refused, admin requests
//!   (method, path and status only).
//!
//! No level ever logs a resume token, an admin token or a request query.

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

pub mod admin;
pub mod admin_client;
mod admin_server;
pub mod backoff;
mod cleanup;
pub mod cli;
pub mod client;
mod client_config;
mod client_connection;
mod client_error;
mod client_events;
mod clock;
pub mod config;
mod conn_io;
mod connection;
mod dispatcher;
mod error;
pub mod event;
pub mod flags;
mod handshake;
mod heartbeat;
mod journal;
pub mod listen;
mod listener;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pacing;
pub mod preferences;
pub mod protocol;
pub mod publish;
mod record;
mod server;
pub mod session;
pub mod session_table;
pub mod sessions;
pub mod state_file;
mod store;
pub mod token;
mod writer;

pub use config::{Config, Strategy};
pub use dispatcher::Published;
pub use error::{Error, Result};
pub use server::{Server, Shared};

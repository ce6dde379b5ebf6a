//! The WebSocket accept loop: one thread per accepted connection, within
//! `--max-connections`, and survival of `accept()` errors.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::handshake;
use crate::server::Shared;

/// Connection threads may exceed `--max-connections` by this many, so that
/// clients over the limit get their HTTP 503 after a whole request. Beyond
/// it, the listener answers without reading the request through.
const HANDSHAKE_SLACK: usize = 64;
/// The handshake thread's stack; tungstenite's handshake keeps its request
/// headers on the stack. Only the pages actually touched count towards memory.
/// More than four times the reader thread's, because glibc reuses a cached
/// stack up to four times the size asked for: a reader thread would then run
/// on an ended handshake thread's stack, whose top 16 KiB glibc keeps
/// resident, instead of touching its usual 8 KiB.
const HANDSHAKE_STACK_SIZE: usize = 5 * handshake::READER_STACK_SIZE;
/// The pause after an `accept()` error caused by exhausted resources, so the
/// loop does not spin while nothing can be accepted.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(50);

/// Accepts until the server shuts down.
pub(crate) fn run(shared: Arc<Shared>, listener: TcpListener) {
    let mut last_warning: Option<Instant> = None;
    let mut warn_rarely = |message: String| {
        if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
            warn!("{message}");
            last_warning = Some(Instant::now());
        }
    };
    loop {
        let accepted = listener.accept();
        if shared.is_shutting_down() {
            return;
        }
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_exhaustion(&e) => {
                warn_rarely(format!("cannot accept WebSocket connections: {e}"));
                thread::sleep(EXHAUSTED_PAUSE);
                continue;
            }
            Err(e) => {
                // ECONNABORTED and the like: that one client is gone.
                debug!("accept failed: {e}");
                continue;
            }
        };
        let limit = shared
            .config
            .max_connections
            .saturating_add(HANDSHAKE_SLACK);
        if shared.conn_threads.fetch_add(1, Ordering::AcqRel) >= limit {
            shared.conn_threads.fetch_sub(1, Ordering::AcqRel);
            warn_rarely(format!(
                "over --max-connections; refusing connections (one from {remote})"
            ));
            handshake::refuse_without_a_thread(&stream);
            continue;
        }
        let thread_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("tether-handshake".into())
            .stack_size(HANDSHAKE_STACK_SIZE)
            .spawn(move || handshake::accept(thread_shared, stream, remote));
        if let Err(e) = spawned {
            shared.conn_threads.fetch_sub(1, Ordering::AcqRel);
            warn_rarely(format!(
                "cannot start a connection thread ({e}); refused {remote}"
            ));
        }
    }
}

fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

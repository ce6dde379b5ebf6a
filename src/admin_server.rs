//! Serving the admin API with tiny_http, and keeping it alive.
//!
//! tiny_http's accept thread can die and leave `recv()` waiting forever:
//! it ends on its first `accept()` error (tiny_http #283), and when the
//! process is out of file descriptors an accept that succeeds can still
//! panic in it (it clones each accepted socket and unwraps the result).
//! So the listening socket stays here, and the server is rebuilt on it:
//!
//! - an accept error reaches a handler through `recv()`;
//! - a panic in a tiny_http thread reaches the panic hook installed here,
//!   which marks every admin server as suspect and unblocks its handlers.
//!
//! Either way a handler replaces the tiny_http server, retrying while
//! descriptors are short, and the admin API answers again as soon as they
//! free up. Nothing polls: handlers block in `recv()` until then.

use std::io::{self, Read};
use std::net::TcpListener;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, error, info, warn};

use crate::admin::{route, AdminRequest, BodyError, MAX_BODY_BYTES};
use crate::error::{Error, Result};
use crate::server::Shared;

/// Threads taking requests from tiny_http.
const HANDLER_THREADS: usize = 2;

/// One admin listener and the tiny_http server currently serving it.
struct Supervisor {
    current: Mutex<Arc<tiny_http::Server>>,
    /// Kept open so a replacement server can take the same port.
    listener: TcpListener,
    /// A tiny_http thread panicked: this server's accept thread may be gone.
    suspect: AtomicBool,
}

impl Supervisor {
    fn current(&self) -> Arc<tiny_http::Server> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Every admin server of the process, for the panic hook.
static SUPERVISORS: Mutex<Vec<Weak<Supervisor>>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

/// The running admin listener and its handler threads.
pub(crate) struct AdminServer {
    supervisor: Arc<Supervisor>,
    handlers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("handlers", &self.handlers.len())
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Serves the admin API on `listener` until [`AdminServer::stop`].
    pub(crate) fn start(shared: &Arc<Shared>, listener: TcpListener) -> Result<AdminServer> {
        HOOK.call_once(install_panic_hook);
        let supervisor = Arc::new(Supervisor {
            current: Mutex::new(Arc::new(serve_on(&listener)?)),
            listener,
            suspect: AtomicBool::new(false),
        });
        {
            let mut all = SUPERVISORS.lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|s| s.strong_count() > 0);
            all.push(Arc::downgrade(&supervisor));
        }
        let mut handlers = Vec::new();
        for i in 0..HANDLER_THREADS {
            let (shared, supervisor) = (Arc::clone(shared), Arc::clone(&supervisor));
            let handle = thread::Builder::new()
                .name(format!("tether-admin-{i}"))
                .spawn(move || handler_loop(&shared, &supervisor))
                .map_err(Error::Thread)?;
            handlers.push(handle);
        }
        Ok(AdminServer {
            supervisor,
            handlers,
        })
    }

    /// Stops the handlers and closes the listener. The caller has set the
    /// shutting-down flag, so handlers exit when unblocked.
    pub(crate) fn stop(self) {
        let server = self.supervisor.current();
        for _ in 0..self.handlers.len() {
            server.unblock();
        }
        for handle in self.handlers {
            let _ = handle.join();
        }
    }
}

fn serve_on(listener: &TcpListener) -> Result<tiny_http::Server> {
    let listener = listener.try_clone()?;
    tiny_http::Server::from_listener(listener, None)
        .map_err(|e| Error::Io(io::Error::other(e.to_string())))
}

/// A panic in a tiny_http thread is logged as one line and makes every
/// admin server check itself; any other panic goes to the previous hook.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info
            .location()
            .is_some_and(|l| l.file().contains("tiny_http"))
        {
            return previous(info);
        }
        error!(
            "admin API: a tiny_http thread failed ({}); restarting the admin listener",
            panic_message(info)
        );
        let all = SUPERVISORS.lock().unwrap_or_else(|e| e.into_inner());
        for supervisor in all.iter().filter_map(Weak::upgrade) {
            supervisor.suspect.store(true, Ordering::Release);
            let server = supervisor.current();
            for _ in 0..HANDLER_THREADS {
                server.unblock();
            }
        }
    }));
}

fn panic_message(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into());
    text.lines().next().unwrap_or("").to_string()
}

fn handler_loop(shared: &Arc<Shared>, supervisor: &Supervisor) {
    loop {
        if shared.is_shutting_down() {
            return;
        }
        let server = supervisor.current();
        match server.recv() {
            Ok(request) => handle(shared, request),
            Err(e) if e.kind() == io::ErrorKind::Other && e.to_string() == "thread unblocked" => {
                if supervisor.suspect.swap(false, Ordering::AcqRel) {
                    restart(shared, supervisor, &server);
                }
            }
            Err(e) => {
                if shared.is_shutting_down() {
                    return;
                }
                error!("admin API stopped accepting ({e}); restarting it");
                restart(shared, supervisor, &server);
            }
        }
    }
}

/// Replaces the tiny_http server `old`, retrying while the process is short
/// of descriptors (the usual cause), unless another handler already did.
/// Never returns to waiting on a dead server.
fn restart(shared: &Shared, supervisor: &Supervisor, old: &Arc<tiny_http::Server>) {
    let mut failures = 0u32;
    while !shared.is_shutting_down() {
        thread::sleep(Duration::from_millis(100));
        let mut slot = supervisor.current.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&slot, old) {
            return;
        }
        match serve_on(&supervisor.listener) {
            Ok(fresh) => {
                *slot = Arc::new(fresh);
                // Wake the other handlers still waiting on the old server;
                // dropping it stops its accept thread if that still runs.
                for _ in 0..HANDLER_THREADS {
                    old.unblock();
                }
                info!("admin API accepting again");
                return;
            }
            Err(e) => {
                if failures % 50 == 0 {
                    warn!("admin API restart failed: {e}; retrying");
                }
                failures += 1;
            }
        }
    }
}

fn handle(shared: &Shared, mut request: tiny_http::Request) {
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let authorization = header(&request, "Authorization");
    let body = if method == "POST" || method == "PUT" || method == "PATCH" {
        read_body(&mut request)
    } else {
        Ok(String::new())
    };
    let too_large = body == Err(BodyError::TooLarge);
    let reply = route(
        shared,
        &AdminRequest {
            method: &method,
            url: &url,
            authorization: authorization.as_deref(),
            body,
        },
    );
    // Never log the URL's query or any header: they may hold secrets.
    debug!(
        "admin {method} {} -> {}",
        url.split('?').next().unwrap_or(""),
        reply.status
    );
    let header =
        |name: &str, value: &str| tiny_http::Header::from_bytes(name, value).expect("valid header");
    let mut response = tiny_http::Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(header("Content-Type", reply.content_type));
    if let Some(allow) = reply.allow {
        response.add_header(header("Allow", allow));
    }
    if too_large {
        // The unread rest of the body must not be taken for the next request.
        response.add_header(header("Connection", "close"));
    }
    if let Err(e) = request.respond(response) {
        debug!("admin response not sent: {e}");
    }
}

fn header(request: &tiny_http::Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

fn read_body(request: &mut tiny_http::Request) -> std::result::Result<String, BodyError> {
    if request.body_length().is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|_| BodyError::Unreadable)?;
    if body.len() > MAX_BODY_BYTES {
        return Err(BodyError::TooLarge);
    }
    String::from_utf8(body).map_err(|_| BodyError::Unreadable)
}

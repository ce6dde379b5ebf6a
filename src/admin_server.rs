//! Serving the admin API with tiny_http, and keeping it alive.
//!
//! tiny_http's accept thread can die and leave `recv()` waiting forever:
//! it ends on its first `accept()` error (tiny_http #283), and when the
//! process is out of file descriptors an accept that succeeds can still
//! panic in it (it clones each accepted socket and unwraps the result).
//! So the listening socket stays here, and the server is rebuilt on it:
//!
//! - an accept error reaches an admin thread through `recv()`;
//! - a panic in a tiny_http thread reaches the panic hook installed here,
//!   which marks every admin server as suspect and unblocks its threads.
//!
//! Either way an admin thread replaces the tiny_http server, retrying while
//! descriptors are short, and the admin API answers again as soon as they
//! free up. Nothing polls: admin threads block in `recv()` until then.
//!
//! Handling a request means blocking socket I/O (reading the body past the
//! 1 KiB tiny_http prefetches, writing the answer) that tiny_http 0.12 gives
//! no timeout for and no way to interrupt. So no thread that takes requests
//! from tiny_http may be the only one: admin threads take turns. Each waits
//! in `recv()`, and one that takes a request handles it itself, after
//! starting another if no other was left waiting; a stalled client holds
//! only the thread handling it. Handing each request to a thread of its own
//! instead cost a fifth of the single-event publishing rate (the hand-over
//! is a context switch per request), and a fresh thread per request halved
//! that of 1000-event arrays (fresh stacks and allocator caches for every
//! body parsed), so threads stay, up to [`MAX_WAITING`] of them waiting.
//!
//! At most [`MAX_IN_FLIGHT`] requests are handled at once; beyond that a
//! request is answered 503, still not by a thread that takes requests,
//! since even a small answer can block: behind an earlier answer on the
//! same keep-alive connection, and, when part of the body is still unread,
//! in tiny_http reading and discarding it as the request is dropped.
//! Requests whose body is all in memory are refused by one refusing thread;
//! one with a body still to come gets a thread of its own even beyond the
//! cap. Those threads are bounded anyway: tiny_http reads nothing more from
//! a connection until the body is read, so there is at most one per open
//! connection, as there is one tiny_http thread per open connection already.

use std::io::{self, Read};
use std::net::TcpListener;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error, info, warn};

use crate::admin::{route, AdminRequest, BodyError, Reply, MAX_BODY_BYTES};
use crate::error::{Error, Result};
use crate::server::Shared;

mod in_flight;

use in_flight::{InFlight, Slot};

/// Admin threads started with the server, all waiting for requests.
const FIRST_THREADS: usize = 2;

/// Admin threads that may wait for requests at once; one that finishes a
/// request while this many wait ends.
const MAX_WAITING: usize = 4;

/// Admin requests handled at once; more are answered 503.
const MAX_IN_FLIGHT: usize = 64;

/// Enough for routing a request and parsing a 1 MiB body (serde_json stops
/// at 128 levels of nesting); a few pages of it are ever touched.
const REQUEST_STACK_SIZE: usize = 256 * 1024;

/// Declared bodies longer than this are never left for tiny_http to drain.
/// It drains an unread body as the request is dropped, into a buffer as
/// long as the declared remainder (tiny-http #290), so one request declaring
/// terabytes (answered 401 or 413 without being read) aborted the process
/// on that allocation. Up to this size the buffer is zeroed pages that the
/// kernel only backs as they are written.
const MAX_DRAINED_BODY: usize = 64 * 1024 * 1024;

/// How long a stop waits for requests in flight before leaving them
/// behind, blocked in I/O, for the process exit to end.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long one write of an answer may block. Linux copies a listening
/// socket's `SO_SNDTIMEO` to each socket it accepts, and tiny_http leaves
/// it alone, so an answer to a client that stops reading fails in the end
/// and frees its slot: not after 10 s, since a write that got a few bytes
/// into the socket returns and the next one waits again (about 45 s for a
/// 5 MB listing, measured), but not never. There is no such bound for
/// reading: `SO_RCVTIMEO` on the listener would also time out `accept()`,
/// which ends tiny_http's accept thread.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One admin listener and the tiny_http server currently serving it.
struct Supervisor {
    current: Mutex<Arc<tiny_http::Server>>,
    /// Kept open so a replacement server can take the same port.
    listener: TcpListener,
    /// A tiny_http thread panicked: this server's accept thread may be gone.
    suspect: AtomicBool,
    /// The admin threads waiting in `recv()`.
    waiting: Arc<InFlight>,
}

impl Supervisor {
    fn current(&self) -> Arc<tiny_http::Server> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sends every thread waiting on `server` back to check the supervisor.
    fn unblock_all(&self, server: &tiny_http::Server) {
        for _ in 0..self.waiting.count().max(1) {
            server.unblock();
        }
    }
}

/// Every admin server of the process, for the panic hook.
static SUPERVISORS: Mutex<Vec<Weak<Supervisor>>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

/// What every admin thread shares.
#[derive(Clone)]
struct Dispatch {
    shared: Arc<Shared>,
    supervisor: Arc<Supervisor>,
    in_flight: Arc<InFlight>,
    refusals: Sender<tiny_http::Request>,
}

/// The running admin listener; its threads are detached.
pub(crate) struct AdminServer {
    supervisor: Arc<Supervisor>,
    in_flight: Arc<InFlight>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("waiting", &self.supervisor.waiting.count())
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Serves the admin API on `listener` until [`AdminServer::stop`].
    pub(crate) fn start(shared: &Arc<Shared>, listener: TcpListener) -> Result<AdminServer> {
        HOOK.call_once(install_panic_hook);
        socket2::SockRef::from(&listener).set_write_timeout(Some(WRITE_TIMEOUT))?;
        let supervisor = Arc::new(Supervisor {
            current: Mutex::new(Arc::new(serve_on(&listener)?)),
            listener,
            suspect: AtomicBool::new(false),
            waiting: InFlight::new(MAX_WAITING),
        });
        {
            let mut all = SUPERVISORS.lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|s| s.strong_count() > 0);
            all.push(Arc::downgrade(&supervisor));
        }
        let (refusals, refused) = crossbeam_channel::unbounded();
        thread::Builder::new()
            .name("tether-admin-refuse".into())
            .stack_size(REQUEST_STACK_SIZE)
            .spawn(move || refuse_loop(&refused))
            .map_err(Error::Thread)?;
        let dispatch = Dispatch {
            shared: Arc::clone(shared),
            supervisor: Arc::clone(&supervisor),
            in_flight: InFlight::new(MAX_IN_FLIGHT),
            refusals,
        };
        for _ in 0..FIRST_THREADS {
            start_thread(&dispatch).map_err(Error::Thread)?;
        }
        Ok(AdminServer {
            supervisor,
            in_flight: dispatch.in_flight,
        })
    }

    /// Ends the threads waiting for requests, waits up to [`STOP_GRACE`]
    /// for the requests in flight and closes the listener. The caller has
    /// set the shutting-down flag, so a thread that finishes a request ends
    /// too. The refusing thread ends once the others are gone, or with the
    /// process.
    pub(crate) fn stop(self) {
        let server = self.supervisor.current();
        // A thread between requests may start waiting after an unblock is
        // sent; the unblocks are repeated until none waits.
        let waiting = &self.supervisor.waiting;
        let deadline = Instant::now() + STOP_GRACE;
        while waiting.count() > 0 && Instant::now() < deadline {
            self.supervisor.unblock_all(&server);
            waiting.wait_idle(Duration::from_millis(10));
        }
        let left = self
            .in_flight
            .wait_idle(deadline.saturating_duration_since(Instant::now()));
        if left > 0 {
            warn!("admin API: {left} requests still blocked in socket I/O; not waiting for them");
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
            supervisor.unblock_all(&supervisor.current());
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

/// Starts an admin thread, counted as waiting from now on; fails only
/// when the thread cannot start.
fn start_thread(dispatch: &Dispatch) -> io::Result<()> {
    let Some(waiting) = dispatch.supervisor.waiting.enter() else {
        return Ok(());
    };
    let dispatch = dispatch.clone();
    thread::Builder::new()
        .name("tether-admin".into())
        .stack_size(REQUEST_STACK_SIZE)
        .spawn(move || admin_thread(&dispatch, waiting))
        .map(drop)
}

/// Takes requests and handles them, until the server stops or enough other
/// threads wait. `waiting` is this thread's place among the waiting ones.
fn admin_thread(dispatch: &Dispatch, mut waiting: Slot) {
    let (shared, supervisor) = (&dispatch.shared, &dispatch.supervisor);
    loop {
        if shared.is_shutting_down() {
            return;
        }
        let server = supervisor.current();
        match server.recv() {
            Ok(request) => {
                drop(waiting);
                if supervisor.waiting.count() == 0 {
                    if let Err(e) = start_thread(dispatch) {
                        // This thread takes requests again once done.
                        warn!("admin API: cannot start a thread ({e})");
                    }
                }
                serve(dispatch, request);
                match supervisor.waiting.enter() {
                    Some(again) => waiting = again,
                    None => return,
                }
            }
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
/// of descriptors (the usual cause), unless another thread already did.
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
                // Wake the other threads still waiting on the old server;
                // dropping it stops its accept thread if that still runs.
                supervisor.unblock_all(old);
                info!("admin API accepting again");
                return;
            }
            Err(e) => {
                if failures.is_multiple_of(50) {
                    warn!("admin API restart failed: {e}; retrying");
                }
                failures += 1;
            }
        }
    }
}

/// Handles `request` on this thread within [`MAX_IN_FLIGHT`]; over the cap
/// it is refused, by the refusing thread when its body is all in memory, by
/// a thread of its own when the body has yet to arrive.
fn serve(dispatch: &Dispatch, request: tiny_http::Request) {
    let Some(_slot) = dispatch.in_flight.enter() else {
        if !body_pending(&request) {
            let _ = dispatch.refusals.send(request);
            return;
        }
        // The request goes over a channel rather than into the closure, so
        // a failed spawn does not drop it here (which could block).
        let (give, take) = crossbeam_channel::bounded(1);
        let spawned = thread::Builder::new()
            .name("tether-admin-refuse".into())
            .stack_size(REQUEST_STACK_SIZE)
            .spawn(move || take.recv().map(refuse));
        match spawned {
            Ok(_) => {
                let _ = give.send(request);
            }
            Err(e) => {
                warn!("admin API: cannot start a refusing thread ({e})");
                let _ = dispatch.refusals.send(request);
            }
        }
        return;
    };
    handle(&dispatch.shared, request);
}

/// Whether tiny_http has yet to read part of the body from the socket: it
/// reads a body of up to 1 KiB with the head, unless the client waits for
/// `100 Continue`. A chunked body is never read on drop.
fn body_pending(request: &tiny_http::Request) -> bool {
    let expects_continue =
        header(request, "Expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    request
        .body_length()
        .is_some_and(|n| n > 1024 || (n > 0 && expects_continue))
}

fn refuse(request: tiny_http::Request) {
    respond(request, Reply::busy(MAX_IN_FLIGHT), true);
}

fn refuse_loop(refused: &Receiver<tiny_http::Request>) {
    for request in refused {
        refuse(request);
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
    // The unread rest of the body must not be taken for the next request.
    respond(request, reply, too_large);
}

fn respond(request: tiny_http::Request, reply: Reply, close: bool) {
    let header =
        |name: &str, value: &str| tiny_http::Header::from_bytes(name, value).expect("valid header");
    let mut response = tiny_http::Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(header("Content-Type", reply.content_type));
    if let Some(allow) = reply.allow {
        response.add_header(header("Allow", allow));
    }
    if close {
        response.add_header(header("Connection", "close"));
    }
    if request.body_length().is_some_and(|n| n > MAX_DRAINED_BODY) {
        // `upgrade` answers and hands over the body reader without dropping
        // it; it is then leaked, with the connection's socket and tiny_http's
        // thread for it, since dropping it is what aborts. Only a client
        // declaring such a body, which is refused anyway, costs that.
        debug!("admin request declaring a body over {MAX_DRAINED_BODY} bytes; its connection is left open");
        std::mem::forget(request.upgrade("none", response));
        return;
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

//! The real `tether` binary as a child process: started on ports chosen
//! by the OS (read back from its log), signalled, and waited for.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::TIMEOUT;

/// The binary, with every `TETHER_*` variable of the test's environment removed.
pub fn tether() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TETHER_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

const LOOPBACK_PORT_0: [&str; 4] = [
    "--ws-listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
];

/// A running `tether serve` and every line it wrote to stderr.
pub struct Process {
    pub child: Child,
    pub ws: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut cmd = tether();
        cmd.arg("serve")
            .args(LOOPBACK_PORT_0)
            .args(args)
            .envs(env.iter().copied());
        Process::spawn(cmd)
    }

    /// `tether serve` allowed at most `limit` open file descriptors.
    pub fn start_with_fd_limit(limit: u32) -> Process {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -n {limit} && exec \"$0\" serve {}",
                LOOPBACK_PORT_0.join(" ")
            ))
            .arg(tether().get_program());
        Process::spawn(cmd)
    }

    /// `tether serve ARGS` whose files may grow to at most `blocks` blocks
    /// of the shell's `ulimit -f` (512 bytes for dash, 1024 for bash): a
    /// deterministic full disk. SIGXFSZ is ignored so that a write past the
    /// limit fails with EFBIG, as on a full disk, instead of killing it.
    pub fn start_with_file_size_limit(blocks: u32, args: &[&str]) -> Process {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "trap '' XFSZ && ulimit -f {blocks} && exec \"$0\" serve {} \"$@\"",
                LOOPBACK_PORT_0.join(" ")
            ))
            .arg(tether().get_program())
            .args(args);
        Process::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Process {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                lines.lock().unwrap().push(line);
            }
        });
        let (mut ws, mut admin) = (None, None);
        let deadline = Instant::now() + TIMEOUT;
        while ws.is_none() || admin.is_none() {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the server logs its addresses");
            let addr = |marker: &str| {
                line.split(marker)
                    .nth(1)
                    .map(|a| a.trim().parse::<SocketAddr>().unwrap())
            };
            ws = ws.or(addr("websocket listening on "));
            admin = admin.or(addr("admin listening on "));
        }
        Process {
            child,
            ws: ws.unwrap(),
            admin: admin.unwrap(),
            log,
        }
    }

    pub fn get(&self, path: &str) -> Value {
        let mut resp = ureq::get(&format!("http://{}{path}", self.admin))
            .call()
            .unwrap();
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// The admin API's `<session>` object for `id`.
    pub fn session(&self, id: &str) -> Value {
        self.get(&format!("/reconnection/sessions/{id}"))
    }

    /// Waits until the session's state is `state`.
    pub fn wait_state(&self, id: &str, state: &str) {
        super::wait_until(&format!("{id} becomes {state}"), || {
            self.session(id)["state"] == state
        });
    }

    /// A GET, or a POST of `body`, to the admin API: the status and the
    /// body, whatever the status.
    pub fn http(&self, path: &str, body: Option<&str>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        let url = format!("http://{}{path}", self.admin);
        let mut resp = match body {
            None => agent.get(&url).call(),
            Some(body) => agent.post(&url).send(body),
        }
        .unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        (resp.status().as_u16(), text)
    }

    /// POSTs `body` to the admin API: the status and the JSON answer,
    /// whatever the status.
    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = self.http(path, Some(body));
        (status, serde_json::from_str(&text).unwrap())
    }

    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.ws)
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exited, not killed");
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Runs `cmd` to its exit: the exit code and stderr. A command still running
/// after [`TIMEOUT`] is killed and fails the test.
pub fn run_to_exit(mut cmd: Command) -> (i32, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} was still running after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code().expect("exited, not killed"), stderr)
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

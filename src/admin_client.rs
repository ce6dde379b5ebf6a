//! A client of the admin HTTP API (contract section 6), for `tether
//! publish`, `tether sessions` and tests: publish events, list sessions,
//! cut a session's connection.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::client_error::{ClientError, ClientResult};
use crate::protocol::is_valid_name;

/// How long one admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One published event, as `POST /events` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Accepted {
    /// The event's global id.
    pub id: u64,
    /// How many sessions it was tracked for.
    pub matched_sessions: u64,
}

/// The admin API at a base URL such as `http://127.0.0.1:8766`.
#[derive(Debug)]
pub struct AdminClient {
    base: String,
    authorization: Option<String>,
    agent: ureq::Agent,
}

impl AdminClient {
    /// A client of the admin API at `base`, sending `token` as a bearer
    /// token if given.
    ///
    /// # Errors
    /// [`ClientError::Config`] if `base` is not an `http://` URL.
    pub fn new(base: &str, token: Option<&str>) -> ClientResult<AdminClient> {
        let base = base.trim_end_matches('/');
        match base.split_once("://") {
            Some(("http", rest)) if !rest.is_empty() => {}
            _ => {
                return Err(ClientError::Config(format!(
                    "admin URL {base:?} is not http://HOST:PORT (no TLS in this build)"
                )))
            }
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Ok(AdminClient {
            base: base.to_string(),
            authorization: token.map(|t| format!("Bearer {t}")),
            agent,
        })
    }

    /// Publishes a `POST /events` body (one event object or an array of up
    /// to 1000) and returns what the server accepted, in order.
    ///
    /// # Errors
    /// [`ClientError::Http`] with the server's error, or
    /// [`ClientError::Unreachable`].
    pub fn publish(&self, body: &str) -> ClientResult<Vec<Accepted>> {
        #[derive(Deserialize)]
        struct Answer {
            events: Vec<Accepted>,
        }
        let answer = self.request("POST", "/events", Some(body))?;
        serde_json::from_value::<Answer>(answer)
            .map(|a| a.events)
            .map_err(|e| {
                ClientError::Unreachable(format!("unexpected answer to POST /events: {e}"))
            })
    }

    /// `GET /reconnection/sessions`: `{"sessions":[...],"total":..,...}`.
    ///
    /// # Errors
    /// As [`AdminClient::publish`].
    pub fn sessions(&self) -> ClientResult<Value> {
        self.request("GET", "/reconnection/sessions", None)
    }

    /// `GET /reconnection/sessions/{client_id}`.
    ///
    /// # Errors
    /// [`ClientError::Config`] for a malformed id, else as [`AdminClient::publish`]
    /// (an unknown session is a 404 [`ClientError::Http`]).
    pub fn session(&self, client_id: &str) -> ClientResult<Value> {
        let path = format!("/reconnection/sessions/{}", checked_id(client_id)?);
        self.request("GET", &path, None)
    }

    /// `POST /reconnection/simulate-disconnect/{client_id}`: cuts the
    /// session's connection as a network failure would.
    ///
    /// # Errors
    /// As [`AdminClient::session`].
    pub fn simulate_disconnect(&self, client_id: &str) -> ClientResult<Value> {
        let path = format!(
            "/reconnection/simulate-disconnect/{}",
            checked_id(client_id)?
        );
        self.request("POST", &path, None)
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> ClientResult<Value> {
        let url = format!("{}{path}", self.base);
        let result = match method {
            "GET" => with_auth(self.agent.get(&url), &self.authorization).call(),
            _ => {
                let req = with_auth(self.agent.post(&url), &self.authorization)
                    .header("Content-Type", "application/json");
                match body {
                    Some(body) => req.send(body),
                    None => req.send_empty(),
                }
            }
        };
        let mut response =
            result.map_err(|e| ClientError::Unreachable(format!("{method} {url}: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Unreachable(format!("{method} {url}: {e}")))?;
        let value: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return value.ok_or_else(|| {
                ClientError::Unreachable(format!("{method} {url}: the answer is not JSON"))
            });
        }
        let error = value.as_ref().map(|v| &v["error"]);
        let field = |name: &str| error.and_then(|e| e[name].as_str()).map(str::to_string);
        Err(ClientError::Http {
            status,
            code: field("code").unwrap_or_else(|| "http_error".into()),
            message: field("message").unwrap_or_else(|| text.trim().to_string()),
        })
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: &Option<String>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

fn checked_id(client_id: &str) -> ClientResult<&str> {
    if is_valid_name(client_id) {
        Ok(client_id)
    } else {
        Err(ClientError::Config(format!(
            "client id {client_id:?} is not 1-128 characters of A-Z a-z 0-9 . _ : -"
        )))
    }
}

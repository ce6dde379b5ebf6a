//! Published events: validating a `POST /events` body, and the event itself,
//! stored once and shared by every session that retains it.

use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::preferences::Priority;
use crate::protocol::is_valid_name;

/// The most events one `POST /events` may carry.
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;

/// An event as a publisher sent it, validated, before it has an id.
#[derive(Debug)]
pub struct NewEvent {
    /// 1-128 characters of `A-Z a-z 0-9 . _ : -`.
    pub event_type: String,
    /// The publisher's JSON, kept verbatim.
    pub data: Box<RawValue>,
    /// Defaults to `medium`.
    pub priority: Priority,
    /// `None`: every matching session.
    pub targets: Option<Vec<String>>,
}

/// Reads a `POST /events` body: one event object or an array of 1 to 1000.
///
/// # Errors
/// A message saying which item is wrong and why; nothing is published.
pub fn parse_publish_body(body: &str) -> Result<Vec<NewEvent>, String> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
        if items.is_empty() {
            return Err("the array of events is empty".into());
        }
        if items.len() > MAX_EVENTS_PER_REQUEST {
            return Err(format!(
                "{} events in one request; the limit is {MAX_EVENTS_PER_REQUEST}",
                items.len()
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, raw)| parse_item(raw.get()).map_err(|e| format!("event {i}: {e}")))
            .collect()
    } else {
        let raw: &RawValue =
            serde_json::from_str(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
        Ok(vec![parse_item(raw.get())?])
    }
}

fn parse_item(text: &str) -> Result<NewEvent, String> {
    let Fields(mut fields) =
        serde_json::from_str(text).map_err(|_| "an event must be a JSON object".to_string())?;
    // Checked by name order, as a map would iterate them.
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(twice) = fields.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("field \"{}\" is given twice", twice[0].0));
    }
    let mut event_type = None;
    let mut data = None;
    let mut priority = Priority::Medium;
    let mut targets = None;
    for (name, raw) in fields {
        match name.as_str() {
            "event_type" => {
                let t: String = serde_json::from_str(raw.get())
                    .map_err(|_| "event_type must be a string".to_string())?;
                if !is_valid_name(&t) {
                    return Err("event_type must be 1-128 characters of A-Z a-z 0-9 . _ : -".into());
                }
                event_type = Some(t);
            }
            "data" => data = Some(raw.to_owned()),
            "priority" => {
                let p: Option<String> = serde_json::from_str(raw.get()).unwrap_or(None);
                priority = p.and_then(|p| p.parse().ok()).ok_or_else(|| {
                    "priority must be \"low\", \"medium\", \"high\" or \"critical\"".to_string()
                })?;
            }
            "targets" => {
                let list: Option<Vec<String>> = serde_json::from_str(raw.get())
                    .map_err(|_| "targets must be a list of client ids".to_string())?;
                if let Some(list) = &list {
                    if list.is_empty() {
                        return Err("targets must not be empty (omit it to broadcast)".into());
                    }
                    if let Some(bad) = list.iter().find(|id| !is_valid_name(id)) {
                        return Err(format!("targets: {bad:?} is not a valid client_id"));
                    }
                }
                targets = list;
            }
            other => return Err(format!("unknown field \"{other}\"")),
        }
    }
    Ok(NewEvent {
        event_type: event_type.ok_or("event_type is required")?,
        data: data.unwrap_or_else(|| RawValue::from_string("null".into()).expect("null is JSON")),
        priority,
        targets,
    })
}

/// An event object's fields, every one of them: a map would keep only the
/// last value of a name given twice, and such an event is refused instead.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Fields<'a>, M::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit(PhantomData))
    }
}

/// Counts the events alive anywhere in the server: the distinct events of the
/// event store, however many sessions share each.
#[derive(Debug, Default)]
pub struct LiveEvents(AtomicUsize);

impl LiveEvents {
    /// How many events exist now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A published event, shared (`Arc`) by every session that retains it.
#[derive(Debug)]
pub struct Event {
    /// The global id: unique and increasing.
    pub id: u64,
    /// Unix milliseconds of publication.
    pub timestamp: u64,
    /// The event's priority.
    pub priority: Priority,
    /// `,"id":..,"event_type":..,"priority":..,"timestamp":..,"data":..`:
    /// everything of an event message that is the same for every session,
    /// serialised once at publication.
    body: Box<str>,
    /// Where the event type sits inside `body`.
    type_at: (u32, u32),
    live: Arc<LiveEvents>,
}

impl Event {
    /// Builds the shared event. `live` counts it until it is dropped.
    pub fn new(id: u64, timestamp: u64, new: &NewEvent, live: &Arc<LiveEvents>) -> Event {
        let mut body = String::with_capacity(96 + new.event_type.len() + new.data.get().len());
        // Event types are restricted to characters that need no JSON escaping.
        let _ = write!(body, r#","id":{id},"event_type":""#);
        let start = body.len();
        body.push_str(&new.event_type);
        let end = body.len();
        let _ = write!(
            body,
            r#"","priority":"{}","timestamp":{timestamp},"data":{}"#,
            new.priority.as_str(),
            new.data.get()
        );
        live.0.fetch_add(1, Ordering::Relaxed);
        Event {
            id,
            timestamp,
            priority: new.priority,
            body: body.into_boxed_str(),
            type_at: (start as u32, end as u32),
            live: Arc::clone(live),
        }
    }

    /// The event as one JSON object (`{"id":..,"event_type":..,"priority":..,
    /// "timestamp":..,"data":..}`, plus `targets` if given): its record in
    /// the data directory.
    pub fn record_json(&self, targets: Option<&[String]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 64);
        out.push(b'{');
        // The body starts with the comma that follows the seq in a message.
        out.extend_from_slice(&self.body.as_bytes()[1..]);
        if let Some(targets) = targets {
            out.extend_from_slice(br#","targets":"#);
            serde_json::to_writer(&mut out, targets).expect("ids serialise");
        }
        out.push(b'}');
        out
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.body[self.type_at.0 as usize..self.type_at.1 as usize]
    }

    /// Appends the `event` message for one session: `len` bytes, where
    /// `len` is [`Event::message_len`].
    ///
    /// This runs for every delivery, straight into the writer's output
    /// buffer, so nothing is allocated or copied twice.
    pub fn write_message(&self, out: &mut Vec<u8>, seq: u64, replayed: bool) {
        out.extend_from_slice(MESSAGE_START);
        self.write_rest(out, seq, replayed);
    }

    /// The length of [`Event::write_message`]'s message.
    pub fn message_len(&self, seq: u64, replayed: bool) -> usize {
        MESSAGE_START.len() + self.rest_len(seq, replayed)
    }

    /// Appends this event as an item of an `event_batch` (the event object
    /// without `"type"`): [`Event::item_len`] bytes.
    pub fn write_item(&self, out: &mut Vec<u8>, seq: u64, replayed: bool) {
        out.extend_from_slice(ITEM_START);
        self.write_rest(out, seq, replayed);
    }

    /// The length of [`Event::write_item`]'s item.
    pub fn item_len(&self, seq: u64, replayed: bool) -> usize {
        ITEM_START.len() + self.rest_len(seq, replayed)
    }

    fn write_rest(&self, out: &mut Vec<u8>, seq: u64, replayed: bool) {
        push_decimal(out, seq);
        out.extend_from_slice(self.body.as_bytes());
        out.extend_from_slice(tail(replayed).as_bytes());
    }

    fn rest_len(&self, seq: u64, replayed: bool) -> usize {
        decimal_len(seq) + self.body.len() + tail(replayed).len()
    }
}

/// How an `event` message and an `event_batch` item start, up to the seq.
const MESSAGE_START: &[u8] = br#"{"type":"event","seq":"#;
const ITEM_START: &[u8] = br#"{"seq":"#;

fn tail(replayed: bool) -> &'static str {
    if replayed {
        r#","replayed":true}"#
    } else {
        r#","replayed":false}"#
    }
}

/// Appends `n` in decimal, without the formatting machinery of `write!`
/// (this runs for every event delivered).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

impl Drop for Event {
    fn drop(&mut self) {
        self.live.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn single_and_array_bodies() {
        let one = parse_publish_body(r#"{"event_type":"a.b","data":{"x":1}}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].priority, Priority::Medium);
        let many = parse_publish_body(
            r#"[{"event_type":"a","priority":"high","targets":["c1"]},{"event_type":"b","targets":null}]"#,
        )
        .unwrap();
        assert_eq!(many[0].targets.as_deref(), Some(&["c1".to_string()][..]));
        assert_eq!(many[1].targets, None);
        assert_eq!(many[1].data.get(), "null");
    }

    #[test]
    fn invalid_bodies_are_rejected_whole() {
        for body in [
            "",
            "nope",
            "[]",
            "3",
            r#"[{"event_type":"ok"}, 5]"#,
            r#"{"data":1}"#,
            r#"{"event_type":""}"#,
            r#"{"event_type":"has space"}"#,
            r#"{"event_type":"a","priority":null}"#,
            r#"{"event_type":"a","priority":"urgent"}"#,
            r#"{"event_type":"a","targets":[]}"#,
            r#"{"event_type":"a","targets":"c1"}"#,
            r#"{"event_type":"a","colour":"red"}"#,
        ] {
            assert!(parse_publish_body(body).is_err(), "{body}");
        }
        let too_many = format!("[{}]", vec![r#"{"event_type":"a"}"#; 1001].join(","));
        assert!(parse_publish_body(&too_many).is_err());
    }

    #[test]
    fn a_field_given_twice_is_refused_by_name() {
        let error =
            parse_publish_body(r#"[{"event_type":"a","priority":"low","priority":"high"}]"#)
                .unwrap_err();
        assert_eq!(error, r#"event 0: field "priority" is given twice"#);
        // Inside `data` the publisher's JSON is kept as it came.
        let kept = parse_publish_body(r#"{"event_type":"a","data":{"x":1,"x":2}}"#).unwrap();
        assert_eq!(kept[0].data.get(), r#"{"x":1,"x":2}"#);
    }

    #[test]
    fn records_read_back_as_the_same_event() {
        let live = Arc::new(LiveEvents::default());
        let new = &parse_publish_body(
            r#"{"event_type":"a.b","data":{"x":[1,2]},"priority":"low","targets":["c1"]}"#,
        )
        .unwrap()[0];
        let ev = Event::new(9, 1234, new, &live);
        let json = ev.record_json(new.targets.as_deref());
        let back: crate::record::EventRecord = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            (back.id, back.timestamp, back.priority),
            (9, 1234, Priority::Low)
        );
        assert_eq!(back.event_type, "a.b");
        assert_eq!(back.data.get(), r#"{"x":[1,2]}"#);
        assert_eq!(back.targets, Some(vec!["c1".to_string()]));
    }

    #[test]
    fn messages_are_valid_json_with_the_contract_fields() {
        let live = Arc::new(LiveEvents::default());
        let new = &parse_publish_body(
            r#"{"event_type":"build.done","data":{"n":12345678901234567890123},"priority":"high"}"#,
        )
        .unwrap()[0];
        let ev = Event::new(7, 1000, new, &live);
        assert_eq!(live.count(), 1);
        assert_eq!(ev.event_type(), "build.done");
        let message = |seq, replayed| {
            let mut out = Vec::new();
            ev.write_message(&mut out, seq, replayed);
            String::from_utf8(out).unwrap()
        };
        let msg: Value = serde_json::from_str(&message(3, true)).unwrap();
        assert_eq!(msg["type"], "event");
        assert_eq!(msg["seq"], 3);
        assert_eq!(msg["id"], 7);
        assert_eq!(msg["priority"], "high");
        assert_eq!(msg["timestamp"], 1000);
        assert_eq!(msg["replayed"], true);
        assert!(message(3, true).contains("12345678901234567890123"));
        let mut batch = b"[".to_vec();
        ev.write_item(&mut batch, 4, false);
        batch.push(b']');
        let items: Value = serde_json::from_slice(&batch).unwrap();
        assert_eq!(items[0]["seq"], 4);
        assert_eq!(items[0].get("type"), None);
        assert_eq!(items[0]["data"], json!({"n": 1.2345678901234568e22}));
        drop(ev);
        assert_eq!(live.count(), 0);
    }

    #[test]
    fn lengths_are_exact_and_seqs_written_in_decimal() {
        let live = Arc::new(LiveEvents::default());
        let new = &parse_publish_body(r#"{"event_type":"a","data":[1]}"#).unwrap()[0];
        let ev = Event::new(1, 2, new, &live);
        for seq in [0, 7, 10, 99, 1000, 123_456_789, u64::MAX] {
            for replayed in [false, true] {
                let mut msg = Vec::new();
                ev.write_message(&mut msg, seq, replayed);
                assert_eq!(msg.len(), ev.message_len(seq, replayed));
                let value: Value = serde_json::from_slice(&msg).unwrap();
                assert_eq!(value["seq"], seq);
                let mut item = Vec::new();
                ev.write_item(&mut item, seq, replayed);
                assert_eq!(item.len(), ev.item_len(seq, replayed));
                let value: Value = serde_json::from_slice(&item).unwrap();
                assert_eq!(value["seq"], seq);
            }
        }
    }
}

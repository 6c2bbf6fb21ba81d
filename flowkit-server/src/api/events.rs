//! `POST /api/v1/events`: batched ingestion of `flowkit_wire::Event`s.
//!
//! Before its body is read, a batch reserves its `Content-Length` (or `--max-body` when it has
//! none) in the ingest memory budget ([`crate::ingest_budget`], `--ingest-memory`); when the
//! batches in flight leave no room it is answered 503 `unavailable` with `Retry-After`, and
//! the reporter sends it again later.
//!
//! The body is cut into the elements of its JSON array first ([`split_array`]: one pass that
//! follows only strings and brackets), then each element is parsed on its own, so one bad event
//! never costs the good ones — not even one nested past the parser's recursion limit, with a
//! lone surrogate or with invalid UTF-8: valid events are stored in one `store.ingest` call and
//! the answer lists every rejected event by index with the field at fault.
//!
//! An element of kind `run_record` (several state events of one run, see
//! [`flowkit_wire::event`]) is expanded into those state events before the store sees them, so
//! it stores exactly the rows they would; `accepted` and `duplicates` count those events.
//!
//! A newer client's event is read, not rejected: unknown fields are ignored, an unknown state
//! type is stored as `Unknown`, and an event of an unknown `kind` is acknowledged and counted
//! as `ignored` (a client should only send the kinds `GET /api/v1/health` lists).
//!
//! Beyond what the serde types check, an event is rejected when it has an empty name or one
//! over 1000 characters, a timestamp before 2000 or more than a day in
//! the future, a NUL character in a name, or oversized details or log fields. Over-long
//! messages (log lines and state messages over 64 KiB) are *truncated*, not rejected: the line
//! stays useful and nothing else about the run is lost. NUL characters in messages, log fields
//! and parameters become U+FFFD (PostgreSQL cannot store them in text or JSON); everything
//! else is stored verbatim.

use crate::AppState;
use crate::error::ApiError;
use crate::store::Backend;
use crate::stream::changes_of;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use chrono::{DateTime, Utc};
use flowkit_wire::api::error::{ErrorBody, ErrorCode, ErrorDetail};
use flowkit_wire::api::ingest::{
    IngestResponse, MAX_CLOCK_SKEW_SECS, MAX_FIELDS_BYTES, MAX_MESSAGE_BYTES, MAX_NAME_CHARS,
    MAX_PARAMETERS_BYTES, MAX_RECORD_LATER, MAX_TAGS, MAX_UPSTREAM, RejectedEvent, TRUNCATION_MARK,
};
use flowkit_wire::event::{Event, EventBody, LaterState, LogLevel, RUN_RECORD_KIND, RunDetails};
use flowkit_wire::state::State as RunState;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

/// Bodies above this are parsed on the blocking pool, so a large batch does not stall the
/// other requests of this worker thread.
const PARSE_INLINE_MAX: usize = 64 * 1024;

/// Ingests a batch of events.
#[utoipa::path(
    post,
    path = "/api/v1/events",
    tag = "events",
    request_body(
        content = Vec<serde_json::Value>,
        content_type = "application/json",
        description = "A JSON array of events (at most `--max-batch`, 10 000 by default; body at most `--max-body`, 8 MiB by default). Each element is meant to be an `Event` (see the `Event` schema), but each is checked alone: one that is not a valid event is listed in the answer's `rejected` (202), never failing the others, so the array's items are declared as any JSON value. An element may be a run record (`kind` `run_record`): the state events of one run, its first state in the record's own fields and the others in `later`; it is stored as those events."
    ),
    responses(
        (status = 202, description = "Valid events stored; invalid ones listed in `rejected`", body = IngestResponse),
        (status = 400, description = "The body is not a JSON array: not JSON, unterminated, an empty element or text after it (a malformed element is only rejected, in `rejected`)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `report` scope", body = ErrorBody),
        (status = 413, description = "Body too large (`payload_too_large`) or too many events (`too_many_events`)", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "The body is not a JSON array", body = ErrorBody),
        (status = 503, description = "`unavailable`: the batches in flight fill `--ingest-memory` (or the database is unavailable, or the server is shutting down); retry after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "`internal`: the database failed in a way the client cannot fix", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    // Required, not just checked when present: a browser sends a body without a content type
    // cross-origin without asking first, and that must not reach a keyless server on loopback.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|content_type| {
            content_type.to_str().is_ok_and(|ct| {
                ct.split(';')
                    .next()
                    .is_some_and(|m| m.trim().ends_with("json"))
            })
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected `Content-Type: application/json`",
        )
        .closing_connection());
    }
    let max_body = state.settings().max_body;
    // Held until the batch is answered: the body, its parse and its write count against
    // `--ingest-memory`. Reserved from the declared length before any byte is read.
    let _reservation = reserve(&state, &headers, max_body)?;
    let body = read_body(body, &headers, max_body).await?;

    let max_batch = state.settings().max_batch;
    let parsed = if body.len() <= PARSE_INLINE_MAX {
        parse_batch(&body, max_batch, Utc::now())
    } else {
        tokio::task::spawn_blocking(move || parse_batch(&body, max_batch, Utc::now()))
            .await
            .map_err(ApiError::internal)?
    };
    let Batch {
        mut events,
        positions,
        ignored,
        mut rejected,
    } = parsed?;
    if events.iter().any(|e| e.lease.is_some()) {
        fence(&state, &mut events, &positions, &mut rejected).await?;
    }

    let mut response = IngestResponse {
        accepted: 0,
        duplicates: 0,
        ignored,
        rejected,
    };
    let started = std::time::Instant::now();
    if !events.is_empty() {
        let changes = state
            .changes()
            .has_subscribers()
            .then(|| changes_of(&events));
        let logs = state.changes().logs_of(&events);
        let outcome = state.store().ingest(events).await?;
        response.accepted = outcome.accepted;
        response.duplicates = outcome.duplicates;
        if outcome.accepted > 0 {
            // A run's last lines before the change that ends it.
            state.changes().publish_logs(logs);
            if let Some(changes) = changes {
                state.changes().publish(changes);
            }
        }
    }
    state.metrics().batch(
        response.accepted,
        response.duplicates,
        response.rejected.len(),
        response.ignored,
        started.elapsed(),
    );
    Ok((StatusCode::ACCEPTED, Json(response)))
}

/// `Retry-After` of a batch refused because the ingest memory budget is full.
pub const BUDGET_RETRY_AFTER_SECS: u64 = 1;

/// Reserves the batch's bytes in the ingest memory budget: its `Content-Length` (at most
/// `max_body`: a longer body is refused with 413 while being read), or `max_body` when it
/// does not declare one (a chunked body may be that long). 503 `unavailable` with
/// `Retry-After` when the bytes in flight would exceed the budget.
fn reserve(
    state: &AppState,
    headers: &HeaderMap,
    max_body: usize,
) -> Result<crate::ingest_budget::Reservation, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let bytes = declared.map_or(max_body, |n| {
        usize::try_from(n).map_or(max_body, |n| n.min(max_body))
    });
    let budget = state.ingest_budget();
    budget.try_reserve(bytes).ok_or_else(|| {
        state.metrics().ingest_refused();
        ApiError::unavailable(
            format!(
                "the server is ingesting {} bytes of other batches (its budget is {} bytes, \
                 --ingest-memory): retry this batch shortly",
                budget.in_flight(),
                budget.capacity()
            ),
            BUDGET_RETRY_AFTER_SECS,
        )
        .closing_connection()
    })
}

/// Refuses the events whose fencing token (`Event::lease`) is older than their flow run's:
/// each is listed in `rejected` (`stale_lease`), never applied, and counted per worker (the
/// worker the run was last leased to). One indexed lookup of the batch's leased flow runs;
/// batches without leased events never get here. An event whose token goes stale between this
/// check and the write (the reaper moved the token on) cannot change the run either: see the
/// fold rule in `store::rows`.
async fn fence(
    state: &AppState,
    events: &mut Vec<Event>,
    positions: &[usize],
    rejected: &mut Vec<RejectedEvent>,
) -> Result<(), ApiError> {
    let flow_of = |e: &Event| e.flow_run_id.unwrap_or(e.run_id);
    let mut flows: Vec<uuid::Uuid> = events
        .iter()
        .filter(|e| e.lease.is_some())
        .map(flow_of)
        .collect();
    flows.sort_unstable();
    flows.dedup();
    let tokens = state.store().lease_tokens(&flows).await?;
    let mut kept = Vec::with_capacity(events.len());
    let mut refused: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (event, &index) in std::mem::take(events).into_iter().zip(positions) {
        let flow = flow_of(&event);
        match (event.lease, tokens.get(&flow)) {
            (Some(sent), Some((current, worker))) if sent < *current => {
                *refused
                    .entry(worker.clone().unwrap_or_else(|| "unknown".into()))
                    .or_default() += 1;
                rejected.push(RejectedEvent {
                    index,
                    error: ErrorDetail::new(
                        ErrorCode::StaleLease,
                        format!(
                            "lease token {sent} of flow run {flow} is stale (its current token \
                             is {current}): the server decided the run's fate; this event is \
                             not applied"
                        ),
                    ),
                });
            }
            _ => kept.push(event),
        }
    }
    *events = kept;
    if !refused.is_empty() {
        rejected.sort_by_key(|r| r.index);
        // The events of one run record share its index: it is listed once.
        rejected.dedup_by_key(|r| r.index);
        for (worker, count) in refused {
            state.store().record_stale_events(&worker, count).await?;
        }
    }
    Ok(())
}

/// Reads the body, at most `max` bytes, else 413.
///
/// Over the limit, the rest of the body is still read and thrown away (up to [`DRAIN_MAX`]
/// bytes, for at most [`DRAIN_TIME`]) before answering: a client still writing its body when
/// the server closes the connection gets a broken pipe instead of the 413 that tells it to
/// split the batch.
pub async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {max} bytes: send smaller batches"),
        )
        .closing_connection()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > max as u64) {
        if declared.is_some_and(|n| n <= DRAIN_MAX as u64) {
            drain(stream).await;
        }
        return Err(too_large());
    }
    // The declared length is the client's word: reserve at most 64 KiB up front, so a client
    // that declares 8 MiB and stalls holds only what it really sent.
    let mut buffer = Vec::with_capacity(declared.map_or(64 * 1024, |n| n.min(64 * 1024) as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("cannot read the request body: {e}"),
            )
        })?;
        if buffer.len() + chunk.len() > max {
            drain(stream).await;
            return Err(too_large());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
}

/// Most bytes of an oversized body read and thrown away before answering 413.
pub const DRAIN_MAX: usize = 64 * 1024 * 1024;
/// Longest time spent reading an oversized body before answering 413.
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

async fn drain(mut stream: axum::body::BodyDataStream) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut drained = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            drained += chunk.len();
            if drained > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

/// A parsed batch: the valid events, and the rejected ones by index.
#[derive(Debug)]
pub struct Batch {
    /// Events that passed every check, in batch order.
    pub events: Vec<Event>,
    /// The index in the batch of each of `events`.
    pub positions: Vec<usize>,
    /// Events of a kind this server does not know (from a newer client): acknowledged, not
    /// stored.
    pub ignored: usize,
    /// Events that did not pass.
    pub rejected: Vec<RejectedEvent>,
}

/// Parses a body: 400 when it is not a JSON array (unterminated, or not JSON at all), 422 when
/// it is JSON but not an array, 413 when it holds more than `max_batch` elements; otherwise
/// each element is parsed and checked on its own ([`split_array`]), so an element nested
/// deeper than the parser's recursion limit (128), holding a lone surrogate (`"\ud800"`),
/// invalid UTF-8 or any other syntax error is rejected alone, by its index.
///
/// A run record (`kind` `run_record`) is expanded into the state events it stands for, each
/// checked as if sent alone; if one fails the record is rejected whole.
pub fn parse_batch(body: &[u8], max_batch: usize, now: DateTime<Utc>) -> Result<Batch, ApiError> {
    if let Some(parsed) = parse_valid_array(body, max_batch, now) {
        return Ok(batch_of(parsed.into_iter().map(Ok)));
    }
    let items = match split_array(body, max_batch) {
        Split::Array(items) => items,
        Split::TooMany(count) => {
            return Err(ApiError::too_large(
                ErrorCode::TooManyEvents,
                format!(
                    "{count} events in one batch; at most {max_batch} are accepted: split the batch"
                ),
            ));
        }
        Split::NotAnArray => {
            // Not an array: say whether it is JSON at all.
            let mut deserializer = serde_json::Deserializer::from_slice(body);
            let kind = serde::Deserializer::deserialize_any(&mut deserializer, BatchVisitor)
                .and_then(|kind| deserializer.end().map(|()| kind))
                .map_err(ApiError::invalid_json)?;
            return Err(ApiError::invalid_body(format!(
                "expected a JSON array of events, got {kind}"
            )));
        }
        Split::Malformed(why) => {
            return Err(ApiError::invalid_json(why));
        }
    };
    Ok(batch_of(
        items.into_iter().map(|item| parse_element(item, now)),
    ))
}

/// The batch of the elements of an array, each parsed (and checked) or refused, in order.
fn batch_of(elements: impl ExactSizeIterator<Item = Result<Event, String>>) -> Batch {
    let mut events = Vec::with_capacity(elements.len());
    let mut positions = Vec::with_capacity(elements.len());
    let mut ignored = 0;
    let mut rejected = Vec::new();
    for (index, element) in elements.enumerate() {
        match element {
            Ok(event) if matches!(event.body, EventBody::Unknown) => ignored += 1,
            Ok(
                event @ Event {
                    body: EventBody::RunRecord { .. },
                    ..
                },
            ) => {
                for event in event.into_events() {
                    events.push(event);
                    positions.push(index);
                }
            }
            Ok(event) => {
                events.push(event);
                positions.push(index);
            }
            Err(message) => rejected.push(RejectedEvent {
                index,
                error: ErrorDetail::new(ErrorCode::InvalidEvent, message),
            }),
        }
    }
    Batch {
        events,
        positions,
        ignored,
        rejected,
    }
}

/// The common case in one pass: a JSON array of at most `max_batch` events, each of which
/// parses straight into an [`Event`] and passes [`check_event`]; `None` on anything else, which
/// [`parse_batch`] then parses element by element ([`split_array`], which scans the whole body
/// byte by byte first: a quarter of the server's parsing time) to say which ones are at fault.
/// The same events either way: each element goes through the same deserializer and checks.
///
/// The body's UTF-8 is checked once, whole, and then read as text: reading bytes, the parser
/// checks each string on its own (a tenth of its time, short strings missing the fast path of
/// long ASCII runs).
fn parse_valid_array(body: &[u8], max_batch: usize, now: DateTime<Utc>) -> Option<Vec<Event>> {
    struct Elements {
        max_batch: usize,
        now: DateTime<Utc>,
    }
    impl<'de> serde::de::Visitor<'de> for Elements {
        type Value = Vec<Event>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of valid events")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Event>, A::Error> {
            use serde::de::Error;
            let mut events = Vec::new();
            while let Some(mut event) = seq.next_element::<Event>()? {
                if events.len() == self.max_batch {
                    return Err(A::Error::custom("too many events"));
                }
                check_event(&mut event, self.now).map_err(A::Error::custom)?;
                events.push(event);
            }
            Ok(events)
        }
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let events =
        serde::Deserializer::deserialize_seq(&mut deserializer, Elements { max_batch, now })
            .ok()?;
    deserializer.end().ok()?;
    Some(events)
}

/// Parses one element of the batch from its bytes: straight into an [`Event`] in the common,
/// valid case; through a [`Value`] (to name the field at fault) otherwise.
fn parse_element(bytes: &[u8], now: DateTime<Utc>) -> Result<Event, String> {
    if let Ok(mut event) = serde_json::from_slice::<Event>(bytes) {
        check_event(&mut event, now)?;
        return Ok(event);
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.to_string().starts_with("recursion limit exceeded") {
            "nested deeper than 128 levels (the server's recursion limit): send less deeply \
             nested parameters or log fields"
                .to_string()
        } else {
            format!("not valid JSON: {e}")
        }
    })?;
    parse_event(value, now)
}

/// What [`split_array`] found at the top level of a body.
#[derive(Debug, PartialEq)]
pub enum Split<'a> {
    /// The elements of the array, each as its bytes (not yet parsed: each may be invalid).
    Array(Vec<&'a [u8]>),
    /// An array of this many elements, more than allowed (none is kept).
    TooMany(usize),
    /// The body does not start with `[`.
    NotAnArray,
    /// The array is not well formed (unterminated, an empty element, text after it).
    Malformed(String),
}

/// Cuts a JSON array into its elements in one pass, without parsing them: tracks only strings
/// (with their escapes) and the nesting of brackets, with a counter (no recursion, so no depth
/// limit here). Each element is then parsed on its own, so its errors are its alone. Elements
/// past `max_batch` are counted, not kept.
pub fn split_array(body: &[u8], max_batch: usize) -> Split<'_> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut i = 0;
    while i < body.len() && is_space(body[i]) {
        i += 1;
    }
    if body.get(i) != Some(&b'[') {
        return Split::NotAnArray;
    }
    i += 1;
    let mut items = Vec::new();
    let mut count = 0usize;
    // The array is empty: `[` then `]`.
    let mut j = i;
    while j < body.len() && is_space(body[j]) {
        j += 1;
    }
    let mut end = None;
    if body.get(j) == Some(&b']') {
        end = Some(j + 1);
    }
    while end.is_none() {
        let start = i;
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut closed = None;
        while i < body.len() {
            let b = body[i];
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' if depth > 0 => depth -= 1,
                    b']' => {
                        closed = Some(true);
                        break;
                    }
                    b',' if depth == 0 => {
                        closed = Some(false);
                        break;
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        let Some(last) = closed else {
            return Split::Malformed("the JSON array is not terminated".to_string());
        };
        let element = trim(&body[start..i], is_space);
        if element.is_empty() {
            return Split::Malformed(format!(
                "an empty element in the JSON array at byte {start}"
            ));
        }
        count += 1;
        if count <= max_batch {
            items.push(element);
        } else if count == max_batch + 1 {
            items = Vec::new();
        }
        i += 1;
        if last {
            end = Some(i);
        }
    }
    let end = end.unwrap_or(body.len());
    if !body[end.min(body.len())..].iter().all(|&b| is_space(b)) {
        return Split::Malformed("text after the JSON array".to_string());
    }
    if count > max_batch {
        Split::TooMany(count)
    } else {
        Split::Array(items)
    }
}

fn trim(bytes: &[u8], is_space: impl Fn(u8) -> bool) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |p| p + 1);
    &bytes[start..end]
}

/// Checks one element of the batch; the error names the field at fault.
pub fn parse_event(value: Value, now: DateTime<Utc>) -> Result<Event, String> {
    let Some(object) = value.as_object() else {
        return Err(format!(
            "expected an event object, got {}",
            json_type(&value)
        ));
    };
    // The plain deserializer first (the common, valid case); the path-tracking one only to
    // explain a failure.
    let mut event: Event =
        match Event::deserialize(&value).or_else(|_| serde_path_to_error::deserialize(&value)) {
            Ok(event) => event,
            Err(err) => {
                let path = err.path().to_string();
                return Err(if path == "." {
                    // Errors inside the flattened body lose their path: find the field here.
                    locate_body_error(object).unwrap_or_else(|| err.inner().to_string())
                } else {
                    format!("field `{path}`: {}", err.inner())
                });
            }
        };
    check_event(&mut event, now)?;
    Ok(event)
}

/// The checks serde does not do; truncates over-long messages in place.
fn check_event(event: &mut Event, now: DateTime<Utc>) -> Result<(), String> {
    check_name("name", &event.name)?;
    if event.name.trim().is_empty() {
        return Err("field `name`: must not be empty".to_string());
    }
    if !timestamp_in_range(event.timestamp, now) {
        return Err(timestamp_error("timestamp", event.timestamp, now));
    }
    match &mut event.body {
        EventBody::State { state, details } => {
            check_state(state);
            check_run_details(details)?;
        }
        EventBody::RunRecord {
            state,
            details,
            later,
        } => {
            if later.len() > MAX_RECORD_LATER {
                return Err(format!(
                    "field `later`: {} states, at most {MAX_RECORD_LATER}",
                    later.len()
                ));
            }
            check_state(state);
            check_run_details(details)?;
            for (i, l) in later.iter_mut().enumerate() {
                if !timestamp_in_range(l.timestamp, now) {
                    return Err(timestamp_error(
                        &format!("later[{i}].timestamp"),
                        l.timestamp,
                        now,
                    ));
                }
                check_state(&mut l.state);
            }
        }
        EventBody::Log {
            message, fields, ..
        } => {
            truncate_message(message);
            replace_nul(message);
            if fields_contain_nul(fields) {
                let mut value = Value::Object(std::mem::take(fields));
                replace_nul_in_json(&mut value);
                if let Value::Object(map) = value {
                    *fields = map;
                }
            }
            let size = json_len(fields);
            if size > MAX_FIELDS_BYTES {
                return Err(format!(
                    "field `fields`: {size} bytes of JSON, at most {MAX_FIELDS_BYTES} are accepted"
                ));
            }
        }
        // A newer client's kind: the caller counts it as ignored.
        _ => {}
    }
    Ok(())
}

/// The earliest timestamp accepted: 2000-01-01T00:00:00Z.
const EARLIEST_TIMESTAMP_SECS: i64 = 946_684_800;

/// Whether `timestamp` is at or after 2000-01-01 and at most [`MAX_CLOCK_SKEW_SECS`] ahead of
/// `now`.
fn timestamp_in_range(timestamp: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    timestamp.timestamp() >= EARLIEST_TIMESTAMP_SECS
        && timestamp <= now + chrono::Duration::seconds(MAX_CLOCK_SKEW_SECS)
}

/// The error of a `timestamp` out of [`timestamp_in_range`], naming `field`.
fn timestamp_error(field: &str, timestamp: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "field `{field}`: {} is out of range (after 2000-01-01 and at most one day ahead of the server's clock, {})",
        timestamp.to_rfc3339(),
        now.to_rfc3339()
    )
}

/// Truncates an over-long state message and replaces its NUL characters.
fn check_state(state: &mut RunState) {
    if let Some(message) = &mut state.message {
        truncate_message(message);
        replace_nul(message);
    }
}

fn check_run_details(details: &mut Option<Box<RunDetails>>) -> Result<(), String> {
    if let Some(details) = details {
        check_details(details)?;
        if let Some(parameters) = &mut details.parameters {
            replace_nul_in_json(parameters);
        }
    }
    Ok(())
}

fn check_details(details: &RunDetails) -> Result<(), String> {
    check_name("details.task_key", &details.task_key)?;
    for (field, value) in [
        ("details.version", details.version.as_deref()),
        ("details.deployment", details.deployment.as_deref()),
        ("details.worker", details.worker.as_deref()),
        ("details.cache_key", details.cache_key.as_deref()),
    ] {
        if let Some(value) = value {
            check_name(field, value)?;
        }
    }
    if details.tags.len() > MAX_TAGS {
        return Err(format!(
            "field `details.tags`: {} tags, at most {MAX_TAGS}",
            details.tags.len()
        ));
    }
    for (i, tag) in details.tags.iter().enumerate() {
        check_name(&format!("details.tags[{i}]"), tag)?;
    }
    if details.upstream.len() > MAX_UPSTREAM {
        return Err(format!(
            "field `details.upstream`: {} runs, at most {MAX_UPSTREAM}",
            details.upstream.len()
        ));
    }
    if let Some(parameters) = &details.parameters {
        let size = json_len(parameters);
        if size > MAX_PARAMETERS_BYTES {
            return Err(format!(
                "field `details.parameters`: {size} bytes of JSON, at most {MAX_PARAMETERS_BYTES}"
            ));
        }
    }
    Ok(())
}

/// The length in bytes of `value`'s JSON encoding, counted as it is written instead of kept
/// (`usize::MAX` if it cannot be encoded).
fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(bytes.len());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

fn check_name(field: &str, value: &str) -> Result<(), String> {
    let chars = value.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "field `{field}`: {chars} characters, at most {MAX_NAME_CHARS}"
        ));
    }
    if value.contains('\0') {
        return Err(format!("field `{field}`: contains a NUL character"));
    }
    Ok(())
}

fn replace_nul(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
}

fn fields_contain_nul(fields: &serde_json::Map<String, Value>) -> bool {
    fn walk(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(walk),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || walk(v)),
            _ => false,
        }
    }
    fields.iter().any(|(k, v)| k.contains('\0') || walk(v))
}

/// Replaces NUL characters in every string and key of a JSON value.
fn replace_nul_in_json(value: &mut Value) {
    match value {
        Value::String(s) => replace_nul(s),
        Value::Array(items) => items.iter_mut().for_each(replace_nul_in_json),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(map);
                for (k, v) in old {
                    map.insert(k.replace('\0', "\u{FFFD}"), v);
                }
            }
            map.values_mut().for_each(replace_nul_in_json);
        }
        _ => {}
    }
}

/// Cuts a message to at most [`MAX_MESSAGE_BYTES`] (on a character boundary), ending it with
/// [`TRUNCATION_MARK`].
pub fn truncate_message(message: &mut String) {
    if message.len() <= MAX_MESSAGE_BYTES {
        return;
    }
    let mut cut = MAX_MESSAGE_BYTES - TRUNCATION_MARK.len();
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message.push_str(TRUNCATION_MARK);
}

/// Names the body field at fault when serde lost the path (inside the flattened body).
fn locate_body_error(object: &serde_json::Map<String, Value>) -> Option<String> {
    fn check<T: serde::de::DeserializeOwned>(
        object: &serde_json::Map<String, Value>,
        field: &str,
        required: bool,
    ) -> Option<String> {
        match object.get(field) {
            None if required => Some(format!("field `{field}`: missing")),
            None => None,
            Some(value) => serde_path_to_error::deserialize::<_, T>(value)
                .err()
                .map(|err| {
                    let path = err.path().to_string();
                    if path == "." {
                        format!("field `{field}`: {}", err.inner())
                    } else {
                        format!("field `{field}.{path}`: {}", err.inner())
                    }
                }),
        }
    }
    match object.get("kind") {
        None => Some("field `kind`: missing (expected \"state\" or \"log\")".to_string()),
        Some(Value::String(kind)) if kind == "state" => check::<RunState>(object, "state", true)
            .or_else(|| check::<Option<RunDetails>>(object, "details", false)),
        Some(Value::String(kind)) if kind == RUN_RECORD_KIND => {
            check::<RunState>(object, "state", true)
                .or_else(|| check::<Option<RunDetails>>(object, "details", false))
                .or_else(|| check::<Vec<LaterState>>(object, "later", false))
        }
        Some(Value::String(kind)) if kind == "log" => check::<LogLevel>(object, "level", true)
            .or_else(|| check::<String>(object, "message", true))
            .or_else(|| check::<serde_json::Map<String, Value>>(object, "fields", false)),
        Some(Value::String(_)) => None,
        Some(other) => Some(format!(
            "field `kind`: expected a string such as \"state\" or \"log\", got {other}"
        )),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Names what a JSON body that is not an array holds.
struct BatchVisitor;

impl<'de> serde::de::Visitor<'de> for BatchVisitor {
    type Value = &'static str;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<&'static str, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok("an array")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<&'static str, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok("an object")
    }

    fn visit_bool<E>(self, _: bool) -> Result<&'static str, E> {
        Ok("a boolean")
    }
    fn visit_i64<E>(self, _: i64) -> Result<&'static str, E> {
        Ok("a number")
    }
    fn visit_u64<E>(self, _: u64) -> Result<&'static str, E> {
        Ok("a number")
    }
    fn visit_f64<E>(self, _: f64) -> Result<&'static str, E> {
        Ok("a number")
    }
    fn visit_str<E>(self, _: &str) -> Result<&'static str, E> {
        Ok("a string")
    }
    fn visit_unit<E>(self) -> Result<&'static str, E> {
        Ok("null")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowkit_wire::event::RunKind;
    use flowkit_wire::state::StateType;
    use serde_json::json;
    use uuid::Uuid;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn state_event() -> Value {
        json!({
            "id": Uuid::now_v7(), "run_id": Uuid::now_v7(), "parent_run_id": null,
            "flow_run_id": null, "run_kind": "task", "name": "download", "attempt": 1,
            "timestamp": Utc::now(), "kind": "state", "state": {"type": "Running"}
        })
    }

    fn log_event() -> Value {
        json!({
            "id": Uuid::now_v7(), "run_id": Uuid::now_v7(), "parent_run_id": null,
            "run_kind": "flow", "name": "etl", "attempt": 1, "timestamp": Utc::now(),
            "kind": "log", "level": "INFO", "message": "hello", "fields": {"rows": 3}
        })
    }

    fn error_of(value: Value) -> String {
        parse_event(value, now()).expect_err("should be rejected")
    }

    #[test]
    fn accepts_what_the_runtime_sends() {
        let event = Event {
            id: Uuid::now_v7(),
            run_id: Uuid::now_v7(),
            parent_run_id: None,
            flow_run_id: None,
            run_kind: RunKind::Task,
            name: "t".into(),
            attempt: 1,
            timestamp: Utc::now(),
            lease: None,
            body: EventBody::State {
                state: RunState::new(StateType::Pending),
                details: Some(Box::new(RunDetails {
                    task_key: "a::t".into(),
                    tags: vec!["x".into()],
                    upstream: vec![Uuid::now_v7()],
                    ..RunDetails::default()
                })),
            },
        };
        let value = serde_json::to_value(&event).expect("json");
        assert_eq!(parse_event(value, now()), Ok(event));
        assert!(parse_event(log_event(), now()).is_ok());
        assert!(parse_event(state_event(), now()).is_ok());
    }

    #[test]
    fn names_the_field_at_fault() {
        let mut v = state_event();
        v["run_kind"] = json!("bogus");
        let e = error_of(v);
        assert!(
            e.starts_with("field `run_kind`: unknown variant `bogus`"),
            "{e}"
        );

        let mut v = state_event();
        v["attempt"] = json!("one");
        assert!(error_of(v).starts_with("field `attempt`"));

        let mut v = state_event();
        v["id"] = json!("not-a-uuid");
        assert!(error_of(v).starts_with("field `id`"));

        let mut v = state_event();
        v["state"] = json!({"type": true});
        let e = error_of(v);
        assert!(e.starts_with("field `state.type`"), "{e}");

        let mut v = state_event();
        v.as_object_mut().expect("object").remove("state");
        assert_eq!(error_of(v), "field `state`: missing");

        let mut v = state_event();
        v["details"] = json!({"task_key": "k", "tags": [1]});
        let e = error_of(v);
        assert!(e.starts_with("field `details.tags"), "{e}");

        let mut v = log_event();
        v["level"] = json!("LOUD");
        assert!(error_of(v).starts_with("field `level`"));

        let mut v = log_event();
        v["kind"] = json!(true);
        assert!(error_of(v).starts_with("field `kind`"));

        let mut v = state_event();
        v.as_object_mut().expect("object").remove("run_id");
        assert!(error_of(v).contains("run_id"));

        assert!(error_of(json!(42)).contains("a number"));
    }

    #[test]
    fn a_newer_clients_event_is_read_not_rejected() {
        let mut unknown_field = state_event();
        unknown_field["colour"] = json!("red");
        unknown_field["details"] = json!({"task_key": "k", "priority": 9});
        let event = parse_event(unknown_field, now()).expect("unknown fields are ignored");
        assert_eq!(event.details().map(|d| &*d.task_key), Some("k"));

        let mut unknown_state = state_event();
        unknown_state["state"] = json!({"type": "Hibernating", "message": "asked"});
        let event = parse_event(unknown_state, now()).expect("unknown states are read");
        assert_eq!(event.state_type(), Some(StateType::Unknown));

        let mut unknown_kind = log_event();
        unknown_kind["kind"] = json!("from_the_future");
        unknown_kind["states"] = json!([{"type": "Completed"}]);
        let batch = parse_batch(
            serde_json::to_vec(&json!([state_event(), unknown_kind]))
                .expect("json")
                .as_slice(),
            10,
            now(),
        )
        .expect("batch");
        assert_eq!((batch.events.len(), batch.ignored), (1, 1));
        assert!(batch.rejected.is_empty(), "{:?}", batch.rejected);
    }

    #[test]
    fn bounds() {
        let mut v = state_event();
        v["name"] = json!("x".repeat(MAX_NAME_CHARS + 1));
        assert!(error_of(v).starts_with("field `name`"));

        let mut v = state_event();
        v["name"] = json!("");
        assert!(error_of(v).starts_with("field `name`"));

        let mut v = state_event();
        v["timestamp"] = json!("1999-12-31T23:59:59Z");
        assert!(error_of(v).starts_with("field `timestamp`"));

        let mut v = state_event();
        v["timestamp"] = json!((Utc::now() + chrono::Duration::days(2)).to_rfc3339());
        assert!(error_of(v).starts_with("field `timestamp`"));

        // The earliest accepted instant is 2000-01-01T00:00:00Z itself.
        let mut v = state_event();
        v["timestamp"] = json!("2000-01-01T00:00:00Z");
        parse_event(v, now()).expect("2000-01-01 is accepted");
        let mut v = state_event();
        v["timestamp"] = json!("1999-12-31T23:59:59.999999Z");
        assert!(error_of(v).contains("is out of range (after 2000-01-01"));

        let mut v = log_event();
        v["message"] = json!("é".repeat(MAX_MESSAGE_BYTES));
        let event = parse_event(v, now()).expect("truncated, not rejected");
        let EventBody::Log { message, .. } = event.body else {
            panic!("not a log event")
        };
        assert!(message.len() <= MAX_MESSAGE_BYTES);
        assert!(message.ends_with(TRUNCATION_MARK));

        let mut v = log_event();
        v["fields"] = json!({"big": "x".repeat(MAX_FIELDS_BYTES)});
        assert!(error_of(v).starts_with("field `fields`"));
    }

    #[test]
    fn json_len_is_the_length_of_the_encoding() {
        for value in [
            json!(null),
            json!({"a": [1, -2.5e-7, "é\u{1}\"\\/"], "b": {"c": true, "d": []}}),
            json!("x".repeat(100_000)),
        ] {
            let encoded = serde_json::to_vec(&value).expect("JSON");
            assert_eq!(json_len(&value), encoded.len(), "{value}");
        }
    }

    #[test]
    fn nul_characters() {
        let mut v = state_event();
        v["name"] = json!("a\u{0}b");
        assert!(error_of(v).starts_with("field `name`: contains a NUL"));

        let mut v = log_event();
        v["message"] = json!("a\u{0}b");
        v["fields"] = json!({"k\u{0}": ["x\u{0}"]});
        let event = parse_event(v, now()).expect("accepted");
        let EventBody::Log {
            message, fields, ..
        } = event.body
        else {
            panic!("not a log event")
        };
        assert_eq!(message, "a\u{FFFD}b");
        assert_eq!(Value::Object(fields), json!({"k\u{FFFD}": ["x\u{FFFD}"]}));
    }

    #[test]
    fn batch_shapes() {
        let status = |body: &[u8]| {
            parse_batch(body, 2, now())
                .map(|_| 202)
                .unwrap_or_else(|e| e.status().as_u16())
        };
        assert_eq!(status(b"[1,"), 400);
        assert_eq!(status(b"{}"), 422);
        assert_eq!(status(b"[1,2,3]"), 413);
        assert_eq!(status(b"[]"), 202);
        let body = serde_json::to_vec(&json!([state_event(), {"nope": 1}])).expect("json");
        let batch = parse_batch(&body, 10, now()).expect("batch");
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.rejected.len(), 1);
        assert_eq!(batch.rejected[0].index, 1);
        assert_eq!(batch.rejected[0].error.code, ErrorCode::InvalidEvent);
    }

    #[test]
    fn a_bad_element_is_rejected_alone() {
        let good = serde_json::to_vec(&state_event()).expect("json");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let mut deep_fields = log_event();
        deep_fields["fields"] = json!({"x": 1});
        let deep_fields = serde_json::to_string(&deep_fields)
            .expect("json")
            .replace("{\"x\":1}", &format!("{{\"x\":{deep}}}"));
        let surrogate = serde_json::to_string(&log_event())
            .expect("json")
            .replace("\"hello\"", "\"a\\ud800b\"");
        let mut body = b"[".to_vec();
        for (i, element) in [
            good.clone(),
            deep_fields.into_bytes(),
            good.clone(),
            surrogate.into_bytes(),
            b"{\"name\":\"\xff\xfe\"}".to_vec(),
            deep.into_bytes(),
            b"{\"a\": 1 2}".to_vec(),
            serde_json::to_vec(&state_event()).expect("json"),
        ]
        .iter()
        .enumerate()
        {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(element);
        }
        body.push(b']');
        let batch = parse_batch(&body, 100, now()).expect("the batch stands");
        assert_eq!(batch.positions, vec![0, 2, 7]);
        let indexes: Vec<usize> = batch.rejected.iter().map(|r| r.index).collect();
        assert_eq!(indexes, vec![1, 3, 4, 5, 6]);
        assert!(
            batch.rejected[0].error.message.contains("nested deeper"),
            "{:?}",
            batch.rejected[0]
        );
        assert!(
            batch.rejected[1]
                .error
                .message
                .starts_with("not valid JSON"),
            "{:?}",
            batch.rejected[1]
        );
    }

    #[test]
    fn splitting_the_array() {
        fn split(body: &str) -> Split<'_> {
            split_array(body.as_bytes(), 3)
        }
        assert_eq!(split(" [ ] "), Split::Array(vec![]));
        assert_eq!(
            split(r#"[ {"a":"],\"}"} , [1,[2]] ,"x"]"#),
            Split::Array(vec![&br#"{"a":"],\"}"}"#[..], b"[1,[2]]", br#""x""#])
        );
        assert_eq!(split("[1,2,3,4,5]"), Split::TooMany(5));
        assert_eq!(split("{}"), Split::NotAnArray);
        assert!(matches!(split("[1,"), Split::Malformed(_)));
        assert!(matches!(split("[1,]"), Split::Malformed(_)));
        assert!(matches!(split("[1] x"), Split::Malformed(_)));
        assert!(matches!(split("[\"1]"), Split::Malformed(_)));
    }

    /// A valid batch is parsed in one pass into what the element-by-element path makes of it;
    /// a batch with anything at fault is left to that path.
    #[test]
    fn one_pass_and_element_by_element_agree() {
        let mut record = state_event();
        record["kind"] = json!(RUN_RECORD_KIND);
        record["later"] = json!([
            {"id": Uuid::now_v7(), "timestamp": Utc::now(), "attempt": 1, "state": {"type": "Completed"}}
        ]);
        let mut unknown_kind = log_event();
        unknown_kind["kind"] = json!("from_the_future");
        let mut nul = log_event();
        nul["message"] = json!("a\u{0}b");
        let body =
            serde_json::to_vec(&json!([state_event(), record, unknown_kind, nul])).expect("json");
        let now = now();
        let one_pass = parse_valid_array(&body, 10, now).expect("a valid batch");
        assert_eq!(one_pass.len(), 4);
        let Split::Array(items) = split_array(&body, 10) else {
            panic!("an array")
        };
        let by_element = batch_of(items.into_iter().map(|item| parse_element(item, now)));
        let batch = parse_batch(&body, 10, now).expect("batch");
        assert_eq!(batch.events, by_element.events);
        assert_eq!(batch.positions, [0, 1, 1, 3]);
        assert_eq!(batch.positions, by_element.positions);
        assert_eq!((batch.ignored, by_element.ignored), (1, 1));
        assert!(batch.rejected.is_empty() && by_element.rejected.is_empty());

        let mut late = state_event();
        late["timestamp"] = json!("1999-01-01T00:00:00Z");
        for body in [
            json!([state_event(), late]),
            json!([state_event(), {"id": 1}]),
            json!([state_event(), state_event(), state_event()]),
        ] {
            let body = serde_json::to_vec(&body).expect("json");
            assert!(parse_valid_array(&body, 2, now).is_none());
        }
        assert!(parse_valid_array(b"[{\"id\": 1}", 10, now).is_none());

        // Invalid UTF-8 in one element's string: the whole body is not text, so the batch is
        // parsed element by element, and only that element is refused.
        let mut marked = log_event();
        marked["message"] = json!("ab");
        let text = serde_json::to_string(&json!([state_event(), marked])).expect("json");
        let mut body = text.into_bytes();
        let at = body
            .windows(4)
            .position(|w| w == b"\"ab\"")
            .expect("the message")
            + 1;
        body[at] = 0xff;
        assert!(parse_valid_array(&body, 10, now).is_none());
        let batch = parse_batch(&body, 10, now).expect("batch");
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.rejected.len(), 1);
        assert_eq!(batch.rejected[0].index, 1);
    }

    #[test]
    fn a_run_record_is_expanded_into_its_state_events() {
        let mut record = state_event();
        record["kind"] = json!(RUN_RECORD_KIND);
        record["state"] = json!({"type": "Pending"});
        record["details"] = json!({"task_key": "a::t"});
        record["later"] = json!([
            {"id": Uuid::now_v7(), "timestamp": Utc::now(), "attempt": 1, "state": {"type": "Running"}},
            {"id": Uuid::now_v7(), "timestamp": Utc::now(), "attempt": 1, "state": {"type": "Completed", "message": "a\u{0}b"}}
        ]);
        let mut bad = record.clone();
        bad["later"][1]["timestamp"] = json!("1999-01-01T00:00:00Z");
        let body = serde_json::to_vec(&json!([log_event(), record, bad])).expect("json");
        let batch = parse_batch(&body, 10, now()).expect("batch");
        assert_eq!(batch.positions, vec![0, 1, 1, 1]);
        let types: Vec<_> = batch.events.iter().filter_map(|e| e.state_type()).collect();
        assert_eq!(
            types,
            [StateType::Pending, StateType::Running, StateType::Completed]
        );
        assert!(batch.events[1].details().is_some());
        assert!(batch.events[2].details().is_none());
        assert_eq!(
            batch.events[3].state().and_then(|s| s.message.as_deref()),
            Some("a\u{FFFD}b")
        );
        assert_eq!(batch.rejected.len(), 1);
        assert_eq!(batch.rejected[0].index, 2);
        assert!(
            batch.rejected[0]
                .error
                .message
                .starts_with("field `later[1].timestamp`"),
            "{:?}",
            batch.rejected[0]
        );
    }
}

//! The reporter's backlog in a compact form: events the sink thread hands over while the
//! sender thread is behind, kept as a dense binary encoding in large chunks rather than as
//! whole [`Event`] values, and decoded back, exactly, when the sender takes them.
//!
//! A whole `Event` takes about 200 bytes, and a run's first event about 200 more for its
//! boxed details. Encoded, a state change takes 15–30 bytes and a task run's first event
//! (its details included) about 30: no heap allocation per event, only a chunk of
//! [`CHUNK_BYTES`] now and then. The encoding leans on what events share:
//!
//! - ids are UUID v7 whose upper 96 bits grow by small steps ([`crate::ids`]): each is written
//!   as the difference of its upper 96 bits from the previous event's (a varint) and its low
//!   32 bits as they are; a run id first seen is written the same way against the event's id;
//! - a run id seen recently in the chunk is one byte (a slot of a small table the reader
//!   rebuilds as it goes); the parent and flow run ids are usually the previous event's (no
//!   byte), and a flow run's flow run id is its own id;
//! - names, task keys, tags and workers are indexes into the chunk's table of strings;
//! - a timestamp is the difference in nanoseconds from the previous event's.
//!
//! Log events are encoded too (message, and fields as a binary form of their JSON values). An
//! event of a form this encoding does not cover (a run record, a kind or state type from a
//! newer version) is kept whole beside the bytes. Decoding gives back events equal to the ones
//! encoded, in order.

use crate::event::{Event, EventBody, LogLevel, RunDetails, RunKind};
use crate::{State, StateType};
use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use uuid::Uuid;

/// Bytes of encoded events after which a chunk is sealed and a new one started.
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;
/// Most distinct strings in the table of one chunk; further ones are written in place.
const MAX_STRINGS: usize = 4096;
/// Slots of the table of recent run ids.
const RUN_SLOTS: usize = 256;
/// What a kept string costs besides its bytes (its `Cow` and the map entry of the writer).
const STRING_OVERHEAD: usize = 64;

// The first byte of an event: its form in the low two bits, then flags.
const FORM_STATE: u8 = 0;
const FORM_LOG: u8 = 1;
const FORM_WHOLE: u8 = 2;
const FORM_MASK: u8 = 0b11;
/// The run id is a slot of the table of recent run ids (else written against the event's id).
const RUN_IN_TABLE: u8 = 1 << 2;
const TASK_RUN: u8 = 1 << 3;
const HAS_LEASE: u8 = 1 << 4;
/// The timestamp is written whole (seconds and nanoseconds: a leap second), not as a step.
const RAW_TIME: u8 = 1 << 5;
/// A state with a message, or a log event with fields.
const EXTRA_A: u8 = 1 << 6;
/// A state event with details.
const EXTRA_B: u8 = 1 << 7;

// The second byte: how the parent run id (low two bits) and the flow run id (next two) are
// written.
const LINK_NONE: u8 = 0;
const LINK_SAME: u8 = 1;
const LINK_WRITTEN: u8 = 2;
/// The flow run id is the run id (a flow run's own).
const LINK_RUN: u8 = 3;

// The flags of details: which optional parts follow.
const D_VERSION: u8 = 1;
const D_PARAMETERS: u8 = 1 << 1;
const D_CACHE_KEY: u8 = 1 << 2;
const D_DEPLOYMENT: u8 = 1 << 3;
const D_WORKER: u8 = 1 << 4;

// JSON values.
const V_NULL: u8 = 0;
const V_FALSE: u8 = 1;
const V_TRUE: u8 = 2;
const V_U64: u8 = 3;
const V_I64: u8 = 4;
const V_F64: u8 = 5;
const V_NUMBER_TEXT: u8 = 6;
const V_STRING: u8 = 7;
const V_ARRAY: u8 = 8;
const V_OBJECT: u8 = 9;

/// The state types this encoding writes as a byte (their index); others are kept whole.
const STATE_TYPES: [StateType; 14] = [
    StateType::Scheduled,
    StateType::Late,
    StateType::Pending,
    StateType::Running,
    StateType::AwaitingRetry,
    StateType::Completed,
    StateType::Cached,
    StateType::Failed,
    StateType::Crashed,
    StateType::Cancelling,
    StateType::Cancelled,
    StateType::TimedOut,
    StateType::Expired,
    StateType::Unknown,
];

const LEVELS: [LogLevel; 5] = [
    LogLevel::Trace,
    LogLevel::Debug,
    LogLevel::Info,
    LogLevel::Warn,
    LogLevel::Error,
];

/// Events encoded into one buffer, with what their bytes refer to.
#[derive(Default)]
pub(crate) struct Chunk {
    bytes: Vec<u8>,
    strings: Vec<Cow<'static, str>>,
    /// Events kept whole (forms the encoding does not cover), referred to by index.
    whole: Vec<Event>,
    events: usize,
    /// Memory held besides `bytes`: the strings and the whole events.
    side_bytes: usize,
}

impl Chunk {
    /// Events in the chunk.
    pub(crate) fn events(&self) -> usize {
        self.events
    }

    /// Memory the chunk holds, about.
    pub(crate) fn size(&self) -> usize {
        self.bytes.capacity() + self.side_bytes
    }
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("events", &self.events)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// What the previous event of a chunk left, which the next one is written against; the
/// writer and the reader keep the same.
struct Context {
    prev_id: u128,
    prev_parent: Option<Uuid>,
    prev_flow: Option<Uuid>,
    prev_time: i128,
    runs: Box<[u128; RUN_SLOTS]>,
}

impl Default for Context {
    fn default() -> Context {
        Context {
            prev_id: 0,
            prev_parent: None,
            prev_flow: None,
            prev_time: 0,
            runs: Box::new([0; RUN_SLOTS]),
        }
    }
}

fn run_slot(run: u128) -> usize {
    // The low 32 bits of a flowkit id are random.
    (run as usize) % RUN_SLOTS
}

/// Encodes events into chunks.
#[derive(Default)]
struct Writer {
    chunk: Chunk,
    ctx: Context,
    strings: HashMap<Cow<'static, str>, u32>,
    /// `&'static str`s looked up lately (address, length, index), by their address: names,
    /// task keys and tags are almost always static, and the same few come again and again.
    statics: [(usize, usize, u32); STATIC_SLOTS],
}

/// Slots of the writer's table of static strings looked up lately.
const STATIC_SLOTS: usize = 16;

impl Writer {
    /// Seals the chunk being written and starts a new one.
    fn seal(&mut self) -> Chunk {
        self.ctx = Context::default();
        self.strings.clear();
        self.statics = Default::default();
        let mut chunk = std::mem::take(&mut self.chunk);
        if chunk.bytes.capacity() > chunk.bytes.len() + chunk.bytes.len() / 4 {
            chunk.bytes.shrink_to_fit();
        }
        chunk
    }

    fn push(&mut self, event: &Event) {
        if self.chunk.bytes.capacity() == 0 {
            self.chunk
                .bytes
                .reserve_exact(CHUNK_BYTES + CHUNK_BYTES / 8);
        }
        let start = self.chunk.bytes.len();
        if !self.encode(event) {
            self.chunk.bytes.truncate(start);
            self.keep_whole(event);
        }
        self.chunk.events += 1;
    }

    fn keep_whole(&mut self, event: &Event) {
        let index = self.chunk.whole.len();
        self.chunk.whole.push(event.clone());
        self.chunk.side_bytes += whole_size(event);
        self.chunk.bytes.push(FORM_WHOLE);
        put_varint(&mut self.chunk.bytes, index as u128);
    }

    /// Writes `event`; returns `false`, having written nothing the reader would see, when it
    /// must be kept whole.
    fn encode(&mut self, event: &Event) -> bool {
        // Everything that can send the event whole is decided before the context changes.
        let (mut head, tag) = match &event.body {
            EventBody::State { state, details } => {
                let Some(kind) = STATE_TYPES.iter().position(|k| *k == state.kind) else {
                    return false;
                };
                let mut head = FORM_STATE;
                if state.message.is_some() {
                    head |= EXTRA_A;
                }
                if details.is_some() {
                    head |= EXTRA_B;
                }
                (head, kind as u8)
            }
            EventBody::Log { level, fields, .. } => {
                let Some(level) = LEVELS.iter().position(|l| l == level) else {
                    return false;
                };
                let head = if fields.is_empty() {
                    FORM_LOG
                } else {
                    FORM_LOG | EXTRA_A
                };
                (head, level as u8)
            }
            _ => return false,
        };
        let id = event.id.as_u128();
        let run = event.run_id.as_u128();
        let slot = run_slot(run);
        let run_known = self.ctx.runs[slot] == run;
        if run_known {
            head |= RUN_IN_TABLE;
        }
        if event.run_kind == RunKind::Task {
            head |= TASK_RUN;
        }
        if event.lease.is_some() {
            head |= HAS_LEASE;
        }
        let secs = event.timestamp.timestamp();
        let nanos = event.timestamp.timestamp_subsec_nanos();
        let time = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        if nanos >= 1_000_000_000 {
            head |= RAW_TIME;
        }
        let parent = link(event.parent_run_id, self.ctx.prev_parent, None);
        let flow = link(event.flow_run_id, self.ctx.prev_flow, Some(event.run_id));
        let out = &mut self.chunk.bytes;
        out.push(head);
        out.push(parent | (flow << 2));
        put_near(out, id, self.ctx.prev_id);
        self.ctx.prev_id = id;
        if run_known {
            out.push(slot as u8);
        } else {
            put_near(out, run, id);
            self.ctx.runs[slot] = run;
        }
        if parent == LINK_WRITTEN {
            put_near(out, event.parent_run_id.map_or(0, |u| u.as_u128()), id);
        }
        if flow == LINK_WRITTEN {
            put_near(out, event.flow_run_id.map_or(0, |u| u.as_u128()), id);
        }
        self.ctx.prev_parent = event.parent_run_id;
        self.ctx.prev_flow = event.flow_run_id;
        put_varint(out, u128::from(event.attempt));
        if head & RAW_TIME != 0 {
            put_signed(out, i128::from(secs));
            put_varint(out, u128::from(nanos));
        } else {
            put_signed(out, time - self.ctx.prev_time);
            self.ctx.prev_time = time;
        }
        if let Some(lease) = event.lease {
            put_varint(out, u128::from(lease));
        }
        self.put_string(&event.name);
        self.chunk.bytes.push(tag);
        match &event.body {
            EventBody::State { state, details } => {
                if let Some(message) = &state.message {
                    put_str(&mut self.chunk.bytes, message);
                }
                if let Some(details) = details {
                    self.put_details(details, id);
                }
            }
            EventBody::Log {
                message, fields, ..
            } => {
                let out = &mut self.chunk.bytes;
                put_str(out, message);
                if !fields.is_empty() {
                    put_object(out, fields);
                }
            }
            _ => {}
        }
        true
    }

    fn put_details(&mut self, details: &RunDetails, id: u128) {
        let mut flags = 0;
        if details.version.is_some() {
            flags |= D_VERSION;
        }
        if details.parameters.is_some() {
            flags |= D_PARAMETERS;
        }
        if details.cache_key.is_some() {
            flags |= D_CACHE_KEY;
        }
        if details.deployment.is_some() {
            flags |= D_DEPLOYMENT;
        }
        if details.worker.is_some() {
            flags |= D_WORKER;
        }
        self.chunk.bytes.push(flags);
        self.put_string(&details.task_key);
        if let Some(version) = &details.version {
            self.put_string(version);
        }
        put_varint(&mut self.chunk.bytes, details.tags.len() as u128);
        for tag in &details.tags {
            self.put_string(tag);
        }
        let out = &mut self.chunk.bytes;
        if let Some(parameters) = &details.parameters {
            put_value(out, parameters);
        }
        put_varint(out, details.upstream.len() as u128);
        for upstream in &details.upstream {
            put_near(out, upstream.as_u128(), id);
        }
        if let Some(cache_key) = &details.cache_key {
            put_str(out, cache_key);
        }
        if let Some(deployment) = &details.deployment {
            put_str(out, deployment);
        }
        if let Some(worker) = &details.worker {
            self.put_string(worker);
        }
    }

    /// Writes a string of the table: its index (times two), or, once the table is full, the
    /// string itself (its length times two plus one, then its bytes).
    #[allow(clippy::ptr_arg)] // Which `Cow` it is matters: a static string is kept as is.
    fn put_string(&mut self, s: &Cow<'static, str>) {
        let index = match s {
            Cow::Borrowed(b) => {
                // A static string's bytes never change: its address and length name it.
                let (ptr, len) = (b.as_ptr() as usize, b.len());
                let slot = (ptr ^ len) % STATIC_SLOTS;
                match self.statics[slot] {
                    (p, l, index) if p == ptr && l == len && p != 0 => Some(index),
                    _ => {
                        let index = self.intern(s);
                        if let Some(index) = index {
                            self.statics[slot] = (ptr, len, index);
                        }
                        index
                    }
                }
            }
            Cow::Owned(_) => self.intern(s),
        };
        match index {
            Some(index) => put_varint(&mut self.chunk.bytes, u128::from(index) << 1),
            None => {
                put_varint(&mut self.chunk.bytes, ((s.len() as u128) << 1) | 1);
                self.chunk.bytes.extend_from_slice(s.as_bytes());
            }
        }
    }

    #[allow(clippy::ptr_arg)] // Which `Cow` it is matters: a static string is kept as is.
    fn intern(&mut self, s: &Cow<'static, str>) -> Option<u32> {
        if let Some(&index) = self.strings.get(s.as_ref()) {
            return Some(index);
        }
        if self.chunk.strings.len() >= MAX_STRINGS {
            return None;
        }
        let index = self.chunk.strings.len() as u32;
        self.chunk.strings.push(s.clone());
        self.strings.insert(s.clone(), index);
        self.chunk.side_bytes += STRING_OVERHEAD
            + match s {
                // A static string costs nothing; a copy of an owned one is held twice.
                Cow::Borrowed(_) => 0,
                Cow::Owned(o) => 2 * o.len(),
            };
        Some(index)
    }
}

/// How an id is written relative to the previous event's and the run id.
fn link(id: Option<Uuid>, prev: Option<Uuid>, run: Option<Uuid>) -> u8 {
    match id {
        None => LINK_NONE,
        Some(id) if Some(id) == prev => LINK_SAME,
        Some(id) if Some(id) == run => LINK_RUN,
        Some(_) => LINK_WRITTEN,
    }
}

/// What an event kept whole costs, about.
fn whole_size(event: &Event) -> usize {
    let mut size = std::mem::size_of::<Event>();
    match &event.body {
        EventBody::State { state, details } | EventBody::RunRecord { state, details, .. } => {
            size += state.message.as_ref().map_or(0, String::len);
            if details.is_some() {
                size += 4 * std::mem::size_of::<Event>();
            }
        }
        EventBody::Log {
            message, fields, ..
        } => size += message.len() + 64 * fields.len(),
        _ => {}
    }
    if let EventBody::RunRecord { later, .. } = &event.body {
        size += later.len() * std::mem::size_of::<crate::event::LaterState>();
    }
    size
}

fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_signed(out: &mut Vec<u8>, v: i128) {
    put_varint(out, ((v << 1) ^ (v >> 127)) as u128);
}

/// An id written against `base`: the step between their upper 96 bits, then its low 32 bits.
fn put_near(out: &mut Vec<u8>, id: u128, base: u128) {
    let step = (id >> 32).wrapping_sub(base >> 32) as i128;
    // A step of the upper 96 bits, modulo 2^96: sign-extended from its bit 95.
    let step = (step << 32) >> 32;
    put_signed(out, step);
    out.extend_from_slice(&(id as u32).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u128);
    out.extend_from_slice(s.as_bytes());
}

fn put_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    put_varint(out, map.len() as u128);
    for (key, value) in map {
        put_str(out, key);
        put_value(out, value);
    }
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(V_NULL),
        Value::Bool(false) => out.push(V_FALSE),
        Value::Bool(true) => out.push(V_TRUE),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(V_U64);
                put_varint(out, u128::from(u));
            } else if let Some(i) = n.as_i64() {
                out.push(V_I64);
                put_signed(out, i128::from(i));
            } else if let Some(f) = n
                .as_f64()
                .filter(|f| Number::from_f64(*f).as_ref() == Some(n))
            {
                out.push(V_F64);
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            } else {
                out.push(V_NUMBER_TEXT);
                put_str(out, &n.to_string());
            }
        }
        Value::String(s) => {
            out.push(V_STRING);
            put_str(out, s);
        }
        Value::Array(items) => {
            out.push(V_ARRAY);
            put_varint(out, items.len() as u128);
            for item in items {
                put_value(out, item);
            }
        }
        Value::Object(map) => {
            out.push(V_OBJECT);
            put_object(out, map);
        }
    }
}

/// Why a chunk could not be read back (a bug of this module: the bytes are its own).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DecodeError {
    /// Events decoded before the fault.
    pub decoded: usize,
    pub what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} after {} events of a compact chunk",
            self.what, self.decoded
        )
    }
}

/// Decodes a chunk, appending its events to `out` in order.
pub(crate) fn decode(chunk: Chunk, out: &mut Vec<Event>) -> Result<(), DecodeError> {
    let mut reader = Reader {
        bytes: &chunk.bytes,
        at: 0,
        strings: &chunk.strings,
        ctx: Context::default(),
    };
    let mut whole: Vec<Option<Event>> = chunk.whole.into_iter().map(Some).collect();
    out.reserve(chunk.events);
    for decoded in 0..chunk.events {
        let event = reader
            .event(&mut whole)
            .map_err(|what| DecodeError { decoded, what })?;
        out.push(event);
    }
    if reader.at != reader.bytes.len() {
        return Err(DecodeError {
            decoded: chunk.events,
            what: "bytes left over",
        });
    }
    Ok(())
}

type Read<T> = Result<T, &'static str>;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    strings: &'a [Cow<'static, str>],
    ctx: Context,
}

impl Reader<'_> {
    fn byte(&mut self) -> Read<u8> {
        let b = *self.bytes.get(self.at).ok_or("truncated")?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Read<&[u8]> {
        let end = self.at.checked_add(n).ok_or("truncated")?;
        let bytes = self.bytes.get(self.at..end).ok_or("truncated")?;
        self.at = end;
        Ok(bytes)
    }

    fn varint(&mut self) -> Read<u128> {
        let mut v = 0u128;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift >= 128 {
                return Err("varint too long");
            }
            v |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    fn signed(&mut self) -> Read<i128> {
        let v = self.varint()?;
        Ok(((v >> 1) as i128) ^ -((v & 1) as i128))
    }

    fn small<T: TryFrom<u128>>(&mut self) -> Read<T> {
        T::try_from(self.varint()?).map_err(|_| "number out of range")
    }

    fn near(&mut self, base: u128) -> Read<u128> {
        let step = self.signed()? as u128;
        let upper = (base >> 32).wrapping_add(step) & ((1u128 << 96) - 1);
        let low = self.take(4)?;
        let low = u32::from_le_bytes([low[0], low[1], low[2], low[3]]);
        Ok((upper << 32) | u128::from(low))
    }

    fn str(&mut self) -> Read<String> {
        let len = self.small::<usize>()?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| "invalid UTF-8")
    }

    fn string(&mut self) -> Read<Cow<'static, str>> {
        let v = self.varint()?;
        if v & 1 == 0 {
            let index = usize::try_from(v >> 1).map_err(|_| "string index out of range")?;
            return self
                .strings
                .get(index)
                .cloned()
                .ok_or("string index out of range");
        }
        let len = usize::try_from(v >> 1).map_err(|_| "string too long")?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(|s| Cow::Owned(s.to_owned()))
            .map_err(|_| "invalid UTF-8")
    }

    fn event(&mut self, whole: &mut [Option<Event>]) -> Read<Event> {
        let head = self.byte()?;
        let form = head & FORM_MASK;
        if form == FORM_WHOLE {
            let index = self.small::<usize>()?;
            return whole
                .get_mut(index)
                .and_then(Option::take)
                .ok_or("whole event index out of range");
        }
        if form != FORM_STATE && form != FORM_LOG {
            return Err("unknown form");
        }
        let links = self.byte()?;
        let id = self.near(self.ctx.prev_id)?;
        self.ctx.prev_id = id;
        let run = if head & RUN_IN_TABLE != 0 {
            let slot = usize::from(self.byte()?);
            *self.ctx.runs.get(slot).ok_or("run slot out of range")?
        } else {
            let run = self.near(id)?;
            self.ctx.runs[run_slot(run)] = run;
            run
        };
        let run_id = Uuid::from_u128(run);
        let parent_run_id = match links & 0b11 {
            LINK_NONE => None,
            LINK_SAME => self.ctx.prev_parent,
            LINK_WRITTEN => Some(Uuid::from_u128(self.near(id)?)),
            _ => Some(run_id),
        };
        let flow_run_id = match (links >> 2) & 0b11 {
            LINK_NONE => None,
            LINK_SAME => self.ctx.prev_flow,
            LINK_WRITTEN => Some(Uuid::from_u128(self.near(id)?)),
            _ => Some(run_id),
        };
        self.ctx.prev_parent = parent_run_id;
        self.ctx.prev_flow = flow_run_id;
        let attempt = self.small::<u32>()?;
        let timestamp = if head & RAW_TIME != 0 {
            let secs = i64::try_from(self.signed()?).map_err(|_| "time out of range")?;
            let nanos = self.small::<u32>()?;
            DateTime::<Utc>::from_timestamp(secs, nanos).ok_or("time out of range")?
        } else {
            let time = self
                .ctx
                .prev_time
                .checked_add(self.signed()?)
                .ok_or("time out of range")?;
            self.ctx.prev_time = time;
            let secs =
                i64::try_from(time.div_euclid(1_000_000_000)).map_err(|_| "time out of range")?;
            let nanos = time.rem_euclid(1_000_000_000) as u32;
            DateTime::<Utc>::from_timestamp(secs, nanos).ok_or("time out of range")?
        };
        let lease = if head & HAS_LEASE != 0 {
            Some(self.small::<u64>()?)
        } else {
            None
        };
        let name = self.string()?;
        let body = if form == FORM_STATE {
            let kind = *STATE_TYPES
                .get(usize::from(self.byte()?))
                .ok_or("unknown state type")?;
            let message = if head & EXTRA_A != 0 {
                Some(self.str()?)
            } else {
                None
            };
            let details = if head & EXTRA_B != 0 {
                Some(Box::new(self.details(id)?))
            } else {
                None
            };
            EventBody::State {
                state: State { kind, message },
                details,
            }
        } else {
            let level = *LEVELS
                .get(usize::from(self.byte()?))
                .ok_or("unknown log level")?;
            let message = self.str()?;
            let fields = if head & EXTRA_A != 0 {
                self.object()?
            } else {
                Map::new()
            };
            EventBody::Log {
                level,
                message,
                fields,
            }
        };
        Ok(Event {
            id: Uuid::from_u128(id),
            run_id,
            parent_run_id,
            flow_run_id,
            run_kind: if head & TASK_RUN != 0 {
                RunKind::Task
            } else {
                RunKind::Flow
            },
            name,
            attempt,
            timestamp,
            lease,
            body,
        })
    }

    fn details(&mut self, id: u128) -> Read<RunDetails> {
        let flags = self.byte()?;
        let task_key = self.string()?;
        let version = if flags & D_VERSION != 0 {
            Some(self.string()?)
        } else {
            None
        };
        let tags_len = self.small::<usize>()?;
        let mut tags = Vec::with_capacity(tags_len.min(1024));
        for _ in 0..tags_len {
            tags.push(self.string()?);
        }
        let parameters = if flags & D_PARAMETERS != 0 {
            Some(self.value()?)
        } else {
            None
        };
        let upstream_len = self.small::<usize>()?;
        let mut upstream = Vec::with_capacity(upstream_len.min(1024));
        for _ in 0..upstream_len {
            upstream.push(Uuid::from_u128(self.near(id)?));
        }
        let cache_key = if flags & D_CACHE_KEY != 0 {
            Some(self.str()?)
        } else {
            None
        };
        let deployment = if flags & D_DEPLOYMENT != 0 {
            Some(self.str()?)
        } else {
            None
        };
        let worker = if flags & D_WORKER != 0 {
            Some(self.string()?)
        } else {
            None
        };
        Ok(RunDetails {
            task_key,
            version,
            tags,
            parameters,
            upstream,
            cache_key,
            deployment,
            worker,
        })
    }

    fn object(&mut self) -> Read<Map<String, Value>> {
        let len = self.small::<usize>()?;
        let mut map = Map::new();
        for _ in 0..len {
            let key = self.str()?;
            let value = self.value()?;
            map.insert(key, value);
        }
        Ok(map)
    }

    fn value(&mut self) -> Read<Value> {
        Ok(match self.byte()? {
            V_NULL => Value::Null,
            V_FALSE => Value::Bool(false),
            V_TRUE => Value::Bool(true),
            V_U64 => Value::Number(self.small::<u64>()?.into()),
            V_I64 => {
                let i = i64::try_from(self.signed()?).map_err(|_| "number out of range")?;
                Value::Number(i.into())
            }
            V_F64 => {
                let b = self.take(8)?;
                let bits = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                Value::Number(Number::from_f64(f64::from_bits(bits)).ok_or("not a JSON number")?)
            }
            V_NUMBER_TEXT => {
                let text = self.str()?;
                Value::Number(text.parse::<Number>().map_err(|_| "not a JSON number")?)
            }
            V_STRING => Value::String(self.str()?),
            V_ARRAY => {
                let len = self.small::<usize>()?;
                let mut items = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    items.push(self.value()?);
                }
                Value::Array(items)
            }
            V_OBJECT => Value::Object(self.object()?),
            _ => return Err("unknown value tag"),
        })
    }
}

/// The compact backlog: sealed chunks, oldest first, and the chunk being written.
#[derive(Default)]
pub(crate) struct Backlog {
    sealed: VecDeque<Chunk>,
    writer: Writer,
    events: usize,
    /// Memory of the sealed chunks.
    sealed_bytes: usize,
    /// Events ever added.
    pushed: u64,
}

impl fmt::Debug for Backlog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backlog")
            .field("events", &self.events)
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl Backlog {
    /// Events held.
    pub(crate) fn events(&self) -> usize {
        self.events
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Memory held, about: the chunks' buffers, their strings and events kept whole.
    pub(crate) fn bytes(&self) -> usize {
        self.sealed_bytes + self.writer.chunk.size()
    }

    /// Events ever added.
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Adds an event at the end.
    pub(crate) fn push(&mut self, event: &Event) {
        self.writer.push(event);
        self.events += 1;
        self.pushed += 1;
        if self.writer.chunk.bytes.len() >= CHUNK_BYTES {
            let chunk = self.writer.seal();
            self.sealed_bytes += chunk.size();
            self.sealed.push_back(chunk);
        }
    }

    /// Takes the oldest chunks, at least one (sealing the one being written if it is the only
    /// one), until they hold `events` events or none is left.
    pub(crate) fn take(&mut self, events: usize) -> Vec<Chunk> {
        let mut taken = Vec::new();
        let mut count = 0;
        while count < events.max(1) {
            let chunk = match self.sealed.pop_front() {
                Some(chunk) => {
                    self.sealed_bytes -= chunk.size();
                    chunk
                }
                None if self.writer.chunk.events > 0 => self.writer.seal(),
                None => break,
            };
            count += chunk.events;
            self.events -= chunk.events;
            taken.push(chunk);
        }
        if self.events == 0 {
            // Nothing is left to write against: free the writer's buffers too.
            self.writer = Writer::default();
        }
        debug_assert!(self.events > 0 || self.sealed.is_empty());
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(events: &[Event]) -> (Vec<Event>, usize) {
        let mut backlog = Backlog::default();
        for event in events {
            backlog.push(event);
        }
        assert_eq!(backlog.events(), events.len());
        let bytes = backlog.bytes();
        let mut back = Vec::new();
        for chunk in backlog.take(usize::MAX) {
            decode(chunk, &mut back).expect("decodes");
        }
        assert!(backlog.is_empty());
        (back, bytes)
    }

    fn task_events(n: usize) -> Vec<Event> {
        let flow = crate::new_id();
        let mut events = Vec::new();
        let mut now = Utc::now();
        for i in 0..n {
            let run = crate::new_id();
            for (k, kind) in [StateType::Pending, StateType::Running, StateType::Completed]
                .into_iter()
                .enumerate()
            {
                now += chrono::Duration::nanoseconds(700);
                events.push(Event {
                    id: crate::new_id(),
                    run_id: run,
                    parent_run_id: Some(flow),
                    flow_run_id: Some(flow),
                    run_kind: RunKind::Task,
                    name: Cow::Borrowed("trivial"),
                    attempt: u32::from(k > 0),
                    timestamp: now,
                    lease: None,
                    body: EventBody::State {
                        state: State::new(kind),
                        details: (k == 0).then(|| {
                            Box::new(RunDetails {
                                task_key: Cow::Borrowed("overhead::trivial"),
                                upstream: if i % 2 == 0 { vec![flow] } else { vec![] },
                                ..RunDetails::default()
                            })
                        }),
                    },
                });
            }
        }
        events
    }

    #[test]
    fn task_runs_round_trip_in_a_few_bytes_each() {
        let events = task_events(100_000);
        let (back, bytes) = round_trip(&events);
        assert!(back == events, "the events decoded differ");
        let per_event = bytes as f64 / events.len() as f64;
        eprintln!("{per_event:.1} bytes per event");
        assert!(per_event < 24.0, "{per_event:.1} bytes per event");
    }

    #[test]
    fn forms_it_does_not_cover_are_kept_whole() {
        let mut events = task_events(3);
        let record = Event {
            body: EventBody::RunRecord {
                state: State::new(StateType::Pending),
                details: None,
                later: vec![crate::event::LaterState {
                    id: crate::new_id(),
                    timestamp: Utc::now(),
                    attempt: 1,
                    state: State::with_message(StateType::Failed, "boom"),
                }],
            },
            ..events[0].clone()
        };
        events.insert(2, record);
        events.insert(
            5,
            Event {
                body: EventBody::Unknown,
                ..events[1].clone()
            },
        );
        let (back, _) = round_trip(&events);
        assert_eq!(back, events);
    }

    #[test]
    fn a_leap_second_and_distant_times_round_trip() {
        let mut events = task_events(2);
        events[1].timestamp =
            DateTime::<Utc>::from_timestamp(1_483_228_799, 1_500_000_000).expect("leap second");
        events[2].timestamp = DateTime::<Utc>::MIN_UTC;
        events[3].timestamp = DateTime::<Utc>::MAX_UTC;
        let (back, _) = round_trip(&events);
        assert_eq!(back, events);
    }

    #[test]
    fn a_chunk_cut_short_is_an_error_not_a_panic() {
        let mut backlog = Backlog::default();
        for event in task_events(10) {
            backlog.push(&event);
        }
        let mut chunk = backlog.take(1).pop().expect("a chunk");
        for cut in [0, 1, 5, chunk.bytes.len() / 2, chunk.bytes.len() - 1] {
            let mut short = Chunk {
                bytes: chunk.bytes[..cut].to_vec(),
                strings: chunk.strings.clone(),
                whole: Vec::new(),
                events: chunk.events,
                side_bytes: 0,
            };
            let mut out = Vec::new();
            assert!(
                decode(std::mem::take(&mut short), &mut out).is_err(),
                "{cut}"
            );
        }
        chunk.strings.clear();
        assert!(decode(chunk, &mut Vec::new()).is_err());
    }

    #[test]
    fn many_distinct_names_overflow_the_table_into_place() {
        let mut events = task_events(MAX_STRINGS);
        for (i, event) in events.iter_mut().enumerate() {
            event.name = Cow::Owned(format!("name-{i}"));
        }
        let (back, _) = round_trip(&events);
        assert_eq!(back, events);
    }

    fn arb_uuid() -> impl Strategy<Value = Uuid> {
        prop_oneof![
            any::<u128>().prop_map(Uuid::from_u128),
            Just(Uuid::nil()),
            Just(Uuid::max()),
            (0u128..4).prop_map(|n| Uuid::from_u128(0x0192_a000_0000_7000_8000_0000_0000_0000 + n)),
        ]
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z_]{1,8}",
            any::<String>(),
            Just("naïve — 日本語 🦀 \u{0}\n\"\\".to_string()),
        ]
    }

    fn arb_cow() -> impl Strategy<Value = Cow<'static, str>> {
        prop_oneof![
            Just(Cow::Borrowed("step")),
            Just(Cow::Borrowed("flow")),
            arb_text().prop_map(Cow::Owned),
        ]
    }

    fn arb_number() -> impl Strategy<Value = Number> {
        prop_oneof![
            any::<u64>().prop_map(Number::from),
            any::<i64>().prop_map(Number::from),
            any::<f64>().prop_filter_map("finite", Number::from_f64),
        ]
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            arb_number().prop_map(Value::Number),
            arb_text().prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(arb_text(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
        prop_oneof![
            (
                DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
                0u32..1_000_000_000
            )
                .prop_filter_map("in range", |(s, n)| DateTime::<Utc>::from_timestamp(s, n)),
            (1_700_000_000i64..1_700_000_002, 0u32..1_000_000_000)
                .prop_filter_map("in range", |(s, n)| DateTime::<Utc>::from_timestamp(s, n)),
        ]
    }

    fn arb_state() -> impl Strategy<Value = State> {
        (
            prop::sample::select(STATE_TYPES.to_vec()),
            prop::option::of(arb_text()),
        )
            .prop_map(|(kind, message)| State { kind, message })
    }

    fn arb_details() -> impl Strategy<Value = RunDetails> {
        (
            arb_cow(),
            prop::option::of(arb_cow()),
            prop::collection::vec(arb_cow(), 0..4),
            prop::option::of(arb_value()),
            prop::collection::vec(arb_uuid(), 0..3),
            prop::option::of(arb_text()),
            prop::option::of(arb_text()),
            prop::option::of(arb_cow()),
        )
            .prop_map(
                |(task_key, version, tags, parameters, upstream, cache_key, deployment, worker)| {
                    RunDetails {
                        task_key,
                        version,
                        tags,
                        parameters,
                        upstream,
                        cache_key,
                        deployment,
                        worker,
                    }
                },
            )
    }

    fn arb_body() -> impl Strategy<Value = EventBody> {
        prop_oneof![
            4 => (arb_state(), prop::option::of(arb_details().prop_map(Box::new)))
                .prop_map(|(state, details)| EventBody::State { state, details }),
            2 => (
                prop::sample::select(LEVELS.to_vec()),
                arb_text(),
                prop::collection::btree_map(arb_text(), arb_value(), 0..4),
            )
                .prop_map(|(level, message, fields)| EventBody::Log {
                    level,
                    message,
                    fields: fields.into_iter().collect(),
                }),
            1 => (arb_state(), prop::collection::vec(arb_state(), 0..3)).prop_map(|(state, later)| {
                EventBody::RunRecord {
                    state,
                    details: None,
                    later: later
                        .into_iter()
                        .map(|state| crate::event::LaterState {
                            id: Uuid::from_u128(7),
                            timestamp: DateTime::<Utc>::UNIX_EPOCH,
                            attempt: 2,
                            state,
                        })
                        .collect(),
                }
            }),
            1 => Just(EventBody::Unknown),
        ]
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        // Few distinct run, parent and flow ids, so the table and "same as before" are used.
        let ids = prop::collection::vec(arb_uuid(), 3);
        (
            (arb_uuid(), ids, 0usize..3, 0usize..4, 0usize..5),
            any::<bool>(),
            arb_cow(),
            any::<u32>(),
            arb_time(),
            prop::option::of(any::<u64>()),
            arb_body(),
        )
            .prop_map(
                |((id, ids, run, parent, flow), task, name, attempt, timestamp, lease, body)| {
                    let run_id = ids[run];
                    Event {
                        id,
                        run_id,
                        parent_run_id: ids.get(parent).copied(),
                        flow_run_id: match flow {
                            3 => Some(run_id),
                            4 => None,
                            i => Some(ids[i]),
                        },
                        run_kind: if task { RunKind::Task } else { RunKind::Flow },
                        name,
                        attempt,
                        timestamp,
                        lease,
                        body,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the events, decoding gives back exactly the events encoded, in order.
        #[test]
        fn any_events_round_trip(events in prop::collection::vec(arb_event(), 0..40)) {
            let (back, _) = round_trip(&events);
            prop_assert_eq!(back, events);
        }
    }

    /// What the sink thread pays per event to keep it whole (a clone pushed on a vector, and
    /// later dropped by the sender) against encoding it, and what decoding costs the sender:
    /// `cargo test --release -p flowkit --lib compact_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, for release builds"]
    fn compact_cost() {
        let events = task_events(300_000);
        let n = events.len() as f64;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let mut whole = Vec::new();
            for event in &events {
                whole.push(std::hint::black_box(event).clone());
            }
            let clone_ns = t.elapsed().as_nanos() as f64 / n;
            let t = std::time::Instant::now();
            drop(std::hint::black_box(whole));
            let drop_ns = t.elapsed().as_nanos() as f64 / n;
            let t = std::time::Instant::now();
            let mut backlog = Backlog::default();
            for event in &events {
                backlog.push(std::hint::black_box(event));
            }
            let encode_ns = t.elapsed().as_nanos() as f64 / n;
            let bytes = backlog.bytes() as f64 / n;
            let t = std::time::Instant::now();
            let mut back = Vec::new();
            for chunk in backlog.take(usize::MAX) {
                decode(chunk, &mut back).expect("decodes");
            }
            let decode_ns = t.elapsed().as_nanos() as f64 / n;
            let t = std::time::Instant::now();
            drop(std::hint::black_box(back));
            let drop2_ns = t.elapsed().as_nanos() as f64 / n;
            eprintln!(
                "per event: clone {clone_ns:.0} ns + drop {drop_ns:.0} ns ({} B whole) | encode {encode_ns:.0} ns ({bytes:.1} B) + decode {decode_ns:.0} ns + drop {drop2_ns:.0} ns",
                std::mem::size_of::<Event>()
            );
        }
    }

    /// Chunks are sealed as they fill, and what is taken is the oldest first.
    #[test]
    fn chunks_are_taken_oldest_first() {
        let events = task_events(40_000);
        let mut backlog = Backlog::default();
        for event in &events {
            backlog.push(event);
        }
        let mut back = Vec::new();
        let mut takes = 0;
        while !backlog.is_empty() {
            let before = backlog.bytes();
            let chunks = backlog.take(10_000);
            assert!(!chunks.is_empty());
            for chunk in chunks {
                decode(chunk, &mut back).expect("decodes");
            }
            assert!(backlog.bytes() < before);
            takes += 1;
        }
        assert!(takes > 2, "{takes}");
        assert!(back == events);
        assert_eq!(backlog.bytes(), 0);
    }
}

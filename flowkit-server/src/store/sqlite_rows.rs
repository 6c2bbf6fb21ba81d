//! Rows written to SQLite with multi-row statements (`INSERT … VALUES (?, …), (?, …)`), by
//! ingestion ([`super::sqlite_ingest`]) and the scheduler's tick
//! ([`super::sqlite_schedule_rows`]): each row binds its own values where they lie, chunks take
//! a few sizes so that each statement shape stays prepared, and the ids a statement returns are
//! read back the same way.

use super::StoreError;
use super::rows::{self, LogRow, RunRow, StateRow};
use rusqlite::Statement;
use std::collections::HashSet;
use std::sync::LazyLock;
use uuid::Uuid;

/// `head (?, …), (?, …) tail` with `rows` tuples of `columns` placeholders.
pub(super) fn values_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let tuple = format!("({})", vec!["?"; columns].join(", "));
    format!("{head}{}{tail}", vec![tuple; rows].join(", "))
}

/// A row bound into a multi-row statement.
pub(super) trait BindRow {
    /// Values bound per row (the columns the statement names for it).
    const WIDTH: usize;
    /// Binds this row's values to the parameters after the first `at`.
    fn bind<'r>(&'r self, statement: &mut impl Binder<'r>, at: usize) -> Result<(), StoreError>;
}

impl<R: BindRow> BindRow for &R {
    const WIDTH: usize = R::WIDTH;
    fn bind<'r>(&'r self, statement: &mut impl Binder<'r>, at: usize) -> Result<(), StoreError> {
        (**self).bind(statement, at)
    }
}

/// What binds values to a statement's parameters (numbered from 1): a rusqlite statement,
/// which copies each, or [`super::sqlite_static_insert`]'s, which binds values of lifetime
/// `'r` where they lie.
pub(super) trait Binder<'r> {
    /// Binds bytes that live for `'r`.
    fn blob(&mut self, index: usize, value: &'r [u8]) -> Result<(), StoreError>;
    /// Binds text that lives for `'r`.
    fn text(&mut self, index: usize, value: &'r str) -> Result<(), StoreError>;
    /// Binds text made for this binding (copied).
    fn text_copied(&mut self, index: usize, value: &str) -> Result<(), StoreError>;
    /// Binds an integer.
    fn int(&mut self, index: usize, value: i64) -> Result<(), StoreError>;
    /// Binds NULL.
    fn null(&mut self, index: usize) -> Result<(), StoreError>;
}

impl<'r> Binder<'r> for Statement<'_> {
    fn blob(&mut self, index: usize, value: &'r [u8]) -> Result<(), StoreError> {
        Ok(self.raw_bind_parameter(index, value)?)
    }
    fn text(&mut self, index: usize, value: &'r str) -> Result<(), StoreError> {
        Ok(self.raw_bind_parameter(index, value)?)
    }
    fn text_copied(&mut self, index: usize, value: &str) -> Result<(), StoreError> {
        Ok(self.raw_bind_parameter(index, value)?)
    }
    fn int(&mut self, index: usize, value: i64) -> Result<(), StoreError> {
        Ok(self.raw_bind_parameter(index, value)?)
    }
    fn null(&mut self, index: usize) -> Result<(), StoreError> {
        Ok(self.raw_bind_parameter(index, rusqlite::types::Null)?)
    }
}

/// `chunk`'s rows, then copies of its last row up to `size` rows in all (the padding of a
/// statement made for `size` rows).
pub(super) fn padded<R>(chunk: &[R], size: usize) -> impl Iterator<Item = &R> {
    let padding = chunk
        .last()
        .map(|last| std::iter::repeat_n(last, size.saturating_sub(chunk.len())));
    chunk.iter().chain(padding.into_iter().flatten())
}

/// Binds `rows` one after the other to `binder`, [`BindRow::WIDTH`] parameters each.
pub(super) fn bind_rows<'r, R: BindRow + 'r>(
    binder: &mut impl Binder<'r>,
    rows: impl Iterator<Item = &'r R>,
) -> Result<(), StoreError> {
    for (i, row) in rows.enumerate() {
        row.bind(binder, i * R::WIDTH)?;
    }
    Ok(())
}

/// A value a row binds: each kind says which of [`Binder`]'s bindings it takes.
pub(super) trait Param<'r> {
    /// Binds this value to parameter `index` of `binder`.
    fn put(self, binder: &mut impl Binder<'r>, index: usize) -> Result<(), StoreError>;
}

impl<'r> Param<'r> for &'r [u8; 16] {
    fn put(self, binder: &mut impl Binder<'r>, index: usize) -> Result<(), StoreError> {
        binder.blob(index, self)
    }
}

impl<'r> Param<'r> for &'r str {
    fn put(self, binder: &mut impl Binder<'r>, index: usize) -> Result<(), StoreError> {
        binder.text(index, self)
    }
}

impl<'r> Param<'r> for &'r String {
    fn put(self, binder: &mut impl Binder<'r>, index: usize) -> Result<(), StoreError> {
        binder.text(index, self)
    }
}

/// Text made for the binding (a JSON encoding): copied.
impl<'r> Param<'r> for String {
    fn put(self, binder: &mut impl Binder<'r>, index: usize) -> Result<(), StoreError> {
        binder.text_copied(index, &self)
    }
}

impl<'r> Param<'r> for &'r Option<String> {
    fn put(self, binder: &mut impl Binder<'r>, index: usize) -> Result<(), StoreError> {
        match self {
            Some(text) => binder.text(index, text),
            None => binder.null(index),
        }
    }
}

impl<'r, P: Param<'r>> Param<'r> for Option<P> {
    fn put(self, binder: &mut impl Binder<'r>, index: usize) -> Result<(), StoreError> {
        match self {
            Some(value) => value.put(binder, index),
            None => binder.null(index),
        }
    }
}

impl<'r> Param<'r> for i64 {
    fn put(self, binder: &mut impl Binder<'r>, index: usize) -> Result<(), StoreError> {
        binder.int(index, self)
    }
}

impl<'r> Param<'r> for u32 {
    fn put(self, binder: &mut impl Binder<'r>, index: usize) -> Result<(), StoreError> {
        binder.int(index, i64::from(self))
    }
}

impl<'r> Param<'r> for i16 {
    fn put(self, binder: &mut impl Binder<'r>, index: usize) -> Result<(), StoreError> {
        binder.int(index, i64::from(self))
    }
}

impl<'r> Param<'r> for bool {
    fn put(self, binder: &mut impl Binder<'r>, index: usize) -> Result<(), StoreError> {
        binder.int(index, i64::from(self))
    }
}

/// Binds `values` (each a [`Param`]) to the parameters after the first `at`, in order.
macro_rules! bind_all {
    ($statement:expr, $at:expr, $($value:expr),+ $(,)?) => {{
        let mut index = $at;
        $(
            index += 1;
            $crate::store::sqlite_rows::Param::put($value, &mut *$statement, index)?;
        )+
        let _ = index;
    }};
}
pub(super) use bind_all;

impl BindRow for StateRow {
    const WIDTH: usize = 7;
    fn bind<'r>(&'r self, statement: &mut impl Binder<'r>, at: usize) -> Result<(), StoreError> {
        bind_all!(
            statement,
            at,
            self.event_id.as_bytes(),
            self.run_id.as_bytes(),
            self.group_id.as_bytes(),
            self.state.as_str(),
            &self.message,
            self.attempt,
            self.ts,
        );
        Ok(())
    }
}

impl BindRow for LogRow {
    const WIDTH: usize = 10;
    fn bind<'r>(&'r self, statement: &mut impl Binder<'r>, at: usize) -> Result<(), StoreError> {
        bind_all!(
            statement,
            at,
            self.event_id.as_bytes(),
            self.run_id.as_bytes(),
            self.flow_run_id.as_ref().map(Uuid::as_bytes),
            self.group_id.as_bytes(),
            &self.run_name,
            rows::level_number(self.level),
            &self.message,
            &self.fields,
            self.attempt,
            self.ts,
        );
        Ok(())
    }
}

impl BindRow for RunRow {
    const WIDTH: usize = 24;
    fn bind<'r>(&'r self, statement: &mut impl Binder<'r>, at: usize) -> Result<(), StoreError> {
        static NO_DETAILS: LazyLock<rows::DetailsRow> = LazyLock::new(rows::DetailsRow::default);
        let details = self.details.as_ref().unwrap_or(&NO_DETAILS);
        bind_all!(
            statement,
            at,
            self.id.as_bytes(),
            self.kind.as_str(),
            &self.name,
            self.parent_run_id.as_ref().map(Uuid::as_bytes),
            self.flow_run_id.as_ref().map(Uuid::as_bytes),
            self.state.as_str(),
            &self.state_message,
            self.state_ts,
            self.state_event_id.as_bytes(),
            self.attempt,
            self.created,
            self.started,
            self.ended,
            self.details.is_some(),
            &details.task_key,
            details.tags_json()?,
            &details.parameters,
            details.upstream_json()?,
            &details.cache_key,
            &details.deployment,
            &details.version,
            &details.worker,
            self.lease_token,
            self.received,
        );
        Ok(())
    }
}

/// Splits `rows` into chunks of greedy sizes of `sizes` (largest first); yields each with
/// the index of its size (so the statement for it). With `pad`, a last chunk smaller than every
/// size gets the smallest one, and is to be padded.
pub(super) fn chunked<'r, T>(
    mut rows: &'r [T],
    sizes: &[usize],
    pad: bool,
) -> impl Iterator<Item = (usize, &'r [T])> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let found = sizes
            .iter()
            .copied()
            .enumerate()
            .find(|&(_, size)| size <= rows.len());
        let (which, size) = match found {
            Some(found) => found,
            None if pad => (sizes.len() - 1, rows.len()),
            None => return None,
        };
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some((which, chunk))
    })
}

/// Runs `statement`, whose rows are one event id each, and adds the ids to `ids`.
pub(super) fn read_ids(
    statement: &mut Statement<'_>,
    ids: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    let mut rows = statement.raw_query();
    while let Some(row) = rows.next()? {
        let id: [u8; 16] = row.get(0)?;
        ids.insert(Uuid::from_bytes(id));
    }
    Ok(())
}

//! Inserts that bind the rows' values where they lie (`SQLITE_STATIC`), for the writer's
//! counted inserts (`sqlite_ingest::insert_counted`), the hottest statements of ingestion.
//!
//! rusqlite binds every text and blob `SQLITE_TRANSIENT`: SQLite copies each into a block of
//! its own, then frees it at the next binding; in a profile of `ingest_bench` those copies
//! were 5–6% of the writer's samples. Bound `SQLITE_STATIC`, SQLite reads the values from
//! the rows themselves while the statement runs. That is sound only while the rows outlive
//! the run, which [`StaticInsert::run`] makes sure of: it binds rows borrowed for the call,
//! and before it returns the statement is reset and its bindings cleared, so it keeps no
//! pointer into them.
//!
//! rusqlite does not give out the `sqlite3_stmt` of its statements, so these are prepared
//! here, on the writer's connection, and finalized when dropped (before the connection is
//! closed, see `sqlite_ingest::Ingester::close`).

use super::StoreError;
use super::sqlite_rows::{BindRow, Binder, bind_rows};
use rusqlite::ffi;
use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// One prepared insert on the writer's connection, run with rows bound where they lie.
pub(super) struct StaticInsert {
    db: NonNull<ffi::sqlite3>,
    statement: NonNull<ffi::sqlite3_stmt>,
}

/// The message of the connection's last error, with `what` failed and its code.
fn error(db: NonNull<ffi::sqlite3>, what: &str, code: c_int) -> StoreError {
    // SAFETY: `db` is the writer's live connection (see `StaticInsert::prepare`), used by this
    // thread only while it is borrowed; `sqlite3_errmsg` returns a NUL-terminated string
    // SQLite owns, valid until the next call on the connection, copied here at once.
    #[allow(unsafe_code)]
    let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db.as_ptr())) };
    StoreError::Sqlite(format!(
        "{what}: {} (code {code})",
        message.to_string_lossy()
    ))
}

impl StaticInsert {
    /// Prepares `sql` on `db`.
    ///
    /// `db` must be a live connection that the calling thread alone uses for as long as the
    /// insert lives (the writer's, borrowed from its driver's thread), and the insert must be
    /// dropped before the connection is closed.
    pub(super) fn prepare(
        db: NonNull<ffi::sqlite3>,
        sql: &str,
    ) -> Result<StaticInsert, StoreError> {
        let length = c_int::try_from(sql.len())
            .map_err(|_| StoreError::Sqlite("an insert longer than 2 GiB".into()))?;
        let mut statement = std::ptr::null_mut();
        // SAFETY: `db` is live and used by this thread alone (the caller's promise); `sql` is
        // valid for `length` bytes; SQLite writes the new statement (or null) to `statement`.
        #[allow(unsafe_code)]
        let code = unsafe {
            ffi::sqlite3_prepare_v3(
                db.as_ptr(),
                sql.as_ptr().cast(),
                length,
                ffi::SQLITE_PREPARE_PERSISTENT as std::ffi::c_uint,
                &mut statement,
                std::ptr::null_mut(),
            )
        };
        if code != ffi::SQLITE_OK {
            return Err(error(db, "preparing an insert", code));
        }
        let statement = NonNull::new(statement)
            .ok_or_else(|| StoreError::Sqlite("an insert without a statement".into()))?;
        Ok(StaticInsert { db, statement })
    }

    /// Binds `rows` one after the other (each [`BindRow::WIDTH`] parameters), runs the insert
    /// and answers the rows it changed (`sqlite3_changes64`). Whatever happens, the statement
    /// is reset and its bindings cleared before this returns.
    pub(super) fn run<'r, R: BindRow + 'r>(
        &mut self,
        rows: impl Iterator<Item = &'r R>,
    ) -> Result<usize, StoreError> {
        // Tied to the rows' own lifetime (`Binder<'r>` is implemented for exactly this one):
        // every value bound lives at least until this call returns.
        let mut binder: StaticBinder<'_, 'r> = StaticBinder {
            insert: self,
            rows: PhantomData,
        };
        let outcome = bind_rows(&mut binder, rows).and_then(|()| self.step());
        // SAFETY: the statement is live (finalized only on drop) and used by this thread
        // alone. After these two calls it holds no pointer into `rows`: reset stops its run,
        // and clearing the bindings sets every parameter to NULL.
        #[allow(unsafe_code)]
        unsafe {
            ffi::sqlite3_reset(self.statement.as_ptr());
            ffi::sqlite3_clear_bindings(self.statement.as_ptr());
        }
        outcome
    }

    /// Runs the bound statement to its end; the rows it changed.
    fn step(&mut self) -> Result<usize, StoreError> {
        // SAFETY: the statement is live and every parameter bound points into rows borrowed
        // for the caller's whole call (`run`), which outlive this.
        #[allow(unsafe_code)]
        let code = unsafe { ffi::sqlite3_step(self.statement.as_ptr()) };
        if code != ffi::SQLITE_DONE {
            return Err(error(self.db, "running an insert", code));
        }
        // SAFETY: the connection is live and used by this thread alone.
        #[allow(unsafe_code)]
        let changes = unsafe { ffi::sqlite3_changes64(self.db.as_ptr()) };
        Ok(usize::try_from(changes).unwrap_or(0))
    }

    /// Checks the code of a binding.
    fn bound(&self, code: c_int) -> Result<(), StoreError> {
        if code == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(error(self.db, "binding a value", code))
        }
    }
}

impl Drop for StaticInsert {
    fn drop(&mut self) {
        // SAFETY: the statement is live and finalized once, here; its connection is still
        // open (the owner drops inserts before closing it, see `prepare`).
        #[allow(unsafe_code)]
        unsafe {
            ffi::sqlite3_finalize(self.statement.as_ptr());
        }
    }
}

/// Binds to a [`StaticInsert`] values that live for `'r`, without copies. Made only by
/// [`StaticInsert::run`], whose rows live for `'r`.
struct StaticBinder<'s, 'r> {
    insert: &'s mut StaticInsert,
    rows: PhantomData<&'r ()>,
}

impl StaticBinder<'_, '_> {
    /// A parameter number as SQLite takes it.
    fn index(index: usize) -> Result<c_int, StoreError> {
        c_int::try_from(index).map_err(|_| StoreError::Sqlite("a parameter past 2^31".into()))
    }

    /// A length as SQLite takes it.
    fn length(length: usize) -> Result<c_int, StoreError> {
        c_int::try_from(length).map_err(|_| StoreError::Sqlite("a value of 2 GiB or more".into()))
    }

    /// Binds `value` with `destructor`: `SQLITE_TRANSIENT` (copied) for any text,
    /// `SQLITE_STATIC` only for text that lives for `'r` ([`Binder::text`]).
    fn bind_text(
        &mut self,
        index: usize,
        value: &str,
        destructor: ffi::sqlite3_destructor_type,
    ) -> Result<(), StoreError> {
        let (index, length) = (Self::index(index)?, Self::length(value.len())?);
        // SAFETY: `value` is UTF-8 of `length` bytes. Copied (`SQLITE_TRANSIENT`), it may be
        // dropped right after; bound in place (`SQLITE_STATIC`, from `text` only), it lives
        // for `'r`, longer than the run of the statement (see `blob`).
        #[allow(unsafe_code)]
        let code = unsafe {
            ffi::sqlite3_bind_text(
                self.insert.statement.as_ptr(),
                index,
                value.as_ptr().cast(),
                length,
                destructor,
            )
        };
        self.insert.bound(code)
    }
}

impl<'r> Binder<'r> for StaticBinder<'_, 'r> {
    fn blob(&mut self, index: usize, value: &'r [u8]) -> Result<(), StoreError> {
        let (index, length) = (Self::index(index)?, Self::length(value.len())?);
        // SAFETY: `value` lives for `'r`, longer than the run of the statement it is bound to
        // (see `StaticInsert::run`, which resets and clears the statement before returning).
        #[allow(unsafe_code)]
        let code = unsafe {
            ffi::sqlite3_bind_blob(
                self.insert.statement.as_ptr(),
                index,
                value.as_ptr().cast(),
                length,
                ffi::SQLITE_STATIC(),
            )
        };
        self.insert.bound(code)
    }

    fn text(&mut self, index: usize, value: &'r str) -> Result<(), StoreError> {
        // `value` lives for `'r`, as `blob`'s does.
        self.bind_text(index, value, ffi::SQLITE_STATIC())
    }

    fn text_copied(&mut self, index: usize, value: &str) -> Result<(), StoreError> {
        self.bind_text(index, value, ffi::SQLITE_TRANSIENT())
    }

    fn int(&mut self, index: usize, value: i64) -> Result<(), StoreError> {
        let index = Self::index(index)?;
        // SAFETY: the statement is live and used by this thread alone.
        #[allow(unsafe_code)]
        let code = unsafe { ffi::sqlite3_bind_int64(self.insert.statement.as_ptr(), index, value) };
        self.insert.bound(code)
    }

    fn null(&mut self, index: usize) -> Result<(), StoreError> {
        let index = Self::index(index)?;
        // SAFETY: the statement is live and used by this thread alone.
        #[allow(unsafe_code)]
        let code = unsafe { ffi::sqlite3_bind_null(self.insert.statement.as_ptr(), index) };
        self.insert.bound(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite_rows::bind_all;
    use uuid::Uuid;

    struct Row {
        id: Uuid,
        name: String,
        note: Option<String>,
        n: i64,
    }

    impl BindRow for Row {
        const WIDTH: usize = 4;
        fn bind<'r>(&'r self, binder: &mut impl Binder<'r>, at: usize) -> Result<(), StoreError> {
            bind_all!(
                binder,
                at,
                self.id.as_bytes(),
                &self.name,
                &self.note,
                self.n
            );
            Ok(())
        }
    }

    fn row(name: &str, note: Option<&str>, n: i64) -> Row {
        Row {
            id: Uuid::now_v7(),
            name: name.repeat(50),
            note: note.map(str::to_string),
            n,
        }
    }

    /// Rows bound where they lie are stored as they were, after the rows are gone; a row
    /// stored already is not counted; a failed run leaves the insert usable.
    #[test]
    fn rows_are_stored_as_bound_and_counted() {
        let db = rusqlite::Connection::open_in_memory().expect("db");
        db.execute_batch(
            "CREATE TABLE t (id BLOB PRIMARY KEY, name TEXT NOT NULL, note TEXT, \
             n INTEGER CHECK (n >= 0))",
        )
        .expect("table");
        // SAFETY: `db` is open for the whole test, used by this thread only, and the insert
        // is dropped before it.
        #[allow(unsafe_code)]
        let handle = NonNull::new(unsafe { db.handle() }).expect("handle");
        let mut insert = StaticInsert::prepare(
            handle,
            "INSERT OR FAIL INTO t VALUES (?, ?, ?, ?), (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .expect("prepare");

        let first = vec![row("a", Some("note"), 1), row("b", None, 2)];
        assert_eq!(insert.run(first.iter()).expect("first"), 2);
        let ids: Vec<Uuid> = first.iter().map(|r| r.id).collect();
        drop(first);
        // The memory the first rows lay in is handed out again.
        let again = row("c", Some("other"), 3);
        let stored_again = Row {
            id: ids[0],
            ..row("x", None, 9)
        };
        assert_eq!(
            insert
                .run([&stored_again, &again].into_iter())
                .expect("second"),
            1
        );

        let refused = [row("d", None, -1), row("e", None, 5)];
        let error = insert.run(refused.iter()).expect_err("a CHECK constraint");
        assert!(
            error.to_string().contains("CHECK constraint failed"),
            "{error}"
        );
        let last = [row("f", None, 6), row("g", Some(""), 7)];
        assert_eq!(insert.run(last.iter()).expect("after the failure"), 2);
        drop(insert);

        let mut select = db
            .prepare("SELECT id, name, note, n FROM t ORDER BY n")
            .expect("select");
        let stored: Vec<(Vec<u8>, String, Option<String>, i64)> = select
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let expected = [
            (ids[0], "a", Some("note"), 1),
            (ids[1], "b", None, 2),
            (again.id, "c", Some("other"), 3),
            (last[0].id, "f", None, 6),
            (last[1].id, "g", Some(""), 7),
        ];
        assert_eq!(stored.len(), expected.len());
        for ((id, name, note, n), (want_id, want_name, want_note, want_n)) in
            stored.iter().zip(expected)
        {
            assert_eq!(id.as_slice(), want_id.as_bytes());
            assert_eq!(*name, want_name.repeat(50));
            assert_eq!(note.as_deref(), want_note);
            assert_eq!(*n, want_n);
        }
    }
}

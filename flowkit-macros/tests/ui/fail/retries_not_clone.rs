// With `retries`, every attempt gets its own copy of the arguments, so they must be `Clone`:
// the error points at the argument's type (and at `retries`).
use flowkit::task;

struct Connection;

#[task(retries = 3)]
async fn query(conn: Connection, sql: String) -> anyhow::Result<u64> {
    let _ = (conn, sql);
    Ok(0)
}

fn main() {}

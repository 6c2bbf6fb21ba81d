//! Bodies keep working as written: `return`, `?` with error conversion, `mut` and
//! destructuring arguments, early returns in infallible fns, `async` blocks and closures.

use flowkit::task;

#[derive(Debug)]
struct MyError(String);

impl From<std::num::ParseIntError> for MyError {
    fn from(e: std::num::ParseIntError) -> Self {
        MyError(e.to_string())
    }
}

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[task(retries = 1)]
async fn parse_all(mut texts: Vec<String>, (lo, hi): (i64, i64)) -> Result<Vec<i64>, MyError> {
    texts.retain(|t| !t.is_empty());
    let mut out = Vec::new();
    for t in texts {
        let n: i64 = t.trim().parse()?;
        if n < lo || n > hi {
            return Err(MyError(format!("{n} out of range")));
        }
        out.push(n);
    }
    Ok(out)
}

#[task]
async fn early(x: u8) -> &'static str {
    if x == 0 {
        return "zero";
    }
    let later = async { "some" };
    later.await
}

#[task]
async fn unit_return(flag: bool) {
    if flag {
        return;
    }
    println!("not returned early");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(parse_all(vec!["1".into(), "".into(), " 2".into()], (0, 9)).await.unwrap(), [1, 2]);
    assert!(parse_all(vec!["x".into()], (0, 9)).await.is_err());
    assert_eq!(parse_all(vec!["10".into()], (0, 9)).await.unwrap_err().0, "10 out of range");
    assert_eq!(early(0).await, "zero");
    assert_eq!(early(1).await, "some");
    unit_return(true).await;
}

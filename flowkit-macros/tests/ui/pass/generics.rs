//! Generic tasks: type, const and lifetime parameters, where clauses, parameters only in the
//! return type; `submit` and `map` exist when the parameters are `Send + Sync + 'static`.

use flowkit::task;
use std::fmt::Display;
use std::str::FromStr;

#[task(retries = 1)]
async fn show<T: Display + Clone>(value: T) -> String {
    value.to_string()
}

#[task]
async fn parse<T>(text: String) -> Result<T, T::Err>
where
    T: FromStr,
    T::Err: std::fmt::Debug,
{
    text.parse()
}

#[task]
async fn sum<const N: usize>(values: [u32; N]) -> u32 {
    values.iter().sum()
}

#[task]
async fn longest<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.len() >= b.len() { a } else { b }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(show(3).await, "3");
    assert_eq!(parse::<u8>("7".into()).await.unwrap(), 7);
    assert_eq!(sum([1, 2, 3]).await, 6);
    assert_eq!(longest("ab", "a").await, "ab");
    assert_eq!(show::submit(5u8).await, "5");
    let all = show::map(vec![1, 2, 3]).await;
    assert_eq!(all, ["1", "2", "3"]);
    let parsed = parse::submit::<i32>("-1".into()).await;
    assert_eq!(parsed.unwrap(), -1);
}

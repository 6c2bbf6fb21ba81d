//! Methods are rewritten in place (no struct beside them): `&self`, `&mut self`, `self` by
//! value, `mut self`, `self: Arc<Self>`, with and without retries, and associated fns that
//! mention `Self`.

use flowkit::task;
use std::sync::Arc;

#[derive(Clone, Debug, Default, serde::Serialize)]
struct Client {
    base: String,
    calls: u32,
}

impl Client {
    #[task]
    async fn new(base: String) -> Self {
        Client { base, calls: 0 }
    }

    /// Shared borrow: captured as is, retries need only the arguments to be `Clone`.
    #[task(retries = 2, cache = inputs)]
    pub async fn get(&self, path: String) -> anyhow::Result<String> {
        if path.is_empty() {
            anyhow::bail!("empty path");
        }
        Ok(format!("{}/{}", self.base, path))
    }

    #[task]
    async fn bump(&mut self, by: u32) -> u32 {
        self.calls += by;
        self.calls
    }

    /// By value with retries: every attempt gets a clone of `self`.
    #[task(retries = 1)]
    async fn into_base(self) -> String {
        let s = format!("{}", self.base);
        println!("{}", self.calls);
        s
    }

    #[task(retries = 1)]
    async fn grow(mut self, by: u32) -> Self {
        self.calls += by;
        self
    }

    #[task]
    async fn consume(mut self) -> u32 {
        self.calls += 1;
        self.calls
    }

    #[task(retries = 1)]
    async fn shared(self: Arc<Self>) -> usize {
        self.base.len()
    }

    #[task]
    async fn borrowed<'a>(&'a self, s: &'a str) -> &'a str {
        if s.is_empty() { &self.base } else { s }
    }
}

trait Store {
    async fn load(&self, key: u32) -> Option<String>;
}

impl Store for Client {
    #[task(name = "Client::load")]
    async fn load(&self, key: u32) -> Option<String> {
        (key > 0).then(|| self.base.clone())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut client = Client::new("http://x".into()).await;
    assert_eq!(client.get("a".into()).await.unwrap(), "http://x/a");
    assert!(client.get(String::new()).await.is_err());
    assert_eq!(client.bump(2).await, 2);
    assert_eq!(client.clone().grow(3).await.calls, 5);
    assert_eq!(client.clone().consume().await, 3);
    assert_eq!(Arc::new(client.clone()).shared().await, 8);
    assert_eq!(client.borrowed("").await, "http://x");
    assert_eq!(client.load(1).await.as_deref(), Some("http://x"));
    assert_eq!(client.into_base().await, "http://x");
}

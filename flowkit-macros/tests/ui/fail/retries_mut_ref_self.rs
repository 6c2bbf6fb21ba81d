// A `&mut self` method cannot be retried: each attempt would need its own `&mut self`.
use flowkit::task;

struct Counter(u32);

impl Counter {
    #[task(retries = 1)]
    async fn bump(&mut self) -> u32 {
        self.0 += 1;
        self.0
    }
}

fn main() {}

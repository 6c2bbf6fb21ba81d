//! The function body as the executor sees it: something that yields one future per attempt.

use std::future::Future;

/// Yields the future of each attempt of a run.
pub trait Body {
    /// What the function returns.
    type Output;
    /// The future of one attempt.
    type Attempt: Future<Output = Self::Output>;
    /// Whether the body can yield more than one attempt (only then is a run retried).
    const REPEATABLE: bool;
    /// The next attempt's future, or `None` if the body cannot run again (its arguments were
    /// moved into the first attempt because the task has no `retries`).
    fn attempt(&mut self) -> Option<Self::Attempt>;
}

/// A body that runs once: the arguments move into the only attempt.
#[derive(Debug)]
pub struct Once<A, F> {
    inner: Option<(A, F)>,
}

/// The body of a task without `retries`.
pub fn once<A, F, Fut>(args: A, f: F) -> Once<A, F>
where
    F: FnOnce(A) -> Fut,
    Fut: Future,
{
    Once {
        inner: Some((args, f)),
    }
}

impl<A, F, Fut> Body for Once<A, F>
where
    F: FnOnce(A) -> Fut,
    Fut: Future,
{
    type Output = Fut::Output;
    type Attempt = Fut;
    const REPEATABLE: bool = false;
    fn attempt(&mut self) -> Option<Fut> {
        self.inner.take().map(|(args, f)| f(args))
    }
}

/// A body that can run again: every attempt gets a clone of the arguments.
#[derive(Debug)]
pub struct Repeat<A, F> {
    args: A,
    f: F,
}

/// The body of a task with `retries` (its arguments must be `Clone`).
pub fn repeat<A, F, Fut>(args: A, f: F) -> Repeat<A, F>
where
    A: Clone,
    F: Fn(A) -> Fut,
    Fut: Future,
{
    Repeat { args, f }
}

impl<A, F, Fut> Body for Repeat<A, F>
where
    A: Clone,
    F: Fn(A) -> Fut,
    Fut: Future,
{
    type Output = Fut::Output;
    type Attempt = Fut;
    const REPEATABLE: bool = true;
    fn attempt(&mut self) -> Option<Fut> {
        Some((self.f)(self.args.clone()))
    }
}

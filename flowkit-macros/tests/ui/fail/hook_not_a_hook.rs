// A hook is a `flowkit::hooks::Hook`, e.g. a `fn(&HookContext)`; a function taking something else is
// reported at the hook.
use flowkit::task;

fn notify(message: String) {
    eprintln!("{message}");
}

#[task(on_failure = notify)]
async fn fetch(url: String) -> anyhow::Result<String> {
    Ok(url)
}

fn main() {}

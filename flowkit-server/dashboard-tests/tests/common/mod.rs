//! What the browser suites share: finding Chromium, launching it headless, waiting for the
//! page. Each suite is its own test binary (a process reports to one server) and includes
//! this module.

#![allow(dead_code)]

use chromiumoxide::{Browser, BrowserConfig, Page};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHROMIUM_CANDIDATES: [&str; 3] = [
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
];

/// The Chromium to drive: `FLOWKIT_CHROMIUM`, else the usual install paths.
pub fn chromium() -> Option<PathBuf> {
    std::env::var_os("FLOWKIT_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(CHROMIUM_CANDIDATES.iter().map(PathBuf::from))
        .find(|p| p.exists())
}

/// Says why the suite skips; a failure when `FLOWKIT_REQUIRE_SERVICES=1`.
pub fn skip(reason: &str) {
    if std::env::var("FLOWKIT_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("FLOWKIT_REQUIRE_SERVICES=1 but {reason}");
    }
    eprintln!("skipping the dashboard browser test: {reason}");
}

/// Evaluates `js` (an expression) until it returns `true` or `timeout` passes.
pub async fn wait_for(page: &Page, js: &str, timeout: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ok = page
            .evaluate(js)
            .await
            .ok()
            .and_then(|v| v.into_value::<bool>().ok())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            let body = page
                .evaluate("document.body.innerText")
                .await
                .ok()
                .and_then(|v| v.into_value::<String>().ok())
                .unwrap_or_default();
            anyhow::bail!("timed out waiting for {what} ({js}); the page shows:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> anyhow::Result<T> {
    Ok(page.evaluate(js).await?.into_value::<T>()?)
}

/// A headless Chromium with a fresh profile, and the task that drives its events.
pub async fn launch(
    chromium: &Path,
    profile: &Path,
) -> anyhow::Result<(Browser, tokio::task::JoinHandle<()>)> {
    let config = BrowserConfig::builder()
        .chrome_executable(chromium)
        .user_data_dir(profile)
        .no_sandbox()
        .args([
            "--headless",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .window_size(1280, 1000)
        .request_timeout(Duration::from_secs(20))
        .build()
        .map_err(anyhow::Error::msg)?;
    let (browser, mut handler) = Browser::launch(config).await?;
    let events = tokio::spawn(async move {
        while let Some(event) = handler.next().await {
            if event.is_err() {
                break;
            }
        }
    });
    Ok((browser, events))
}

/// Saves a full-page screenshot of `page` as `name` in the temporary directory, for humans
/// reviewing a run (a failure to save is ignored: it is no test's business).
pub async fn screenshot(page: &Page, name: &str) {
    let shot = std::env::temp_dir().join(name);
    let _ = page
        .save_screenshot(
            chromiumoxide::page::ScreenshotParams::builder()
                .full_page(true)
                .build(),
            &shot,
        )
        .await;
}

/// Closes `browser` (and the `page` it shows) and stops the task that drove its events.
pub async fn close(page: Page, browser: Browser, events: tokio::task::JoinHandle<()>) {
    drop(page);
    let mut browser = browser;
    let _ = browser.close().await;
    let _ = browser.wait().await;
    events.abort();
}

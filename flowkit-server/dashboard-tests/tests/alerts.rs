//! The alerts page in a real headless Chromium, against a real server (its own alerts task
//! running on the real clock): two rules created over the API, a failed run ingested, one
//! rule's receiver (a real HTTP server on loopback) answers 200, the other's is down. The page
//! lists both rules with their URLs masked, and each one's delivery with its attempts: 200 for
//! the first, "no answer" and the error for the second, still pending. Then, with an admin
//! key, a rule is created through the page's form (a bad webhook first: the server's error
//! shows at that field), disabled, edited (its masked URL left as shown keeps the stored one)
//! and deleted, each checked over the API.
//!
//! Needs Debian's `chromium`, like the other browser suites.

mod common;

use chromiumoxide::Page;
use common::{chromium, eval, launch, skip, wait_for};
use flowkit_server::auth::{ApiKey, ApiKeys};
use flowkit_wire::event::{Event, EventBody, RunKind};
use flowkit_wire::state::{State, StateType};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

const OPS: &str = "ops-secret-0123456789";
const VIEWER: &str = "viewer-secret-0123456789";
const SECRET: &str = "SECRET-PATH-abcdef";

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = http.request(method, url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_page_in_a_real_browser() -> anyhow::Result<()> {
    let Some(chromium) = chromium() else {
        skip("no Chromium found (apt-get install chromium, or set FLOWKIT_CHROMIUM)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let mut config = flowkit_server::config::Config::new(db);
    let key = |s: String| s.parse::<ApiKey>().map_err(anyhow::Error::msg);
    config.settings.api_keys = ApiKeys::new(vec![
        key(format!("ops:{OPS}:admin"))?,
        key(format!("viewer:{VIEWER}:read"))?,
    ])?;
    config.settings.public_url = Some("https://flowkit.example.com".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = flowkit_server::spawn(listener, config).await?;
    let base = format!("http://{}", server.addr());
    let http = reqwest::Client::new();

    // The receiver that answers, and a port where nothing listens.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let up = format!("http://{}", receiver.local_addr()?);
    let app = axum::Router::new().fallback(|| async { "ok" });
    let receiving = tokio::spawn(async move {
        let _ = axum::serve(receiver, app).await;
    });
    let parked = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let down = format!("http://{}", parked.local_addr()?);
    drop(parked);

    for (name, url) in [("answers", &up), ("down", &down)] {
        let (status, body) = send(
            &http,
            reqwest::Method::POST,
            format!("{base}/api/v1/alert-rules"),
            OPS,
            Some(json!({"name": name, "flow": "etl", "states": ["Failed"], "webhook": format!("{url}/{SECRET}")})),
        )
        .await?;
        anyhow::ensure!(status == 201, "create {name}: {status} {body}");
    }
    let run = Uuid::now_v7();
    let event = |kind: StateType, message: Option<&str>| Event {
        id: Uuid::now_v7(),
        run_id: run,
        parent_run_id: None,
        flow_run_id: Some(run),
        run_kind: RunKind::Flow,
        name: "etl".into(),
        attempt: 1,
        timestamp: chrono::Utc::now(),
        lease: None,
        body: EventBody::State {
            state: State {
                kind,
                message: message.map(str::to_string),
            },
            details: None,
        },
    };
    let (status, body) = send(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/events"),
        OPS,
        Some(json!([
            event(StateType::Running, None),
            event(StateType::Failed, Some("boom"))
        ])),
    )
    .await?;
    anyhow::ensure!(status == 202, "ingest: {status} {body}");

    // The server's own alerts task sends both within a few ticks.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, rules) = send(
            &http,
            reqwest::Method::GET,
            format!("{base}/api/v1/alert-rules"),
            VIEWER,
            None,
        )
        .await?;
        let mut attempted = 0;
        for rule in rules["items"].as_array().cloned().unwrap_or_default() {
            let id = rule["id"].as_str().unwrap_or_default();
            let (_, page) = send(
                &http,
                reqwest::Method::GET,
                format!("{base}/api/v1/alert-rules/{id}/deliveries"),
                VIEWER,
                None,
            )
            .await?;
            if page["items"][0]["attempt_count"].as_u64().unwrap_or(0) > 0 {
                attempted += 1;
            }
        }
        if attempted == 2 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the deliveries were not attempted: {rules}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (browser, browser_events) = launch(&chromium, &dir.path().join("profile")).await?;
    let page = browser.new_page(format!("{base}/#/alerts")).await?;
    let mut outcome = scenario(&page, run).await;
    if outcome.is_ok() {
        outcome = manage(&page, &http, &base).await;
    }
    drop(page);
    let mut browser = browser;
    let _ = browser.close().await;
    let _ = browser.wait().await;
    browser_events.abort();
    receiving.abort();
    server.stop().await?;
    outcome
}

async fn scenario(page: &Page, run: Uuid) -> anyhow::Result<()> {
    let long = Duration::from_secs(15);
    wait_for(
        page,
        "document.querySelector('#key-panel').offsetParent !== null",
        long,
        "the key panel",
    )
    .await?;
    let js = format!(
        "document.querySelector('#key-input').value = {}; true",
        serde_json::to_string(VIEWER)?
    );
    let _: bool = eval(page, &js).await?;
    page.find_element("#key-save").await?.click().await?;
    wait_for(
        page,
        "document.querySelectorAll('#alert-rules tr[data-delivery]').length === 2",
        long,
        "a delivery under each rule",
    )
    .await?;
    let names: Vec<String> = eval(
        page,
        "[...document.querySelectorAll('.alert-rule h2')].map(h => h.textContent)",
    )
    .await?;
    assert_eq!(names, ["answers", "down"]);
    let text: String = eval(page, "document.querySelector('#alerts-view').innerText").await?;
    assert!(!text.contains("SECRET"), "a secret URL is shown: {text}");
    assert!(text.contains("/…cdef"), "the masked URL: {text}");
    let answered: Vec<String> = eval(
        page,
        "[...document.querySelectorAll('.alert-rule')[0].querySelector('tr[data-delivery]').cells].map(c => c.textContent)",
    )
    .await?;
    assert_eq!(answered[1], run.to_string()[..8]);
    assert_eq!(answered[2], "Failed");
    assert_eq!(answered[4], "delivered");
    assert!(answered[5].contains(" · 200"), "{answered:?}");
    let refused: Vec<String> = eval(
        page,
        "[...document.querySelectorAll('.alert-rule')[1].querySelector('tr[data-delivery]').cells].map(c => c.textContent)",
    )
    .await?;
    assert!(refused[4].starts_with("pending (next "), "{refused:?}");
    assert!(
        refused[5].contains("no answer · cannot connect"),
        "{refused:?}"
    );
    // The run link goes to the run's page in the dashboard.
    let href: String = eval(
        page,
        "document.querySelector('.alert-rule tr[data-delivery] a').getAttribute('href')",
    )
    .await?;
    assert_eq!(href, format!("/#/runs/{run}"));
    Ok(())
}

/// The rules as the API shows them (names, enabled, webhook), oldest first.
async fn rules(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<Value>> {
    let (status, body) = send(
        http,
        reqwest::Method::GET,
        format!("{base}/api/v1/alert-rules"),
        OPS,
        None,
    )
    .await?;
    anyhow::ensure!(status == 200, "list: {status} {body}");
    Ok(body["items"].as_array().cloned().unwrap_or_default())
}

/// Sets the input `id` to `value` (as typed).
async fn fill(page: &Page, id: &str, value: &str) -> anyhow::Result<()> {
    let js = format!(
        "document.getElementById({}).value = {}; true",
        serde_json::to_string(id)?,
        serde_json::to_string(value)?
    );
    let _: bool = eval(page, &js).await?;
    Ok(())
}

/// Clicks the button `selector` of the rule card named `name`.
async fn click_on_rule(page: &Page, name: &str, selector: &str) -> anyhow::Result<()> {
    let js = format!(
        "(() => {{ const card = [...document.querySelectorAll('.alert-rule')].find(c => c.querySelector('h2').firstChild.textContent === {}); card.querySelector({}).click(); return true; }})()",
        serde_json::to_string(name)?,
        serde_json::to_string(selector)?
    );
    let _: bool = eval(page, &js).await?;
    Ok(())
}

async fn manage(page: &Page, http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let long = Duration::from_secs(15);
    // An admin key for this tab.
    page.find_element("#key-button").await?.click().await?;
    fill(page, "key-input", OPS).await?;
    page.find_element("#key-save").await?.click().await?;
    wait_for(
        page,
        "document.querySelectorAll('.alert-rule').length === 2",
        long,
        "the rules again",
    )
    .await?;

    // A new rule with a bad webhook: the server's 422 shows at the webhook field.
    fill(page, "alert-name", "from the form").await?;
    fill(page, "alert-flow", "etl").await?;
    fill(page, "alert-webhook", "ftp://hooks.example.com/x").await?;
    let _: bool = eval(
        page,
        "document.querySelector('#alert-states input[value=Failed]').click(); \
         document.querySelector('#alert-states input[value=Crashed]').click(); true",
    )
    .await?;
    page.find_element("#alert-submit").await?.click().await?;
    wait_for(
        page,
        "!document.querySelector('.field[data-field=webhook] .field-error').hidden",
        long,
        "the webhook's error at its field",
    )
    .await?;
    let error: String = eval(
        page,
        "document.querySelector('.field[data-field=webhook] .field-error').textContent",
    )
    .await?;
    assert!(error.contains("ftp"), "{error}");
    let invalid: Vec<String> = eval(
        page,
        "[...document.querySelectorAll('#alert-form .field.invalid')].map(f => f.dataset.field)",
    )
    .await?;
    assert_eq!(invalid, ["webhook"]);
    assert_eq!(rules(http, base).await?.len(), 2, "nothing created");

    // Fixed: created.
    let url = "https://hooks.example.com/services/T0/B0/FORMSECRET-4321";
    fill(page, "alert-webhook", url).await?;
    page.find_element("#alert-submit").await?.click().await?;
    wait_for(
        page,
        "document.querySelectorAll('.alert-rule').length === 3",
        long,
        "the new rule's card",
    )
    .await?;
    let all = rules(http, base).await?;
    let made = &all[2];
    assert_eq!(made["name"], "from the form");
    assert_eq!(made["flow"], "etl");
    assert_eq!(made["states"], json!(["Failed", "Crashed"]));
    assert_eq!(made["enabled"], true);
    assert_eq!(made["webhook"], "https://hooks.example.com/…4321");
    let text: String = eval(page, "document.querySelector('#alerts-view').innerText").await?;
    assert!(
        !text.contains("FORMSECRET"),
        "a secret URL is shown: {text}"
    );
    let cleared: String = eval(page, "document.getElementById('alert-name').value").await?;
    assert_eq!(cleared, "", "the form is blank again");

    // Disabled from its card.
    click_on_rule(page, "from the form", ".alert-toggle").await?;
    wait_for(
        page,
        "document.querySelector('.alert-rule[data-enabled=false] h2') !== null",
        long,
        "the rule shown disabled",
    )
    .await?;
    assert_eq!(rules(http, base).await?[2]["enabled"], false);

    // Edited: a new name; the masked webhook left as shown keeps the stored URL.
    click_on_rule(page, "from the form", ".alert-edit").await?;
    let shown: String = eval(page, "document.getElementById('alert-webhook').value").await?;
    assert_eq!(shown, "https://hooks.example.com/…4321");
    let enabled: bool = eval(page, "document.getElementById('alert-enabled').checked").await?;
    assert!(!enabled, "the form shows the rule disabled");
    fill(page, "alert-name", "renamed in the form").await?;
    page.find_element("#alert-submit").await?.click().await?;
    wait_for(
        page,
        "[...document.querySelectorAll('.alert-rule h2')].some(h => h.firstChild.textContent === 'renamed in the form')",
        long,
        "the renamed rule",
    )
    .await?;
    let changed = &rules(http, base).await?[2];
    assert_eq!(changed["name"], "renamed in the form");
    assert_eq!(changed["webhook"], "https://hooks.example.com/…4321");
    assert_eq!(changed["flow"], "etl");
    assert_eq!(changed["enabled"], false);

    // Deleted (two clicks).
    click_on_rule(page, "renamed in the form", ".alert-delete").await?;
    click_on_rule(page, "renamed in the form", ".alert-delete").await?;
    wait_for(
        page,
        "document.querySelectorAll('.alert-rule').length === 2",
        long,
        "the rule gone",
    )
    .await?;
    let left: Vec<Value> = rules(http, base).await?;
    let names: Vec<&str> = left.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["answers", "down"]);
    Ok(())
}

//! The deployments pages in a real headless Chromium, against a real server with API keys:
//! a deployment registered through the API is listed; its page shows its versions, that no
//! worker serves it, and a form generated from its parameter schema; the form asks for a key
//! with the `trigger` scope, shows the server's 422 errors at their fields, and runs the
//! flow; the page lists the deployment's schedules with their next fire time; the run page
//! shows the run waiting, who created it, cancels it and retries it; a run
//! completed through the real worker protocol (claim, then finish over HTTP) shows its result.
//! And a key created at runtime (stored, not a flag) opens the dashboard like any other; a
//! schedule's run that no worker claimed shows `Late`, and how many missed instants it stands for.
//!
//! Needs Debian's `chromium`, like the other browser suite.

mod common;

use chromiumoxide::Page;
use common::{chromium, close, eval, launch, screenshot, skip, wait_for};
use flowkit_server::auth::{ApiKey, ApiKeys};
use flowkit_wire::event::{Event, EventBody, RunKind};
use flowkit_wire::state::{State, StateType};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const OPS: &str = "ops-secret-0123456789";
const VIEWER: &str = "viewer-secret-0123456789";
const TEAM: &str = "team-secret-0123456789";
const WORKER: &str = "worker-secret-0123456789";

/// What `train(dataset, epochs: u32, learning_rate: f64, mode: Mode, notes: Option<String>,
/// seed: Option<u64>, warm_start: bool (default), layers: Vec<u32>)` gets from the macro.
fn parameter_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "train",
        "type": "object",
        "properties": {
            "dataset": {"type": "string", "description": "Where the rows are"},
            "epochs": {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 4294967295u64},
            "learning_rate": {"type": "number", "exclusiveMinimum": 0},
            "mode": {"$ref": "#/$defs/Mode"},
            "notes": {"type": ["string", "null"]},
            "seed": {"anyOf": [{"type": "integer", "format": "uint64", "minimum": 0}, {"type": "null"}]},
            "warm_start": {"type": "boolean", "default": false},
            "layers": {"type": "array", "items": {"type": "integer", "format": "uint32", "minimum": 0}}
        },
        "required": ["dataset", "epochs", "learning_rate", "mode", "layers"],
        "additionalProperties": false,
        "x-flowkit-order": ["dataset", "epochs", "learning_rate", "mode", "notes", "seed", "warm_start", "layers"],
        "$defs": {"Mode": {"type": "string", "enum": ["fast", "thorough"]}}
    })
}

fn spec(version: &str, schema: Value) -> Value {
    json!({
        "flow": "train",
        "name": "nightly",
        "flow_key": "houses::train",
        "version": version,
        "description": "Retrain the <b>house-price</b> model & <script>alert('x')</script>",
        "parameter_schema": schema,
        "output_schema": {"type": "object"},
        "default_parameters": {"epochs": 50, "layers": [64, 32]},
        "tags": ["ml"],
    })
}

/// A plain HTTP client of the server's API.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::POST, path, key, Some(body))
            .await
    }

    async fn get(&self, path: &str, key: &str) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::GET, path, key, None).await
    }
}

/// Sets the value of the form field of `name` (an input, select or textarea) as typing would.
async fn fill(page: &Page, name: &str, value: &str) -> anyhow::Result<()> {
    let js = format!(
        "(() => {{ const i = document.querySelector('#run-fields [name={name}]'); i.value = {value}; \
         i.dispatchEvent(new Event('input', {{bubbles: true}})); i.dispatchEvent(new Event('change', {{bubbles: true}})); return i.value; }})()",
        value = serde_json::to_string(value)?
    );
    let set: String = eval(page, &js).await?;
    anyhow::ensure!(set == value, "field {name} took {set:?}, not {value:?}");
    Ok(())
}

/// Gives the page an API key through its key panel.
async fn use_key(page: &Page, secret: &str) -> anyhow::Result<()> {
    let open: bool = eval(page, "!document.querySelector('#key-panel').hidden").await?;
    if !open {
        page.find_element("#key-button").await?.click().await?;
    }
    let js = format!(
        "document.querySelector('#key-input').value = {}; true",
        serde_json::to_string(secret)?
    );
    let _: bool = eval(page, &js).await?;
    page.find_element("#key-save").await?.click().await?;
    wait_for(
        page,
        "document.querySelector('#key-panel').offsetParent === null && sessionStorage.getItem('flowkit-api-key') !== null",
        Duration::from_secs(5),
        "the key to be kept",
    )
    .await
}

async fn text(page: &Page, selector: &str) -> anyhow::Result<String> {
    let js = format!(
        "(document.querySelector({}) || {{}}).textContent || ''",
        serde_json::to_string(selector)?
    );
    eval(page, &js).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_in_a_real_browser() -> anyhow::Result<()> {
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
        key(format!("team:{TEAM}:read,trigger=train/nightly"))?,
        key(format!("gpu-worker:{WORKER}:report,worker=train/nightly"))?,
    ])?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = flowkit_server::spawn(listener, config).await?;
    let base = format!("http://{}", server.addr());
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
    };

    // Two versions, registered by the worker's key through the real API.
    let mut first = parameter_schema();
    first["required"] = json!(["dataset"]);
    for (version, schema) in [("v1", first), ("v2", parameter_schema())] {
        let (status, body) = api
            .post("/api/v1/deployments", WORKER, spec(version, schema))
            .await?;
        anyhow::ensure!(status == 201, "register {version}: {status} {body}");
    }
    // A schedule created over the API, shown on the deployment's page.
    let (status, body) = api
        .post(
            "/api/v1/deployments/train/nightly/schedules",
            OPS,
            json!({"cron": "0 3 * * *", "timezone": "Europe/Paris",
                   "parameters": {"dataset": "s3://d", "learning_rate": 0.1, "mode": "fast"}}),
        )
        .await?;
    anyhow::ensure!(status == 201, "create a schedule: {status} {body}");

    let (browser, browser_events) = launch(&chromium, &dir.path().join("profile")).await?;
    let page = browser.new_page(format!("{base}/#/deployments")).await?;

    let outcome = scenario(&page, &api).await;
    if outcome.is_err() {
        screenshot(&page, "flowkit-dashboard-deployments.png").await;
    }
    close(page, browser, browser_events).await;
    server.stop().await?;
    outcome
}

async fn scenario(page: &Page, api: &Api) -> anyhow::Result<()> {
    let long = Duration::from_secs(15);

    // Without a key the page asks for one, saying why.
    wait_for(
        page,
        "document.querySelector('#key-panel').offsetParent !== null && document.querySelector('#key-reason').textContent.includes('API key')",
        long,
        "the key panel",
    )
    .await?;
    use_key(page, VIEWER).await?;

    // The list: description (as text), newest version, number of versions.
    wait_for(
        page,
        "document.querySelector('#deployments-body tr[data-deployment=\"train/nightly\"]') !== null",
        long,
        "the deployment in the list",
    )
    .await?;
    let row: Vec<String> = eval(
        page,
        "[...document.querySelector('#deployments-body tr[data-deployment=\"train/nightly\"]').cells].map(c => c.textContent)",
    )
    .await?;
    assert_eq!(row[0], "train/nightly");
    assert_eq!(
        row[1],
        "Retrain the <b>house-price</b> model & <script>alert('x')</script>"
    );
    assert_eq!((row[2].as_str(), row[3].as_str()), ("v2", "2"), "{row:?}");
    let injected: u32 = eval(
        page,
        "document.querySelectorAll('#deployments-body b, #deployments-body script').length",
    )
    .await?;
    assert_eq!(injected, 0, "a description never becomes elements");

    // The deployment's page.
    page.find_element("#deployments-body tr[data-deployment=\"train/nightly\"] a")
        .await?
        .click()
        .await?;
    wait_for(
        page,
        "document.querySelectorAll('#run-fields .field').length === 8",
        long,
        "the form's eight fields",
    )
    .await?;
    assert!(
        text(page, "#deployment-description")
            .await?
            .contains("<b>house-price</b>")
    );
    assert_eq!(text(page, "#workers").await?, "no live worker: runs wait");
    let versions: Vec<String> = eval(
        page,
        "[...document.querySelectorAll('#versions-body tr')].map(r => r.cells[0].textContent)",
    )
    .await?;
    assert_eq!(versions, ["v2", "v1"]);
    // Its schedules: timing, zone, source, active flag and next fire time.
    let schedules: Vec<Vec<String>> = eval(
        page,
        "[...document.querySelectorAll('#schedules-body tr[data-schedule]')].map(r => [...r.cells].map(c => c.textContent))",
    )
    .await?;
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    let row = &schedules[0];
    assert_eq!(
        (
            row[0].as_str(),
            row[1].as_str(),
            row[2].as_str(),
            row[3].as_str()
        ),
        ("cron 0 3 * * *", "Europe/Paris", "API", "active"),
        "{row:?}"
    );
    assert!(
        !row[4].is_empty() && row[4] != "—",
        "no next fire time: {row:?}"
    );

    // The form follows the schema, in the flow's argument order (`x-flowkit-order`): kinds,
    // required marks, defaults, choices.
    let fields: Vec<(String, String, String, bool, String)> = eval(
        page,
        "[...document.querySelectorAll('#run-fields .field')].map(f => { const i = f.querySelector('[data-kind]'); \
         return [f.dataset.field, i.dataset.kind, i.tagName.toLowerCase(), f.querySelector('.required-mark') !== null, i.value]; })",
    )
    .await?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|f| f.0 == name)
            .cloned()
            .unwrap_or_else(|| panic!("no field {name}: {fields:?}"))
    };
    let kinds: Vec<(&str, &str, &str, bool)> = fields
        .iter()
        .map(|f| (f.0.as_str(), f.1.as_str(), f.2.as_str(), f.3))
        .collect();
    assert_eq!(
        kinds,
        [
            ("dataset", "string", "input", true),
            // The deployment's default fills it in: not required here.
            ("epochs", "integer", "input", false),
            ("learning_rate", "number", "input", true),
            ("mode", "choice", "select", true),
            ("notes", "string", "input", false),
            ("seed", "integer", "input", false),
            ("warm_start", "boolean", "select", false),
            ("layers", "json", "textarea", false),
        ]
    );
    assert_eq!(
        field("epochs").4,
        "50",
        "the deployment's default is prefilled"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&field("layers").4)?,
        json!([64, 32])
    );
    assert_eq!(field("warm_start").4, "false", "the schema's default");
    let choices: Vec<String> = eval(
        page,
        "[...document.querySelectorAll('#run-fields [name=mode] option')].map(o => o.textContent)",
    )
    .await?;
    assert_eq!(choices, ["fast", "thorough"]);

    // A key without `trigger`: the server's 403 is shown, and the key panel opens.
    fill(page, "dataset", "s3://bucket/houses.csv").await?;
    fill(page, "learning_rate", "0.01").await?;
    fill(page, "mode", "\"thorough\"").await?;
    page.find_element("#run-submit").await?.click().await?;
    wait_for(
        page,
        "document.querySelector('#run-form-error').textContent.includes('`trigger` scope') && !document.querySelector('#key-panel').hidden",
        long,
        "the server's 403",
    )
    .await?;
    use_key(page, TEAM).await?;
    // The page reloads with the new key: the form is drawn again.
    wait_for(
        page,
        "document.querySelectorAll('#run-fields .field').length === 8",
        long,
        "the form again",
    )
    .await?;

    // Bad values: a word in an integer field, a rate out of its bound. The server's errors
    // show at their fields.
    fill(page, "dataset", "s3://bucket/houses.csv").await?;
    fill(page, "epochs", "lots").await?;
    fill(page, "learning_rate", "0").await?;
    fill(page, "mode", "\"thorough\"").await?;
    page.find_element("#run-submit").await?.click().await?;
    wait_for(
        page,
        "document.querySelectorAll('#run-fields .field.invalid').length === 2",
        long,
        "two fields marked invalid",
    )
    .await?;
    let epochs_error = text(page, "#run-fields [data-field=epochs] .field-error").await?;
    assert!(
        epochs_error.contains("lots") && epochs_error.contains("integer"),
        "{epochs_error}"
    );
    let rate_error = text(page, "#run-fields [data-field=learning_rate] .field-error").await?;
    assert!(rate_error.contains('0'), "{rate_error}");
    assert!(
        text(page, "#run-form-error")
            .await?
            .contains("invalid for train/nightly")
    );

    // Good values: the run is created and its page opens.
    fill(page, "epochs", "3").await?;
    fill(page, "learning_rate", "0.01").await?;
    fill(page, "notes", "<i>first</i>").await?;
    page.find_element("#run-submit").await?.click().await?;
    wait_for(
        page,
        "/^#\\/runs\\/[0-9a-f-]{36}$/.test(location.hash) && document.querySelector('#run-title').textContent.includes('Scheduled')",
        long,
        "the new run's page",
    )
    .await?;
    let first: String = eval(page, "location.hash.slice('#/runs/'.length)").await?;
    assert!(
        text(page, "#run-message")
            .await?
            .contains("no worker serves train/nightly"),
        "the run says it waits for a worker"
    );
    assert_eq!(
        text(page, "#run-meta .created-by code").await?,
        "dashboard:key:team"
    );
    let params: Value = serde_json::from_str(&text(page, "#params").await?)?;
    assert_eq!(
        params,
        json!({"dataset": "s3://bucket/houses.csv", "epochs": 3, "learning_rate": 0.01,
               "mode": "thorough", "notes": "<i>first</i>", "warm_start": false, "layers": [64, 32]})
    );

    // Cancel it: it had not started, so it is Cancelled at once; then it can be retried.
    let hidden: (bool, bool) = eval(
        page,
        "[document.querySelector('#cancel-run').hidden, document.querySelector('#retry-run').hidden]",
    )
    .await?;
    assert_eq!(
        hidden,
        (false, true),
        "cancel, not retry, for a waiting run"
    );
    page.find_element("#cancel-run").await?.click().await?;
    wait_for(
        page,
        "document.querySelector('#run-title').textContent.includes('Cancelled') && !document.querySelector('#retry-run').hidden && document.querySelector('#cancel-run').hidden",
        long,
        "the run cancelled",
    )
    .await?;
    let (status, run) = api.get(&format!("/api/v1/flow-runs/{first}"), OPS).await?;
    assert_eq!((status, run["state"].as_str()), (200, Some("Cancelled")));
    page.find_element("#retry-run").await?.click().await?;
    wait_for(
        page,
        "document.querySelector('#run-title').textContent.includes('Scheduled')",
        long,
        "the run retried",
    )
    .await?;
    let (_, run) = api.get(&format!("/api/v1/flow-runs/{first}"), OPS).await?;
    assert_eq!(run["attempt"], 2, "{run}");
    // Cancel it again, so that the worker below claims the next run.
    page.find_element("#cancel-run").await?.click().await?;
    wait_for(
        page,
        "document.querySelector('#run-title').textContent.includes('Cancelled')",
        long,
        "the retried run cancelled",
    )
    .await?;

    // A second run, from the form, completed by a worker speaking the real protocol. (A
    // change of the hash only: no page load to wait for.)
    let _: bool = eval(page, "location.hash = '#/deployments/train/nightly'; true").await?;
    wait_for(
        page,
        "!document.querySelector('#deployment-view').hidden && document.querySelectorAll('#run-fields .field').length === 8",
        long,
        "the form",
    )
    .await?;
    fill(page, "dataset", "s3://bucket/more.csv").await?;
    fill(page, "learning_rate", "0.5").await?;
    fill(page, "mode", "\"fast\"").await?;
    page.find_element("#run-submit").await?.click().await?;
    wait_for(
        page,
        &format!(
            "/^#\\/runs\\/[0-9a-f-]{{36}}$/.test(location.hash) && location.hash !== '#/runs/{first}' && document.querySelector('#run-title').textContent.includes('Scheduled')"
        ),
        long,
        "the second run's page",
    )
    .await?;
    let second: String = eval(page, "location.hash.slice('#/runs/'.length)").await?;

    let worker = Uuid::now_v7();
    let (status, claimed) = api
        .post(
            "/api/v1/workers/claim",
            WORKER,
            json!({"worker": worker, "worker_name": "gpu-box:42", "max_runs": 1, "wait_seconds": 5,
                   "deployments": [{"flow": "train", "name": "nightly", "version": "v2"}]}),
        )
        .await?;
    assert_eq!(status, 200, "{claimed}");
    let run = &claimed["runs"][0];
    assert_eq!(run["run_id"].as_str(), Some(second.as_str()), "{claimed}");
    let token = run["token"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no token: {claimed}"))?;
    let attempt = u32::try_from(run["attempt"].as_u64().unwrap_or(1))?;
    let run_id: Uuid = second.parse()?;
    let event = Event {
        id: Uuid::now_v7(),
        run_id,
        parent_run_id: None,
        flow_run_id: Some(run_id),
        run_kind: RunKind::Flow,
        name: "train".into(),
        attempt,
        timestamp: chrono::Utc::now(),
        lease: Some(token),
        body: EventBody::State {
            state: State::new(StateType::Completed),
            details: None,
        },
    };
    let result = json!({"rmse": 0.25, "note": "<i>fine</i>"});
    let (status, finished) = api
        .post(
            &format!("/api/v1/flow-runs/{second}/finish"),
            WORKER,
            json!({"token": token, "event": event, "result": result}),
        )
        .await?;
    assert_eq!(status, 200, "{finished}");

    // The run page shows the result (as text).
    page.goto(format!("{}/runs/{second}", api.base)).await?;
    wait_for(
        page,
        "document.querySelector('#run-title').textContent.includes('Completed') && document.querySelector('#result').textContent.includes('\"rmse\": 0.25')",
        long,
        "the result on the run page",
    )
    .await?;
    let shown: Value = serde_json::from_str(&text(page, "#result").await?)?;
    assert_eq!(shown, result);
    let injected: u32 = eval(page, "document.querySelectorAll('#result i').length").await?;
    assert_eq!(injected, 0);
    let hidden: (bool, bool) = eval(
        page,
        "[document.querySelector('#cancel-run').hidden, document.querySelector('#retry-run').hidden]",
    )
    .await?;
    assert_eq!(
        hidden,
        (true, true),
        "a completed run is neither cancelled nor retried"
    );

    // The deployment's page lists both runs, who created them, and the worker now live.
    page.goto(format!("{}/#/deployments/train/nightly", api.base))
        .await?;
    wait_for(
        page,
        "document.querySelectorAll('#deployment-runs-body tr[data-id]').length === 2 && document.querySelector('#workers li[data-worker]') !== null",
        long,
        "the recent runs and the live worker",
    )
    .await?;
    assert!(text(page, "#workers").await?.contains("gpu-box:42"));
    let by: Vec<String> = eval(
        page,
        "[...document.querySelectorAll('#deployment-runs-body tr[data-id]')].map(r => r.cells[3].textContent)",
    )
    .await?;
    assert_eq!(by, ["dashboard:key:team", "dashboard:key:team"]);
    // A picture for humans reviewing the page.
    screenshot(page, "flowkit-dashboard-deployment.png").await;
    // A run's link opens its page.
    page.find_element(&format!("#deployment-runs-body tr[data-id=\"{second}\"] a"))
        .await?
        .click()
        .await?;
    wait_for(
        page,
        &format!(
            "location.hash === '#/runs/{second}' && !document.querySelector('#run-view').hidden"
        ),
        long,
        "the run page from the deployment's list",
    )
    .await?;
    Ok(())
}

/// A server started without keys gets its first key at runtime (`POST /api/v1/keys`, admin);
/// from then on the dashboard asks for a key, and a stored key it is given works like a flag
/// key: the deployments list loads with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_with_a_stored_key() -> anyhow::Result<()> {
    let Some(chromium) = chromium() else {
        skip("no Chromium found (apt-get install chromium, or set FLOWKIT_CHROMIUM)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let config = flowkit_server::config::Config::new(db);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = flowkit_server::spawn(listener, config).await?;
    let base = format!("http://{}", server.addr());
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
    };
    // Open: the local user creates the first key, an admin, then a reader with it.
    let (status, admin) = api
        .post(
            "/api/v1/keys",
            "",
            json!({"name": "ops", "scopes": ["admin"]}),
        )
        .await?;
    anyhow::ensure!(status == 201, "first key: {status} {admin}");
    let admin = admin["secret"].as_str().unwrap_or_default().to_string();
    let (status, viewer) = api
        .post(
            "/api/v1/keys",
            &admin,
            json!({"name": "viewer", "scopes": ["read"]}),
        )
        .await?;
    anyhow::ensure!(status == 201, "viewer key: {status} {viewer}");
    let viewer = viewer["secret"].as_str().unwrap_or_default().to_string();
    let (status, body) = api
        .post(
            "/api/v1/deployments",
            &admin,
            spec("v1", parameter_schema()),
        )
        .await?;
    anyhow::ensure!(status == 201, "register: {status} {body}");
    let (status, _) = api.get("/api/v1/deployments", "").await?;
    anyhow::ensure!(status == 401, "keys are required now: {status}");

    let (browser, browser_events) = launch(&chromium, &dir.path().join("profile")).await?;
    let page = browser.new_page(format!("{base}/#/deployments")).await?;
    let outcome = async {
        let long = Duration::from_secs(15);
        wait_for(
            &page,
            "document.querySelector('#key-panel').offsetParent !== null",
            long,
            "the key panel",
        )
        .await?;
        use_key(&page, &viewer).await?;
        wait_for(
            &page,
            "document.querySelector('#deployments-body tr[data-deployment=\"train/nightly\"]') !== null",
            long,
            "the deployment listed with the stored key",
        )
        .await
    }
    .await;
    close(page, browser, browser_events).await;
    server.stop().await?;
    outcome
}

/// A schedule's run that no worker claimed is shown `Late` in the runs list and on its page,
/// and the page says how many missed instants it stands for (catch-up `latest` after an
/// outage). The outage is made with a second store on the same database ticking a clock ten
/// minutes ahead (the scheduler reads an injected clock); the real server, ticking on its own
/// clock meanwhile, does nothing to that run until the test looks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_run_in_a_real_browser() -> anyhow::Result<()> {
    let Some(chromium) = chromium() else {
        skip("no Chromium found (apt-get install chromium, or set FLOWKIT_CHROMIUM)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let mut config = flowkit_server::config::Config::new(db.clone());
    config.settings.late_after = Duration::from_secs(2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = flowkit_server::spawn(listener, config).await?;
    let base = format!("http://{}", server.addr());
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
    };
    let (status, body) = api
        .post("/api/v1/deployments", "", spec("v1", parameter_schema()))
        .await?;
    anyhow::ensure!(status == 201, "register: {status} {body}");
    let (status, schedule) = api
        .post(
            "/api/v1/deployments/train/nightly/schedules",
            "",
            json!({"interval": "1m", "parameters":
                   {"dataset": "s3://d", "learning_rate": 0.1, "mode": "fast"}}),
        )
        .await?;
    anyhow::ensure!(status == 201, "create a schedule: {status} {schedule}");
    let first: chrono::DateTime<chrono::Utc> = schedule["next_at"]
        .as_str()
        .and_then(|at| at.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no next_at: {schedule}"))?;

    // Ten minutes of instants missed, then a tick: one run for the latest instant, standing for
    // the ten before it; a minute later on that clock, no worker has claimed it: Late.
    let other = flowkit_server::AppState::new(
        std::sync::Arc::new(flowkit_server::store::Store::connect(&db).await?),
        flowkit_server::config::Settings {
            late_after: Duration::from_secs(2),
            ..flowkit_server::config::Settings::default()
        },
    );
    let latest = first + chrono::Duration::minutes(10);
    let made =
        flowkit_server::scheduler::tick(&other, latest + chrono::Duration::seconds(1)).await?;
    anyhow::ensure!(made.created == 1 && made.late == 0, "{made:?}");
    let marked =
        flowkit_server::scheduler::tick(&other, latest + chrono::Duration::seconds(50)).await?;
    anyhow::ensure!(marked.late == 1, "{marked:?}");
    let (_, runs) = api
        .get("/api/v1/flow-runs?deployment=train/nightly", "")
        .await?;
    let id = runs["items"][0]["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no run: {runs}"))?
        .to_string();
    anyhow::ensure!(runs["items"][0]["state"] == "Late", "{runs}");

    let (browser, browser_events) = launch(&chromium, &dir.path().join("profile")).await?;
    let page = browser.new_page(format!("{base}/#/")).await?;
    let outcome = async {
        let long = Duration::from_secs(15);
        wait_for(
            &page,
            "[...document.querySelectorAll('#runs-body .state')].some(s => s.textContent === 'Late')",
            long,
            "the Late run in the runs list",
        )
        .await?;
        // The run's link, as a user clicks it (a change of the hash: no page load).
        page.find_element(format!("#runs-body a[href$=\"{id}\"]").as_str())
            .await?
            .click()
            .await?;
        wait_for(
            &page,
            "document.querySelector('#run-title .state.s-Late') !== null",
            long,
            "the run page's Late badge",
        )
        .await?;
        let stands_for: String = eval(
            &page,
            "document.querySelector('#run-meta .skipped-instants')?.textContent ?? ''",
        )
        .await?;
        anyhow::ensure!(
            stands_for == "Stands for 10 skipped instants",
            "{stands_for:?}"
        );
        let message: String = eval(&page, "document.querySelector('#run-message').textContent").await?;
        anyhow::ensure!(message.contains("no worker has claimed it"), "{message:?}");
        let cancellable: bool = eval(&page, "!document.querySelector('#cancel-run').hidden").await?;
        anyhow::ensure!(cancellable, "a Late run is not final: it can be cancelled");
        Ok(())
    }
    .await;
    if outcome.is_err() {
        screenshot(&page, "flowkit-dashboard-late.png").await;
    }
    close(page, browser, browser_events).await;
    server.stop().await?;
    outcome
}

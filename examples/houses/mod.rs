//! The house-price pipeline that the `ml_pipeline` example runs once and the `serve` example
//! deploys: ingest a CSV, clean it, featurize, train a linear model for a grid of learning
//! rates in parallel, evaluate, and "deploy" the best model by writing it to a file.

use anyhow::{Context, bail};
use flowkit::{flow, task};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tracing::{info, warn};
use tracing_subscriber::filter::Targets;

/// One line of the CSV as read, before cleaning.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RawRow {
    line: usize,
    fields: Vec<String>,
}

/// One house after cleaning.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct House {
    area_m2: f64,
    rooms: f64,
    age_years: f64,
    distance_km: f64,
    price_k: f64,
}

/// Standardized features and targets, split into training and test sets.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Dataset {
    train_x: Vec<Vec<f64>>,
    train_y: Vec<f64>,
    test_x: Vec<Vec<f64>>,
    test_y: Vec<f64>,
    /// Mean and standard deviation of each feature, needed to use the model later.
    scaling: Vec<(f64, f64)>,
}

/// A linear model: `price = bias + Σ weight_i × standardized feature_i`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Model {
    weights: Vec<f64>,
    bias: f64,
    learning_rate: f64,
    epochs: u32,
}

/// How well a model predicts the test set.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Metrics {
    /// Root mean squared error of the predicted prices, in thousands.
    pub rmse: f64,
    /// Coefficient of determination (1 is a perfect fit).
    pub r2: f64,
}

/// Cache key of `ingest`: the file's contents, so editing the CSV invalidates the cache
/// while re-running on the same data does not read it twice.
fn file_fingerprint(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => format!("{}:{}", path.display(), bytes.len()) + &checksum(&bytes),
        // Unreadable: a key that never matches, so `ingest` runs and reports the real error.
        Err(e) => format!(
            "unreadable {}: {e} {:?}",
            path.display(),
            std::time::SystemTime::now()
        ),
    }
}

fn checksum(bytes: &[u8]) -> String {
    // FNV-1a: enough to tell two versions of a file apart.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[task(retries = 2, retry_delay = "200ms", cache = file_fingerprint, tags = ["io"])]
async fn ingest(path: PathBuf) -> anyhow::Result<Vec<RawRow>> {
    let text = tokio::fs::read_to_string(&path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        bail!("{} is empty", path.display());
    };
    let expected = "id,area_m2,rooms,age_years,distance_km,price_k";
    if header.trim() != expected {
        bail!(
            "{}: header is {header:?}, expected {expected:?}",
            path.display()
        );
    }
    let rows: Vec<RawRow> = lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| RawRow {
            line: i + 1,
            fields: l.split(',').map(|f| f.trim().to_string()).collect(),
        })
        .collect();
    info!(rows = rows.len(), "read {}", path.display());
    Ok(rows)
}

#[task(cache = inputs)]
async fn clean(rows: Vec<RawRow>) -> anyhow::Result<Vec<House>> {
    let mut houses = Vec::with_capacity(rows.len());
    let mut dropped = 0;
    for row in &rows {
        let parsed: Option<Vec<f64>> = row
            .fields
            .get(1..6)
            .map(|fs| fs.iter().map(|f| f.parse::<f64>().ok()).collect())
            .unwrap_or(None);
        match parsed.as_deref() {
            Some(&[area, rooms, age, dist, price])
                if area > 0.0 && rooms > 0.0 && age >= 0.0 && dist >= 0.0 && price > 0.0 =>
            {
                houses.push(House {
                    area_m2: area,
                    rooms,
                    age_years: age,
                    distance_km: dist,
                    price_k: price,
                });
            }
            _ => {
                dropped += 1;
                warn!(
                    line = row.line,
                    "dropping invalid row {:?}",
                    row.fields.join(",")
                );
            }
        }
    }
    if houses.len() < 10 {
        bail!(
            "only {} valid rows after cleaning; need at least 10",
            houses.len()
        );
    }
    info!(kept = houses.len(), dropped, "cleaned");
    Ok(houses)
}

#[task(cache = inputs)]
async fn featurize(houses: Vec<House>, test_fraction: f64) -> anyhow::Result<Dataset> {
    let features: Vec<Vec<f64>> = houses
        .iter()
        .map(|h| vec![h.area_m2, h.rooms, h.age_years, h.distance_km])
        .collect();
    let n = features.len() as f64;
    let scaling: Vec<(f64, f64)> = (0..4)
        .map(|j| {
            let mean = features.iter().map(|f| f[j]).sum::<f64>() / n;
            let var = features.iter().map(|f| (f[j] - mean).powi(2)).sum::<f64>() / n;
            (mean, var.sqrt().max(1e-9))
        })
        .collect();
    let scaled: Vec<Vec<f64>> = features
        .iter()
        .map(|f| {
            f.iter()
                .zip(&scaling)
                .map(|(x, (m, s))| (x - m) / s)
                .collect()
        })
        .collect();
    let targets: Vec<f64> = houses.iter().map(|h| h.price_k).collect();
    // Every k-th row goes to the test set: deterministic, so the cache stays valid.
    let k = (1.0 / test_fraction.clamp(0.05, 0.5)).round() as usize;
    let (mut train_x, mut train_y, mut test_x, mut test_y) = (vec![], vec![], vec![], vec![]);
    for (i, (x, y)) in scaled.into_iter().zip(targets).enumerate() {
        if i % k == 0 {
            test_x.push(x);
            test_y.push(y);
        } else {
            train_x.push(x);
            train_y.push(y);
        }
    }
    info!(train = train_x.len(), test = test_x.len(), "featurized");
    Ok(Dataset {
        train_x,
        train_y,
        test_x,
        test_y,
        scaling,
    })
}

#[task(cache = inputs, tags = ["cpu"])]
async fn train(data: Dataset, learning_rate: f64, epochs: u32) -> anyhow::Result<Model> {
    let dims = data.train_x.first().map_or(0, Vec::len);
    let (mut weights, mut bias) = (vec![0.0; dims], 0.0);
    let n = data.train_x.len() as f64;
    for _ in 0..epochs {
        let mut grad_w = vec![0.0; dims];
        let mut grad_b = 0.0;
        for (x, y) in data.train_x.iter().zip(&data.train_y) {
            let err = predict(&weights, bias, x) - y;
            for (g, xi) in grad_w.iter_mut().zip(x) {
                *g += err * xi;
            }
            grad_b += err;
        }
        for (w, g) in weights.iter_mut().zip(&grad_w) {
            *w -= learning_rate * g / n;
        }
        bias -= learning_rate * grad_b / n;
        // Training is CPU work: let other runs of the grid make progress between epochs.
        tokio::task::yield_now().await;
    }
    if !bias.is_finite() {
        bail!("training diverged with learning rate {learning_rate}");
    }
    info!(learning_rate, bias, "trained");
    Ok(Model {
        weights,
        bias,
        learning_rate,
        epochs,
    })
}

fn predict(weights: &[f64], bias: f64, x: &[f64]) -> f64 {
    bias + weights.iter().zip(x).map(|(w, xi)| w * xi).sum::<f64>()
}

#[task(cache = inputs)]
async fn evaluate(model: Model, data: Dataset) -> anyhow::Result<Metrics> {
    let preds: Vec<f64> = data
        .test_x
        .iter()
        .map(|x| predict(&model.weights, model.bias, x))
        .collect();
    let n = data.test_y.len() as f64;
    let mean = data.test_y.iter().sum::<f64>() / n;
    let ss_res: f64 = preds
        .iter()
        .zip(&data.test_y)
        .map(|(p, y)| (p - y).powi(2))
        .sum();
    let ss_tot: f64 = data.test_y.iter().map(|y| (y - mean).powi(2)).sum();
    let metrics = Metrics {
        rmse: (ss_res / n).sqrt(),
        r2: 1.0 - ss_res / ss_tot,
    };
    info!(
        learning_rate = model.learning_rate,
        rmse = metrics.rmse,
        r2 = metrics.r2,
        "evaluated"
    );
    Ok(metrics)
}

#[task(retries = 1)]
async fn deploy(
    model: Model,
    scaling: Vec<(f64, f64)>,
    metrics: Metrics,
    to: PathBuf,
) -> anyhow::Result<PathBuf> {
    if metrics.r2 < 0.5 {
        bail!(
            "refusing to deploy a model with R² = {:.3} (< 0.5)",
            metrics.r2
        );
    }
    if let Some(dir) = to.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let document = serde_json::json!({
        "model": model,
        "scaling": scaling,
        "features": ["area_m2", "rooms", "age_years", "distance_km"],
        "metrics": metrics,
    });
    // Write then rename, so a reader never sees half a model.
    let tmp = to.with_extension("json.tmp");
    tokio::fs::write(&tmp, serde_json::to_vec_pretty(&document)?).await?;
    tokio::fs::rename(&tmp, &to).await?;
    info!(path = %to.display(), "deployed");
    Ok(to)
}

/// The whole pipeline: returns where the deployed model is and how good it is.
#[flow(retries = 1, retry_delay = "1s")]
pub async fn house_prices(csv: PathBuf, model_path: PathBuf) -> anyhow::Result<(PathBuf, Metrics)> {
    let raw = ingest(csv).await?;
    let houses = clean(raw).await?;
    let data = featurize(houses, 0.2).await?;

    let grid = [0.003, 0.01, 0.03, 0.1];
    let models = train::map(grid.map(|lr| (data.clone(), lr, 400)))
        .concurrency(2)
        .await;
    let models: Vec<Model> = models.into_iter().collect::<anyhow::Result<_>>()?;
    let candidates: Vec<(Model, Dataset)> =
        models.iter().map(|m| (m.clone(), data.clone())).collect();
    let scores = evaluate::map(candidates).await;

    let mut best: Option<(Model, Metrics)> = None;
    for (model, score) in models.into_iter().zip(scores) {
        let score = score?;
        if best.as_ref().is_none_or(|(_, b)| score.rmse < b.rmse) {
            best = Some((model, score));
        }
    }
    let Some((model, metrics)) = best else {
        bail!("the grid is empty");
    };
    let path = deploy(model, data.scaling.clone(), metrics.clone(), model_path).await?;
    Ok((path, metrics))
}

/// What the terminal shows: `RUST_LOG` as `target=level` pairs (`info`,
/// `ml_pipeline=debug,flowkit=warn`), `info` by default.
pub fn terminal_filter() -> Targets {
    let default = Targets::new().with_default(tracing::Level::INFO);
    match std::env::var("RUST_LOG") {
        Err(_) => default,
        Ok(spec) => spec.parse().unwrap_or_else(|err| {
            eprintln!(
                "ignoring RUST_LOG={spec:?} ({err}); \
                 write e.g. RUST_LOG=info or RUST_LOG=ml_pipeline=debug"
            );
            default
        }),
    }
}

/// The CSV that comes with the examples (300 houses, a few dirty rows).
pub fn example_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/houses.csv")
}

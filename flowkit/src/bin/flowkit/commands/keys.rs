//! `flowkit keys create NAME --scope ...`, `flowkit keys ls`, `flowkit keys revoke NAME`.

use super::Failure;
use crate::args::KeysCommand;
use crate::print;
use flowkit::Client;
use flowkit_wire::api::keys::{KeyInfo, KeySource};

/// Runs a `keys` command.
pub async fn run(client: &Client, command: KeysCommand, json: bool) -> Result<(), Failure> {
    match command {
        KeysCommand::Create { name, scopes } => {
            let created = client.create_key(&name, &scopes).await?;
            if json {
                print::json(&created);
            } else {
                // The secret alone on stdout (`flowkit keys create ... > secret`); the rest on
                // stderr.
                print::out(&created.secret);
                print::err(&format!(
                    "created key {:?} ({}). This is the only time its secret is shown: store \
                     it now (e.g. as FLOWKIT_API_KEY); the server keeps only a digest.",
                    created.key.name,
                    created.key.scopes.join(",")
                ));
            }
        }
        KeysCommand::Ls => {
            let list = client.keys().await?;
            if json {
                print::json(&list);
            } else {
                let rows: Vec<Vec<String>> = list.keys.iter().map(row).collect();
                print::table(
                    &[
                        "NAME",
                        "SOURCE",
                        "SCOPES",
                        "CREATED",
                        "BY",
                        "LAST USED",
                        "ID",
                    ],
                    &rows,
                );
            }
        }
        KeysCommand::Revoke { key } => {
            let revoked = client.revoke_key(&key).await?;
            if json {
                print::json(&revoked);
            } else {
                print::out(&format!(
                    "revoked key {:?} at {} (every server replica refuses it within 5 s)",
                    revoked.key.name,
                    revoked.revoked_at.to_rfc3339()
                ));
            }
        }
    }
    Ok(())
}

fn row(key: &KeyInfo) -> Vec<String> {
    let dash = || "-".to_string();
    vec![
        key.name.clone(),
        match key.source {
            KeySource::Stored => "stored",
            KeySource::Startup => "startup",
        }
        .to_string(),
        key.scopes.join(","),
        key.created
            .map_or_else(dash, |at| at.format("%Y-%m-%d %H:%M:%S").to_string()),
        key.created_by.clone().unwrap_or_else(dash),
        match (key.source, key.last_used) {
            (_, Some(at)) => at.format("%Y-%m-%d %H:%M:%S").to_string(),
            (KeySource::Stored, None) => "never".to_string(),
            (KeySource::Startup, None) => dash(),
        },
        key.id.map_or_else(dash, |id| id.to_string()),
    ]
}

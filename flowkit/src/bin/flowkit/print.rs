//! What the command writes: results and listings to stdout, notes and errors to stderr.
//! Writing never panics: a closed pipe (`flowkit runs ls | head`) ends the output quietly.

use flowkit::RunError;
use flowkit_wire::api::runs::Run;
use serde::Serialize;
use std::io::Write;

/// A line to stdout.
pub fn out(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// `value` as pretty JSON to stdout.
pub fn json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => out(&text),
        Err(e) => err(&format!("cannot write the answer as JSON: {e}")),
    }
}

/// A message to stderr, after `flowkit: `.
pub fn err(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "flowkit: {message}");
}

/// `error` to stderr, readably: parameter errors one per line at their pointers; with
/// `json`, the run it is about (if any) to stdout.
pub fn error(error: &RunError, json_out: bool) {
    if json_out && let Some(run) = error.run() {
        json(run);
    }
    match error {
        RunError::InvalidParameters(errors) => {
            let mut text = String::from("the server refused the parameters:");
            for e in errors {
                let at = if e.pointer.is_empty() {
                    "(all)"
                } else {
                    &e.pointer
                };
                text.push_str(&format!("\n  {at}: {}", e.message));
            }
            err(&text);
        }
        other => err(&other.to_string()),
    }
}

/// Rows as columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let width = widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.trim_end().to_string()
    };
    out(&line(header.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        out(&line(row.clone()));
    }
}

/// One line about a run: `ID  STATE (attempt N)  message`.
pub fn run_line(run: &Run) -> String {
    let mut text = format!("{}  {}", run.id, run.state.as_str());
    if run.attempt > 1 {
        text.push_str(&format!(" (attempt {})", run.attempt));
    }
    if let Some(message) = run.state_message.as_deref().filter(|m| !m.is_empty()) {
        text.push_str(&format!("  {message}"));
    }
    text
}

//! Step-by-step narration shared by `tether demo` and `tether pair`: a line
//! per step, or one JSON object at the end.

use std::time::Instant;

use serde::Serialize;

/// One checked step.
#[derive(Debug, Serialize)]
pub(crate) struct Step {
    pub(crate) name: &'static str,
    pub(crate) ok: bool,
    pub(crate) ms: u64,
    pub(crate) detail: String,
}

/// Prints each step as it happens (unless `json`) and keeps them all.
pub(crate) struct Narrator {
    pub(crate) json: bool,
    pub(crate) steps: Vec<Step>,
}

impl Narrator {
    /// Records a step that started at `started`; returns whether it passed.
    pub(crate) fn record(
        &mut self,
        name: &'static str,
        started: Instant,
        result: Result<String, String>,
    ) -> bool {
        let ms = started.elapsed().as_millis() as u64;
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        if !self.json {
            let mark = if ok { "ok  " } else { "FAIL" };
            println!("[{mark}] {name:<28} {ms:>6} ms  {detail}");
        }
        self.steps.push(Step {
            name,
            ok,
            ms,
            detail,
        });
        ok
    }
}

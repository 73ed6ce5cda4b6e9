//! Test vectors: `tests/*.json` in a plugin's folder, run in the sandbox
//! against a candidate version before it is published.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{CallError, LoadError};
use crate::host::{Loaded, PluginHost};
use crate::recall::Scope;

/// Most test vectors a plugin may ship, over all its files.
pub const MAX_VECTORS: usize = 64;
/// Largest test-vector file, in bytes.
pub const MAX_VECTOR_FILE: u64 = 1 << 20;
/// Wall time all of a plugin's test vectors may take together (each call
/// also keeps its own budget).
pub const VECTORS_WALL: std::time::Duration = std::time::Duration::from_secs(30);

impl PluginHost {
    /// Runs `folder/tests/*.json` against `loaded`; the first failure.
    pub(crate) fn run_vectors(&self, folder: &Path, loaded: &Loaded) -> Result<(), LoadError> {
        let Ok(entries) = std::fs::read_dir(folder.join("tests")) else {
            return Ok(());
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let started = std::time::Instant::now();
        let mut run = 0;
        for path in files {
            let fail = |index: usize, tool: &str, message: String| LoadError::TestVector {
                path: path.clone(),
                index,
                tool: tool.to_owned(),
                message,
            };
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if size > MAX_VECTOR_FILE {
                return Err(fail(0, "-", format!("{size} bytes: a vectors file holds at most {MAX_VECTOR_FILE}")));
            }
            let text = std::fs::read_to_string(&path).map_err(|err| fail(0, "-", format!("cannot read: {err}")))?;
            let vectors: Vec<Value> =
                serde_json::from_str(&text).map_err(|err| fail(0, "-", format!("not a JSON array: {err}")))?;
            for (index, vector) in vectors.iter().enumerate() {
                let local = vector["tool"].as_str().unwrap_or_default();
                run += 1;
                if run > MAX_VECTORS {
                    return Err(fail(index, local, format!("a plugin ships at most {MAX_VECTORS} test vectors")));
                }
                if started.elapsed() > VECTORS_WALL {
                    let limit = VECTORS_WALL.as_secs();
                    return Err(fail(index, local, format!("the test vectors took longer than {limit} s together")));
                }
                let name = format!("{}.{local}", loaded.manifest.id);
                let Some(tool) = loaded.tools.get(&name) else {
                    return Err(fail(index, local, "no such tool".to_owned()));
                };
                // A vector is a call like any other: its arguments meet the
                // input schema, and an answer meets the output schema.
                if !tool.input.is_valid(&vector["arguments"]) {
                    return Err(fail(index, local, "its arguments do not match the tool's input schema".to_owned()));
                }
                let args = vector["arguments"].to_string();
                let got = self.call_in(loaded, &Scope::default(), &name, &tool.local, &args);
                // Numeric experts may give a relative tolerance for numbers.
                let tolerance = vector.get("tolerance").and_then(Value::as_f64).unwrap_or(0.0);
                match (got, vector.get("expected"), vector.get("error")) {
                    (Ok(text), Some(expected), _) => {
                        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        if tool.output.as_ref().is_some_and(|output| !output.is_valid(&value)) {
                            return Err(fail(
                                index,
                                local,
                                format!("the answer {value} does not match the output schema"),
                            ));
                        }
                        if !close(&value, expected, tolerance) {
                            return Err(fail(index, local, format!("expected {expected}, got {value}")));
                        }
                    }
                    (Err(CallError::ToolFailed { kind, .. }), _, Some(error))
                        if error.as_str() == Some(&kind.replace('_', "-")) => {}
                    (got, _, _) => return Err(fail(index, local, format!("unexpected outcome {got:?}"))),
                }
            }
        }
        Ok(())
    }
}

/// JSON equality, numbers within `tolerance` relative to the expected
/// value (absolute below 1).
fn close(got: &Value, expected: &Value, tolerance: f64) -> bool {
    match (got, expected) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= tolerance * b.abs().max(1.0),
            _ => a == b,
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| close(a, b, tolerance))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| close(v, w, tolerance)))
        }
        _ => got == expected,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::close;

    #[test]
    fn numbers_match_within_a_relative_tolerance_and_the_rest_exactly() {
        assert!(close(&json!({"x": [1.0005, "a"]}), &json!({"x": [1, "a"]}), 1e-3));
        assert!(!close(&json!({"x": [1.01, "a"]}), &json!({"x": [1, "a"]}), 1e-3));
        assert!(close(&json!(1000.5), &json!(1000), 1e-3), "relative above 1");
        assert!(!close(&json!({"x": 1, "y": 2}), &json!({"x": 1}), 0.5), "extra keys differ");
        assert!(!close(&json!("1"), &json!(1), 1.0));
    }
}

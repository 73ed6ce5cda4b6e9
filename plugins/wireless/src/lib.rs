//! `wireless`: deterministic experts in the spirit of IoX — signal
//! processing the model should call rather than guess.
//!
//! - `line_of_sight`: from a channel impulse response (complex taps), the
//!   Rician K-factor (strongest path over the rest), the first-path power
//!   ratio, and LOS when the first significant path is the strongest and
//!   K ≥ 1 (0 dB).
//! - `doppler`: from complex baseband samples of a tone, the frequency
//!   offset by the phase of the lag-1 autocorrelation (Kay's estimator),
//!   and the radial speed when the carrier is given.
//! - `fading`: from envelope samples |h|, the moment-based K-factor and
//!   Nakagami m, and the fading type (Rayleigh, Rician, or worse than
//!   Rayleigh).

use engram_plugin_sdk::{Context, Error, Plugin, Tool, Value, json};

const MAX_SAMPLES: usize = 1 << 20;
const SPEED_OF_LIGHT: f64 = 299_792_458.0;

fn complex_list(value: &Value, what: &str) -> Result<Vec<(f64, f64)>, Error> {
    let list = value.as_array().ok_or_else(|| Error::invalid(format!("`{what}` must be a list of [re, im] pairs")))?;
    if list.is_empty() || list.len() > MAX_SAMPLES {
        return Err(Error::invalid(format!("`{what}` needs 1 to {MAX_SAMPLES} entries")));
    }
    list.iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([re, im]) => match (re.as_f64(), im.as_f64()) {
                (Some(re), Some(im)) if re.is_finite() && im.is_finite() => Ok((re, im)),
                _ => Err(Error::invalid(format!("`{what}` holds a non-finite number"))),
            },
            _ => Err(Error::invalid(format!("each entry of `{what}` must be [re, im]"))),
        })
        .collect()
}

fn round(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale + 0.0
}

fn db(x: f64) -> f64 {
    10.0 * x.log10()
}

fn line_of_sight(args: &Value) -> Result<Value, Error> {
    let taps = complex_list(&args["taps"], "taps")?;
    let power: Vec<f64> = taps.iter().map(|(re, im)| re * re + im * im).collect();
    let total: f64 = power.iter().sum();
    if total <= 0.0 {
        return Err(Error::invalid("the impulse response has no energy"));
    }
    let (strongest, peak) =
        power.iter().enumerate().fold((0, 0.0), |best, (i, &p)| if p > best.1 { (i, p) } else { best });
    // The first path within 20 dB of the peak counts as the first arrival.
    let threshold_db = args["threshold_db"].as_f64().unwrap_or(20.0);
    let floor = peak * 10f64.powf(-threshold_db / 10.0);
    let first = power.iter().position(|&p| p >= floor).unwrap_or(strongest);
    let rest = total - peak;
    let k = if rest > 0.0 { peak / rest } else { f64::INFINITY };
    let los = first == strongest && k >= 1.0;
    Ok(json!({
        "k_factor": if k.is_finite() { json!(round(k, 4)) } else { json!(null) },
        "k_factor_db": if k.is_finite() { json!(round(db(k), 2)) } else { json!(null) },
        "first_path_index": first,
        "strongest_path_index": strongest,
        "first_path_power_ratio": round(power[first] / total, 4),
        "los": los,
    }))
}

fn doppler(args: &Value) -> Result<Value, Error> {
    let samples = complex_list(&args["samples"], "samples")?;
    let rate = args["sample_rate_hz"]
        .as_f64()
        .filter(|r| *r > 0.0)
        .ok_or_else(|| Error::invalid("`sample_rate_hz` must be positive"))?;
    if samples.len() < 2 {
        return Err(Error::invalid("at least two samples are needed"));
    }
    // Σ x[n+1] · conj(x[n]); its phase per sample is 2π f / fs.
    let (mut re, mut im) = (0.0, 0.0);
    for pair in samples.windows(2) {
        let ((a, b), (c, d)) = (pair[1], pair[0]);
        re += a * c + b * d;
        im += b * c - a * d;
    }
    if re == 0.0 && im == 0.0 {
        return Err(Error::invalid("the samples carry no tone"));
    }
    let shift = im.atan2(re) * rate / (2.0 * std::f64::consts::PI);
    let mut out = json!({"doppler_hz": round(shift, 3), "unambiguous_range_hz": round(rate / 2.0, 3)});
    if let Some(carrier) = args["carrier_hz"].as_f64().filter(|c| *c > 0.0) {
        // Positive shift: approaching.
        out["radial_speed_mps"] = json!(round(shift * SPEED_OF_LIGHT / carrier, 3));
    }
    Ok(out)
}

fn fading(args: &Value) -> Result<Value, Error> {
    let envelope: Vec<f64> = args["envelope"]
        .as_array()
        .ok_or_else(|| Error::invalid("`envelope` must be a list of amplitudes"))?
        .iter()
        .map(|v| v.as_f64().filter(|x| x.is_finite() && *x >= 0.0))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::invalid("`envelope` must hold non-negative numbers"))?;
    if envelope.len() < 100 || envelope.len() > MAX_SAMPLES {
        return Err(Error::invalid(format!("`envelope` needs 100 to {MAX_SAMPLES} samples")));
    }
    let n = envelope.len() as f64;
    let m2 = envelope.iter().map(|r| r * r).sum::<f64>() / n;
    let m4 = envelope.iter().map(|r| r.powi(4)).sum::<f64>() / n;
    if m2 <= 0.0 {
        return Err(Error::invalid("the envelope has no energy"));
    }
    // γ = Var(r²) / E[r²]²: 1 for Rayleigh, smaller with a specular part.
    let gamma = (m4 - m2 * m2) / (m2 * m2);
    let nakagami_m = if gamma > 0.0 { 1.0 / gamma } else { f64::INFINITY };
    let k = if gamma >= 1.0 {
        0.0
    } else {
        let s = (1.0 - gamma.max(0.0)).sqrt();
        s / (1.0 - s)
    };
    let kind = if gamma > 1.15 {
        "worse than Rayleigh (Nakagami m < 1)"
    } else if k < 0.5 {
        "Rayleigh"
    } else {
        "Rician"
    };
    Ok(json!({
        "k_factor": if k.is_finite() { json!(round(k, 3)) } else { json!(null) },
        "nakagami_m": if nakagami_m.is_finite() { json!(round(nakagami_m, 3)) } else { json!(null) },
        "type": kind,
    }))
}

struct Wireless;

impl Plugin for Wireless {
    fn tools() -> Vec<Tool> {
        let complex = json!({"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}, "minItems": 1});
        vec![
            Tool::new(
                "line_of_sight",
                "Decides line of sight vs non-line of sight from a channel impulse response (complex taps in \
                 delay order): Rician K-factor, first-path power ratio, and the verdict.",
            )
            .input(json!({
                "type": "object",
                "properties": {"taps": complex.clone(), "threshold_db": {"type": "number", "minimum": 0}},
                "required": ["taps"],
                "additionalProperties": false
            }))
            .read_only(),
            Tool::new(
                "doppler",
                "Estimates the Doppler shift (Hz) of a tone from complex baseband samples at a sample rate; \
                 with the carrier frequency, also the radial speed (m/s, positive when approaching).",
            )
            .input(json!({
                "type": "object",
                "properties": {
                    "samples": complex,
                    "sample_rate_hz": {"type": "number", "exclusiveMinimum": 0},
                    "carrier_hz": {"type": "number", "exclusiveMinimum": 0}
                },
                "required": ["samples", "sample_rate_hz"],
                "additionalProperties": false
            }))
            .read_only(),
            Tool::new(
                "fading",
                "Classifies small-scale fading from envelope samples |h| (at least 100): moment-based Rician \
                 K-factor, Nakagami m, and the type (Rayleigh, Rician, worse than Rayleigh).",
            )
            .input(json!({
                "type": "object",
                "properties": {"envelope": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 100}},
                "required": ["envelope"],
                "additionalProperties": false
            }))
            .read_only(),
        ]
    }

    fn call(_: &Context, tool: &str, args: Value) -> Result<Value, Error> {
        match tool {
            "line_of_sight" => line_of_sight(&args),
            "doppler" => doppler(&args),
            "fading" => fading(&args),
            other => Err(Error::invalid(format!("no tool `{other}`"))),
        }
    }
}

engram_plugin_sdk::export_plugin!(Wireless);

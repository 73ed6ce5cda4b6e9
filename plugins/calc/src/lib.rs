//! `calc`: exact rational arithmetic and unit conversion.
//!
//! Numbers are arbitrary-precision fractions, so `0.1 + 0.2` is exactly
//! `3/10` and `1/3 * 3` is exactly `1`. Units convert through exact factors
//! (an inch is 127/5000 m by definition), temperatures through their
//! offsets.

mod expr;
mod units;

use engram_plugin_sdk::{Context, Error, Plugin, Tool, Value, json};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{Signed, Zero};

struct Calc;

/// Digits after the point in the `decimal` rendering.
const DECIMALS: usize = 12;

impl Plugin for Calc {
    fn tools() -> Vec<Tool> {
        let exact = json!({
            "type": "object",
            "properties": {
                "value": {"type": "string", "description": "exact value as a fraction, e.g. \"7/3\""},
                "decimal": {"type": "string", "description": "the value rounded to 12 decimals"},
                "is_integer": {"type": "boolean"}
            },
            "required": ["value", "decimal", "is_integer"]
        });
        vec![
            Tool::new(
                "evaluate",
                "Evaluates an arithmetic expression exactly, with fractions instead of floating point: \
                 + - * / ^ (integer powers), parentheses, decimals and fractions, e.g. \"(1/3 + 0.25) * 12\".",
            )
            .title("Exact arithmetic")
            .input(json!({
                "type": "object",
                "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": 4096}},
                "required": ["expression"],
                "additionalProperties": false
            }))
            .output(exact.clone())
            .read_only(),
            Tool::new(
                "convert",
                "Converts a quantity between units of length, area, volume, mass, time, speed, energy, power, \
                 pressure, frequency, data and temperature, exactly, e.g. 3.5 mi to km.",
            )
            .title("Unit conversion")
            .input(json!({
                "type": "object",
                "properties": {
                    "value": {"type": ["string", "number"], "description": "a number or an exact expression"},
                    "from": {"type": "string", "minLength": 1},
                    "to": {"type": "string", "minLength": 1}
                },
                "required": ["value", "from", "to"],
                "additionalProperties": false
            }))
            .output(exact)
            .read_only(),
        ]
    }

    fn call(_: &Context, tool: &str, args: Value) -> Result<Value, Error> {
        match tool {
            "evaluate" => {
                let expression =
                    args["expression"].as_str().ok_or_else(|| Error::invalid("`expression` must be a string"))?;
                let value = expr::evaluate(expression).map_err(Error::invalid)?;
                Ok(render(&value))
            }
            "convert" => {
                let value = match &args["value"] {
                    Value::String(text) => expr::evaluate(text).map_err(Error::invalid)?,
                    Value::Number(number) => expr::evaluate(&number.to_string()).map_err(Error::invalid)?,
                    _ => return Err(Error::invalid("`value` must be a number or a string")),
                };
                let (from, to) = (args["from"].as_str().unwrap_or_default(), args["to"].as_str().unwrap_or_default());
                Ok(render(&units::convert(&value, from, to).map_err(Error::invalid)?))
            }
            other => Err(Error::invalid(format!("no tool `{other}`"))),
        }
    }
}

/// `{value: "p/q", decimal: "...", is_integer}`.
fn render(value: &BigRational) -> Value {
    let text =
        if value.is_integer() { value.numer().to_string() } else { format!("{}/{}", value.numer(), value.denom()) };
    json!({"value": text, "decimal": decimal(value, DECIMALS), "is_integer": value.is_integer()})
}

/// `value` rounded half away from zero to `places` decimals, trailing zeros cut.
fn decimal(value: &BigRational, places: usize) -> String {
    let scale = BigInt::from(10).pow(places as u32);
    let scaled = (value.abs() * BigRational::from_integer(scale.clone())).round().to_integer();
    let (whole, fraction) = (&scaled / &scale, &scaled % &scale);
    let sign = if value.is_negative() && !scaled.is_zero() { "-" } else { "" };
    let fraction = format!("{fraction:0>places$}");
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() { format!("{sign}{whole}") } else { format!("{sign}{whole}.{fraction}") }
}

engram_plugin_sdk::export_plugin!(Calc);

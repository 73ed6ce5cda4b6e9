//! `lp`: linear and mixed-integer programs over a small JSON model, solved
//! with good_lp's pure-Rust microlp backend, and a verifier that checks a
//! proposed solution against a model (feasibility, objective, gap to the
//! optimum) — what the experience library uses to judge an answer.
//!
//! Model: `{"sense": "maximize"|"minimize", "objective": {"x": 3, ...},
//! "constant": 0, "variables": {"x": {"lower": 0, "upper": 10, "integer":
//! true}, ...}, "constraints": [{"name": "c1", "terms": {"x": 1}, "op":
//! "<=", "rhs": 4}, ...]}`. The solver stops at `time_limit_ms` (default:
//! three quarters of the call's wall budget) and returns the best feasible
//! solution found so far with status `time_limit`.

use std::collections::BTreeMap;

use engram_plugin_sdk::{Context, Error, Plugin, Tool, Value, json};
use good_lp::solvers::{SolutionStatus, WithTimeLimit};
use good_lp::{Expression, ProblemVariables, ResolutionError, Solution, SolverModel, Variable, microlp, variable};
use serde::Deserialize;

/// Largest model accepted (the solver's time is bounded by the host).
const MAX_VARIABLES: usize = 2000;
const MAX_CONSTRAINTS: usize = 2000;
/// Tolerance for feasibility and integrality checks.
const TOLERANCE: f64 = 1e-6;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Model {
    sense: Sense,
    #[serde(default)]
    objective: BTreeMap<String, f64>,
    #[serde(default)]
    constant: f64,
    variables: BTreeMap<String, Var>,
    #[serde(default)]
    constraints: Vec<Constraint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Sense {
    #[serde(alias = "max", alias = "maximise")]
    Maximize,
    #[serde(alias = "min", alias = "minimise")]
    Minimize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Var {
    lower: Option<f64>,
    upper: Option<f64>,
    #[serde(default)]
    integer: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Constraint {
    #[serde(default)]
    name: Option<String>,
    terms: BTreeMap<String, f64>,
    op: Op,
    rhs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Op {
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "=", alias = "==")]
    Eq,
}

impl Model {
    fn parse(value: &Value) -> Result<Self, Error> {
        let model: Self =
            serde_json::from_value(value.clone()).map_err(|e| Error::invalid(format!("bad model: {e}")))?;
        if model.variables.is_empty() || model.variables.len() > MAX_VARIABLES {
            return Err(Error::invalid(format!("a model needs 1 to {MAX_VARIABLES} variables")));
        }
        if model.constraints.len() > MAX_CONSTRAINTS {
            return Err(Error::invalid(format!("at most {MAX_CONSTRAINTS} constraints")));
        }
        let known = |name: &String, place: &str| {
            if model.variables.contains_key(name) {
                Ok(())
            } else {
                Err(Error::invalid(format!("{place} uses `{name}`, which is not among the variables")))
            }
        };
        for name in model.objective.keys() {
            known(name, "the objective")?;
        }
        for (i, c) in model.constraints.iter().enumerate() {
            for name in c.terms.keys() {
                known(name, &format!("constraint {}", c.name.clone().unwrap_or_else(|| i.to_string())))?;
            }
        }
        let finite = |x: f64| x.is_finite();
        let numbers = model.objective.values().chain(model.constraints.iter().flat_map(|c| c.terms.values()));
        if !numbers.copied().all(finite) || !model.constraints.iter().all(|c| c.rhs.is_finite()) {
            return Err(Error::invalid("coefficients and right-hand sides must be finite numbers"));
        }
        for (name, v) in &model.variables {
            if let (Some(lo), Some(hi)) = (v.lower, v.upper)
                && lo > hi
            {
                return Err(Error::invalid(format!("`{name}` has lower bound {lo} above its upper bound {hi}")));
            }
        }
        Ok(model)
    }

    fn objective_of(&self, values: &BTreeMap<String, f64>) -> f64 {
        self.constant + self.objective.iter().map(|(n, c)| c * values.get(n).copied().unwrap_or(0.0)).sum::<f64>()
    }

    /// Solves within `time_limit_ms`: the status, objective and values.
    fn solve(&self, time_limit_ms: u64) -> Result<Value, Error> {
        let mut problem = ProblemVariables::new();
        let mut vars: BTreeMap<&str, Variable> = BTreeMap::new();
        for (name, v) in &self.variables {
            let mut definition = variable();
            if let Some(lo) = v.lower {
                definition = definition.min(lo);
            }
            if let Some(hi) = v.upper {
                definition = definition.max(hi);
            }
            if v.integer {
                definition = definition.integer();
            }
            vars.insert(name, problem.add(definition));
        }
        let linear = |terms: &BTreeMap<String, f64>| -> Expression {
            terms.iter().fold(Expression::from(0.0), |e, (n, c)| e + *c * vars[n.as_str()])
        };
        let objective = linear(&self.objective) + self.constant;
        let unsolved = match self.sense {
            Sense::Maximize => problem.maximise(objective),
            Sense::Minimize => problem.minimise(objective),
        };
        let mut model = unsolved.using(microlp).with_time_limit(time_limit_ms as f64 / 1000.0);
        for c in &self.constraints {
            let lhs = linear(&c.terms);
            model = model.with(match c.op {
                Op::Le => good_lp::constraint::leq(lhs, c.rhs),
                Op::Ge => good_lp::constraint::geq(lhs, c.rhs),
                Op::Eq => good_lp::constraint::eq(lhs, c.rhs),
            });
        }
        match model.solve() {
            Ok(solution) => {
                let values: BTreeMap<String, f64> =
                    vars.iter().map(|(n, v)| ((*n).to_owned(), clean(solution.value(*v)))).collect();
                let objective = clean(self.objective_of(&values));
                let status = match solution.status() {
                    SolutionStatus::TimeLimit => "time_limit",
                    _ => "optimal",
                };
                Ok(json!({"status": status, "objective": objective, "values": values}))
            }
            Err(ResolutionError::Infeasible) => Ok(json!({"status": "infeasible"})),
            Err(ResolutionError::Unbounded) => Ok(json!({"status": "unbounded"})),
            // microlp reports a deadline hit before any feasible point as `Other`.
            Err(ResolutionError::Other(message)) if message.to_lowercase().contains("time limit") => {
                Err(Error::failed(format!(
                    "the time limit of {time_limit_ms} ms ran out before a feasible solution was found"
                )))
            }
            Err(other) => Err(Error::failed(format!("the solver failed: {other}"))),
        }
    }
}

/// Rounds away float noise (1e-12) so exact answers print exactly.
fn clean(x: f64) -> f64 {
    let r = x.round();
    if (x - r).abs() < 1e-9 { r + 0.0 } else { x }
}

struct Lp;

impl Plugin for Lp {
    fn tools() -> Vec<Tool> {
        let model = json!({
            "type": "object",
            "properties": {
                "sense": {"enum": ["maximize", "minimize", "max", "min", "maximise", "minimise"]},
                "objective": {"type": "object", "additionalProperties": {"type": "number"}},
                "constant": {"type": "number"},
                "variables": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "lower": {"type": "number"}, "upper": {"type": "number"}, "integer": {"type": "boolean"}
                        },
                        "additionalProperties": false
                    }
                },
                "constraints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "terms": {"type": "object", "additionalProperties": {"type": "number"}},
                            "op": {"enum": ["<=", ">=", "=", "=="]},
                            "rhs": {"type": "number"}
                        },
                        "required": ["terms", "op", "rhs"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["sense", "variables"],
            "additionalProperties": false
        });
        let limit = json!({
            "type": "integer",
            "minimum": 1,
            "description": "Stop after this many milliseconds and return the best solution found \
                            (default: three quarters of the call's budget)"
        });
        vec![
            Tool::new(
                "solve",
                "Solves a linear or mixed-integer program: variables with bounds and integrality, linear \
                 constraints (<=, >=, =) and a linear objective to maximize or minimize. Returns the status \
                 (optimal, infeasible, unbounded, or time_limit with the best solution found in time), the \
                 objective and the variables' values.",
            )
            .title("LP/MILP solver")
            .input(json!({
                "type": "object",
                "properties": {"model": model.clone(), "time_limit_ms": limit.clone()},
                "required": ["model"],
                "additionalProperties": false
            }))
            .output(json!({
                "type": "object",
                "properties": {
                    "status": {"enum": ["optimal", "infeasible", "unbounded", "time_limit"]},
                    "objective": {"type": "number"},
                    "values": {"type": "object", "additionalProperties": {"type": "number"}}
                },
                "required": ["status"]
            }))
            .read_only(),
            Tool::new(
                "verify",
                "Checks proposed values against a model: bounds, integrality and every constraint (with the \
                 amount of each violation), the objective they reach, and how far it is from the optimum.",
            )
            .title("Check a solution")
            .input(json!({
                "type": "object",
                "properties": {
                    "model": model,
                    "values": {"type": "object", "additionalProperties": {"type": "number"}},
                    "time_limit_ms": limit
                },
                "required": ["model", "values"],
                "additionalProperties": false
            }))
            .read_only(),
        ]
    }

    fn call(context: &Context, tool: &str, args: Value) -> Result<Value, Error> {
        let model = Model::parse(&args["model"])?;
        let time_limit_ms = args["time_limit_ms"].as_u64().unwrap_or(context.budget_ms * 3 / 4).max(1);
        match tool {
            "solve" => model.solve(time_limit_ms),
            "verify" => verify(&model, &args["values"], time_limit_ms),
            other => Err(Error::invalid(format!("no tool `{other}`"))),
        }
    }
}

fn verify(model: &Model, values: &Value, time_limit_ms: u64) -> Result<Value, Error> {
    let values: BTreeMap<String, f64> =
        serde_json::from_value(values.clone()).map_err(|e| Error::invalid(format!("bad values: {e}")))?;
    let mut violations = Vec::new();
    for (name, var) in &model.variables {
        let Some(&x) = values.get(name) else {
            violations.push(json!({"what": format!("variable `{name}`"), "problem": "missing"}));
            continue;
        };
        if var.lower.is_some_and(|lo| x < lo - TOLERANCE) {
            violations.push(json!({"what": format!("lower bound of `{name}`"), "by": var.lower.unwrap_or(0.0) - x}));
        }
        if var.upper.is_some_and(|hi| x > hi + TOLERANCE) {
            violations.push(json!({"what": format!("upper bound of `{name}`"), "by": x - var.upper.unwrap_or(0.0)}));
        }
        if var.integer && (x - x.round()).abs() > TOLERANCE {
            violations.push(json!({"what": format!("integrality of `{name}`"), "by": (x - x.round()).abs()}));
        }
    }
    for unknown in values.keys().filter(|n| !model.variables.contains_key(*n)) {
        violations.push(json!({"what": format!("variable `{unknown}`"), "problem": "not in the model"}));
    }
    for (i, c) in model.constraints.iter().enumerate() {
        let lhs: f64 = c.terms.iter().map(|(n, k)| k * values.get(n).copied().unwrap_or(0.0)).sum();
        let by = match c.op {
            Op::Le => lhs - c.rhs,
            Op::Ge => c.rhs - lhs,
            Op::Eq => (lhs - c.rhs).abs(),
        };
        if by > TOLERANCE * (1.0 + c.rhs.abs()) {
            let name = c.name.clone().unwrap_or_else(|| format!("#{i}"));
            violations.push(json!({"what": format!("constraint {name}"), "by": by}));
        }
    }
    let objective = clean(model.objective_of(&values));
    let optimum = model.solve(time_limit_ms)?;
    let gap = optimum["objective"].as_f64().map(|best| match model.sense {
        Sense::Maximize => clean(best - objective),
        Sense::Minimize => clean(objective - best),
    });
    Ok(json!({
        "feasible": violations.is_empty(),
        "violations": violations,
        "objective": objective,
        "optimum": optimum,
        "gap": gap,
        "optimal": violations.is_empty() && gap.is_some_and(|g| g.abs() <= TOLERANCE * (1.0 + objective.abs())),
    }))
}

engram_plugin_sdk::export_plugin!(Lp);

#[cfg(test)]
mod tests {
    use super::*;

    /// Picking at most 31/2 items of weight 2: the relaxation's bound (31)
    /// stays one above every integer point (30), so proving optimality takes
    /// branch and bound through about C(40, 20) nodes.
    fn parity_knapsack() -> Model {
        let names: Vec<String> = (0..40).map(|i| format!("x{i}")).collect();
        let model = json!({
            "sense": "max",
            "objective": names.iter().map(|n| (n.clone(), 2.0)).collect::<BTreeMap<_, _>>(),
            "variables": names.iter().map(|n| (n.clone(), json!({"lower": 0, "upper": 1, "integer": true}))).collect::<BTreeMap<_, _>>(),
            "constraints": [{"terms": names.iter().map(|n| (n.clone(), 2.0)).collect::<BTreeMap<_, _>>(), "op": "<=", "rhs": 31}]
        });
        Model::parse(&model).expect("a valid model")
    }

    #[test]
    fn the_solver_stops_at_its_time_limit_with_the_best_it_found() {
        match parity_knapsack().solve(20) {
            Ok(result) => {
                assert_eq!(result["status"], "time_limit", "{result}");
                assert!(result["objective"].as_f64().is_some_and(|o| o <= 30.0), "{result}");
            }
            Err(Error::Failed(message)) => assert!(message.contains("time limit"), "{message}"),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn small_programs_are_solved_to_optimality() {
        let model = Model::parse(&json!({
            "sense": "max",
            "objective": {"x": 3, "y": 2},
            "variables": {"x": {"lower": 0, "integer": true}, "y": {"lower": 0}},
            "constraints": [{"terms": {"x": 1, "y": 1}, "op": "<=", "rhs": 4}, {"terms": {"x": 1}, "op": "<=", "rhs": 2.5}]
        }))
        .expect("a valid model");
        let result = model.solve(1000).expect("solved");
        assert_eq!(result["status"], "optimal");
        assert_eq!(result["objective"], json!(10.0));
    }
}

//! `engram insights …`: the experience library, through the running
//! daemon (or the same services in-process), with the operations' own
//! types. Export and import work on files here; the daemon sees only the
//! library and the parsed files.

use std::path::PathBuf;

use anyhow::Context;
use engram_config::{Loaded, Paths};
use engram_experience::files;
use engram_experience::ops::{
    EditInsight, EvolveInsights, ImportInsights, InsightFeedback, ListInsights, LookupInsights, RevertInsight,
    SetInsightStatus, ShowInsight,
};
use engram_experience::{Change, Event, Insight, Status};

/// What `engram insights` does.
#[derive(Debug, clap::Subcommand)]
pub enum InsightsCommand {
    /// List the insights (all, or with a status / under a taxonomy path).
    List {
        /// Only this status: candidate, active, quarantined or retired.
        #[arg(long, value_parser = parse_status)]
        status: Option<Status>,
        /// Only at or under this taxonomy path.
        #[arg(long)]
        taxonomy: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One insight, with its history.
    Show {
        /// The insight (`ins-<n>`).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite fields of an insight's text (the others stay).
    Edit {
        /// The insight.
        id: String,
        /// New taxonomy path.
        #[arg(long)]
        taxonomy: Option<String>,
        /// New condition: when it applies.
        #[arg(long)]
        condition: Option<String>,
        /// New explanation.
        #[arg(long)]
        explanation: Option<String>,
        /// New example.
        #[arg(long)]
        example: Option<String>,
        /// Who edits [default: $USER].
        #[arg(long)]
        editor: Option<String>,
    },
    /// Every change of an insight: when, by whom, what.
    History {
        /// The insight.
        id: String,
    },
    /// Take an insight out of use for good (kept, with its history).
    Retire {
        /// The insight.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who decides [default: $USER].
        #[arg(long)]
        editor: Option<String>,
    },
    /// Set an insight's status: candidate, active, quarantined or retired.
    Status {
        /// The insight.
        id: String,
        /// The new status.
        #[arg(value_parser = parse_status)]
        status: Status,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who decides [default: $USER].
        #[arg(long)]
        editor: Option<String>,
    },
    /// Write the library into DIR: one TOML file per insight, and
    /// taxonomy.toml.
    Export {
        /// The folder (created if missing).
        dir: PathBuf,
    },
    /// The active insights that fit a task, as a prompt carries them (the
    /// lookup is recorded: report its outcome with `feedback`).
    Lookup {
        /// The task, in words.
        task: String,
        /// Your name for the task.
        #[arg(long)]
        task_id: Option<String>,
        /// Only insights at or under this taxonomy path.
        #[arg(long)]
        taxonomy: Option<String>,
        /// Most insights [default: experience.insights].
        #[arg(short)]
        k: Option<usize>,
        /// Choose by similarity, without the model's applicability check.
        #[arg(long)]
        no_check: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Report whether the task of a lookup passed.
    Feedback {
        /// The lookup's id (`retrieval` in its answer).
        retrieval: u64,
        /// It passed (without this flag: it failed).
        #[arg(long)]
        passed: bool,
        /// What went wrong, or right.
        #[arg(long)]
        diagnosis: Option<String>,
    },
    /// Refine the library from its record: rewrite the conditions of
    /// insights retrieved where they did not help or missed where they
    /// would have, quarantine harmful ones, merge near-duplicates (all
    /// as events; `revert` undoes any).
    Evolve {
        /// Say what would change, record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Rewrites to weigh per insight [default: experience.rewrites].
        #[arg(long)]
        rewrites: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore an insight's text and status as they were at a version.
    Revert {
        /// The insight.
        id: String,
        /// The version to restore (see `history`).
        #[arg(long)]
        version: u64,
        /// Who reverts [default: $USER].
        #[arg(long)]
        editor: Option<String>,
    },
    /// Apply the edits made to the files in DIR (text, status; files
    /// without an id are new insights), all or nothing.
    Import {
        /// The folder.
        dir: PathBuf,
        /// Who edited them [default: $USER].
        #[arg(long)]
        editor: Option<String>,
    },
}

/// `engram eval experience`.
#[derive(Debug, clap::Args)]
pub struct EvalExperienceArgs {
    /// JSON lines of `{task_id, description, ground_truth}` (the
    /// optimization format: the model writes an `lp` model, the plugin
    /// solves it, the objective is compared with the ground truth).
    #[arg(long, value_name = "FILE")]
    pub tasks: PathBuf,
    /// Where the evaluation's own journal and indexes live (emptied first)
    /// [default: <cache dir>/eval/experience].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// The share of the tasks to learn from; the rest are evaluated.
    #[arg(long, default_value_t = 0.5)]
    pub learn_share: f64,
    /// At most this many tasks in each half (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Seed of the split and of the random arm.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Tasks run at once (a remote server's parallel slots).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Print every figure as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `engram eval experience`.
pub fn eval(loaded: &Loaded, paths: &Paths, args: &EvalExperienceArgs) -> anyhow::Result<()> {
    use engram_experience::eval::EvalProgress;
    let request = engram_services::experience::EvalRequest {
        tasks: args.tasks.clone(),
        work_dir: args.work_dir.clone(),
        learn_share: args.learn_share,
        limit: args.limit,
        seed: args.seed,
        concurrency: args.concurrency,
    };
    let learning = crate::connect::terminal_bar("learning", "tasks", 0);
    let evaluating = crate::connect::terminal_bar("evaluating", "tasks", 0);
    let report = engram_services::experience::eval(&loaded.config, paths, &request, &|event| {
        let (bar, done, total) = match event {
            EvalProgress::Learned { done, total } => (&learning, done, total),
            EvalProgress::Evaluated { done, total } => (&evaluating, done, total),
        };
        crate::connect::advance(bar, done, total);
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let l = &report.learning;
    println!(
        "learned from {} tasks with {} in {:.0}s ({} passed at once): {} candidates proposed, {} admitted, \
         {} copied the task, {} merged, {} did not fix it, {} malformed; {} reflections failed",
        l.tasks,
        report.model,
        l.seconds,
        l.passed_first,
        l.proposed,
        l.admitted,
        l.copied_task,
        l.merged,
        l.did_not_fix,
        l.malformed,
        l.reflection_errors
    );
    println!("library: {} active insights; verified by {}", report.library, report.verifier);
    for name in ["none", "learned", "random"] {
        if let Some(arm) = report.arms.get(name) {
            println!(
                "  {name:<8} pass@1 {:.3} [{:.3}, {:.3}] ({}/{}), {:.1} insights a task",
                arm.pass_at_1, arm.interval[0], arm.interval[1], arm.passed, arm.tasks, arm.insights_per_task
            );
        }
    }
    println!(
        "retrieval chose insights for {} tasks: harmful {:.1}%, helpful {:.1}% ({:.0}s for the arms)",
        report.retrieved_tasks,
        report.harmful_retrieval_rate * 100.0,
        report.helpful_retrieval_rate * 100.0,
        report.eval_seconds
    );
    Ok(())
}

fn parse_status(text: &str) -> Result<Status, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("`{text}`: write candidate, active, quarantined or retired"))
}

/// Who makes a change: `--editor`, else the user's login name.
fn editor(given: Option<String>) -> String {
    given.or_else(|| std::env::var("USER").ok()).filter(|e| !e.trim().is_empty()).unwrap_or_else(|| "operator".into())
}

fn line(insight: &Insight) -> String {
    let condition = insight.text.condition.lines().next().unwrap_or_default();
    format!("{:<10} {:<11} {:<36} {condition}", insight.id, insight.status.as_str(), insight.text.taxonomy)
}

/// An insight's events, a line each.
fn print_history(events: &[Event]) {
    for event in events {
        let what = match &event.change {
            Change::Created { .. } => "created".to_owned(),
            Change::Edited { taxonomy, condition, explanation, example } => {
                let fields: Vec<&str> = [
                    ("taxonomy", taxonomy),
                    ("condition", condition),
                    ("explanation", explanation),
                    ("example", example),
                ]
                .into_iter()
                .filter_map(|(name, value)| value.as_ref().map(|_| name))
                .collect();
                format!("edited {}", fields.join(", "))
            }
            Change::Status { status, reason } => format!("{}: {reason}", status.as_str()),
            Change::Counted(_) => "outcomes counted".to_owned(),
        };
        println!("  #{} at {} ms by {}: {what}", event.seq, event.at_ms, event.editor);
    }
}

/// Runs `engram insights …`.
pub fn run(loaded: &Loaded, paths: &Paths, command: InsightsCommand) -> anyhow::Result<()> {
    match command {
        InsightsCommand::List { status, taxonomy, json } => {
            let list = crate::connect::call(loaded, paths, &ListInsights { status, taxonomy })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list.insights)?);
            } else if list.insights.is_empty() {
                println!("no insights");
            } else {
                list.insights.iter().for_each(|insight| println!("{}", line(insight)));
            }
        }
        InsightsCommand::Show { id, json } => {
            let shown = crate::connect::call(loaded, paths, &ShowInsight { id })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                let insight = &shown.insight;
                println!("{} (version {}, {})", insight.id, insight.version, insight.status.as_str());
                println!("taxonomy:    {}", insight.text.taxonomy);
                println!("condition:   {}", insight.text.condition);
                println!("explanation: {}", insight.text.explanation);
                println!("example:     {}", insight.text.example);
                let c = insight.counters;
                println!("retrieved {}, helped {}, hurt {}, missed {}", c.retrieved, c.helped, c.hurt, c.missed);
                print_history(&shown.events);
            }
        }
        InsightsCommand::History { id } => {
            let shown = crate::connect::call(loaded, paths, &ShowInsight { id })?;
            print_history(&shown.events);
        }
        InsightsCommand::Edit { id, taxonomy, condition, explanation, example, editor: who } => {
            let request = EditInsight { id, taxonomy, condition, explanation, example, editor: editor(who) };
            let insight = crate::connect::call(loaded, paths, &request)?;
            println!("{} (version {})", line(&insight), insight.version);
        }
        InsightsCommand::Retire { id, reason, editor: who } => {
            let request = SetInsightStatus { id, status: Status::Retired, reason, editor: editor(who) };
            let insight = crate::connect::call(loaded, paths, &request)?;
            println!("{}", line(&insight));
        }
        InsightsCommand::Status { id, status, reason, editor: who } => {
            let request = SetInsightStatus { id, status, reason, editor: editor(who) };
            let insight = crate::connect::call(loaded, paths, &request)?;
            println!("{}", line(&insight));
        }
        InsightsCommand::Export { dir } => {
            let list = crate::connect::call(loaded, paths, &ListInsights::default())?;
            let library = list.insights.into_iter().map(|insight| (insight.id.clone(), insight)).collect();
            let written = files::export(&library, &dir).with_context(|| format!("exporting into {}", dir.display()))?;
            println!("{written} insights written to {}", dir.display());
        }
        InsightsCommand::Lookup { task, task_id, taxonomy, k, no_check, json } => {
            let check = no_check.then_some(false);
            let request = LookupInsights { task_id, taxonomy, k, check, ..LookupInsights::new(task) };
            let found = crate::connect::call(loaded, paths, &request)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                let how = if found.checked { "checked by the model" } else { "by similarity" };
                println!(
                    "lookup {}: {} of {} candidates chosen ({how})",
                    found.retrieval,
                    found.insights.len(),
                    found.candidates
                );
                print!("{}", found.prompt);
            }
        }
        InsightsCommand::Feedback { retrieval, passed, diagnosis } => {
            let request = InsightFeedback { diagnosis, ..InsightFeedback::new(retrieval, passed) };
            let outcome = crate::connect::call(loaded, paths, &request)?;
            let verdict = if outcome.passed { "passed" } else { "failed" };
            println!("lookup {}: {verdict}, recorded as outcome {}", outcome.retrieval, outcome.id);
        }
        InsightsCommand::Evolve { dry_run, rewrites, json } => {
            let evolution = crate::connect::call(loaded, paths, &EvolveInsights { dry_run, rewrites })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&evolution)?);
                return Ok(());
            }
            let would = if evolution.dry_run { " (dry run: nothing recorded)" } else { "" };
            println!(
                "{} insights judged by their record{would}: {} rewritten, {} kept, {} quarantined, {} merged",
                evolution.considered,
                evolution.rewritten.len(),
                evolution.kept.len(),
                evolution.quarantined.len(),
                evolution.merged.len()
            );
            for r in &evolution.rewritten {
                println!(
                    "{}: {}/{} → {}/{} recorded tasks, margin {:.2} → {:.2}\n  from: {}\n  to:   {}",
                    r.id, r.before, r.tasks, r.after, r.tasks, r.margin_before, r.margin_after, r.from, r.to
                );
            }
            for removed in evolution.quarantined.iter().chain(&evolution.merged).chain(&evolution.failures) {
                println!("{}: {}", removed.id, removed.reason);
            }
        }
        InsightsCommand::Revert { id, version, editor: who } => {
            let insight = crate::connect::call(loaded, paths, &RevertInsight { id, version, editor: editor(who) })?;
            println!("{} (version {})", line(&insight), insight.version);
        }
        InsightsCommand::Import { dir, editor: who } => {
            // Read here, so a bad file is named with its line before anything is sent.
            let files = files::read(&dir)?;
            let request = ImportInsights { files, editor: editor(who) };
            let report = crate::connect::call(loaded, paths, &request)?;
            println!(
                "{} created, {} changed, {} unchanged",
                report.created.len(),
                report.changed.len(),
                report.unchanged
            );
        }
    }
    Ok(())
}

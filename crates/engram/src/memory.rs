//! `engram memory …`: conversations' memory, through the running daemon
//! (or the same services in-process), with the operations' own types.

use anyhow::Context;
use engram_config::{Loaded, Paths};
use engram_memory::ops::{
    AppendTurn, ArchiveMemory, Archived, Assemble, Conversations, ExportMemory, ForgetMemory, ForgetTenant,
    MemorySummary, Recall, RestoreMemory,
};
use engram_ops::{ConversationId, TenantId};

/// What `engram memory` does.
#[derive(Debug, clap::Subcommand)]
pub enum MemoryCommand {
    /// Append a turn to CONVERSATION (created with its first turn).
    Append {
        /// The conversation.
        conversation: ConversationId,
        /// What was said.
        text: String,
        /// Who said it.
        #[arg(long, default_value = "user")]
        speaker: String,
        /// Whose conversation (the operator's own when absent).
        #[arg(long)]
        tenant: Option<TenantId>,
        /// When it was said (Unix ms) [default: now].
        #[arg(long)]
        time_ms: Option<i64>,
        /// A label (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// How much it matters, 0 to 1 [default: 0].
        #[arg(long)]
        importance: Option<f32>,
        /// Never archive it by capacity.
        #[arg(long)]
        pin: bool,
        /// Print the stored turn as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The turns of CONVERSATION that best answer QUERY, verbatim.
    Recall {
        /// The conversation.
        conversation: ConversationId,
        /// What to recall.
        query: String,
        /// Turns to return [default: 5].
        #[arg(long, short)]
        k: Option<usize>,
        /// Whose conversation.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget CONVERSATION, one of its turns (--turn) or the turns said in
    /// a time range (--since/--until): the text and everything derived.
    Forget {
        /// The conversation.
        conversation: ConversationId,
        /// Only this turn (its ordinal).
        #[arg(long, conflicts_with_all = ["since", "until"])]
        turn: Option<u64>,
        /// Only turns said at or after this time (Unix ms).
        #[arg(long, requires = "until")]
        since: Option<i64>,
        /// Only turns said before this time (Unix ms).
        #[arg(long, requires = "since")]
        until: Option<i64>,
        /// Whose conversation.
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// Forget every conversation of a tenant (or, without --tenant, the
    /// operator's own).
    ForgetTenant {
        /// Whose.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Take turns of CONVERSATION out of recall (kept verbatim, restorable):
    /// the ordinals given, or with --capacity N the turns of least
    /// retention until N are left.
    Archive {
        /// The conversation.
        conversation: ConversationId,
        /// Ordinals of the turns to archive.
        #[arg(required_unless_present = "capacity", conflicts_with = "capacity", value_name = "ORDINAL")]
        turns: Vec<u64>,
        /// Archive down to this many turns in recall.
        #[arg(long)]
        capacity: Option<usize>,
        /// Whose conversation.
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// Bring archived turns of CONVERSATION back into recall (the ordinals
    /// given, or every archived turn), pinned so capacity keeps them.
    Restore {
        /// The conversation.
        conversation: ConversationId,
        /// Ordinals of the turns to restore [default: every archived turn].
        turns: Vec<u64>,
        /// Do not pin them (capacity may archive them again).
        #[arg(long)]
        no_pin: bool,
        /// Whose conversation.
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// CONVERSATION's compact memory: its running summary and roll-up.
    Summary {
        /// The conversation.
        conversation: ConversationId,
        /// Also every earlier version, with the turns each covered.
        #[arg(long)]
        history: bool,
        /// Whose conversation.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The prompt a model would get for MESSAGE in CONVERSATION, within
    /// the token budget, and what went in and why.
    Assemble {
        /// The conversation (it need not exist yet).
        conversation: ConversationId,
        /// The new message.
        message: String,
        /// Most tokens [default: memory.budget_tokens].
        #[arg(long)]
        budget: Option<usize>,
        /// Whose conversation.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write CONVERSATION's whole memory (every turn, every summary
    /// version) as readable JSON.
    Export {
        /// The conversation.
        conversation: ConversationId,
        /// Whose conversation.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Write to this file instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// The conversations (of a tenant, or the operator's own).
    Conversations {
        /// Whose.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `engram memory COMMAND`.
pub fn run(loaded: &Loaded, paths: &Paths, command: MemoryCommand) -> anyhow::Result<()> {
    match command {
        MemoryCommand::Append { conversation, text, speaker, tenant, time_ms, tags, importance, pin, json } => {
            let mut request = AppendTurn::new(conversation, speaker, text);
            request.tenant = tenant;
            request.time_ms = time_ms;
            request.tags = tags;
            request.importance = importance.unwrap_or(request.importance);
            request.pinned = pin;
            let turn = crate::connect::call(loaded, paths, &request)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&turn)?);
            } else {
                println!("turn {} (id {})", turn.ordinal, turn.id);
            }
        }
        MemoryCommand::Recall { conversation, query, k, tenant, json } => {
            let mut request = Recall::new(conversation, query);
            request.tenant = tenant;
            request.k = k.unwrap_or(request.k);
            let answer = crate::connect::call(loaded, paths, &request)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else if answer.turns.is_empty() {
                println!("nothing recalled");
            } else {
                if let Some(time) = &answer.time {
                    println!("(\"{}\" read as {} to {} ms)", time.phrase, time.from_ms, time.to_ms);
                }
                for recalled in answer.turns {
                    let turn = recalled.turn;
                    println!(
                        "[{:.3}] #{} {} ({} ms): {}",
                        recalled.score, turn.ordinal, turn.speaker, turn.time_ms, turn.text
                    );
                }
            }
        }
        MemoryCommand::Forget { conversation, turn, since, until, tenant } => {
            let time = since.zip(until).map(|(from, to)| [from, to]);
            let request = ForgetMemory { conversation, tenant, turn, time };
            let done = crate::connect::call(loaded, paths, &request)?;
            println!("forgot {} turns", done.turns);
        }
        MemoryCommand::Archive { conversation, turns, capacity, tenant } => {
            let request = ArchiveMemory { conversation, tenant, turns, capacity };
            let done = crate::connect::call(loaded, paths, &request)?;
            println!("archived {}", ordinals(&done));
        }
        MemoryCommand::Restore { conversation, turns, no_pin, tenant } => {
            let request = RestoreMemory { conversation, tenant, turns, pin: !no_pin };
            let done = crate::connect::call(loaded, paths, &request)?;
            println!("restored {}", ordinals(&done));
        }
        MemoryCommand::ForgetTenant { tenant, yes } => {
            anyhow::ensure!(yes, "forgetting every conversation cannot be undone: add --yes");
            let request = ForgetTenant { tenant };
            let done = crate::connect::call(loaded, paths, &request)?;
            println!("forgot {} turns", done.turns);
        }
        MemoryCommand::Summary { conversation, history, tenant, json } => {
            let request = MemorySummary { conversation, tenant, history };
            let answer = crate::connect::call(loaded, paths, &request)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let compact = &answer.compact;
            match (&compact.level2, &compact.level1) {
                (None, None) => println!("no summary yet"),
                (level2, level1) => {
                    for summary in [level2, level1].into_iter().flatten() {
                        println!("level {} (turns to {}): {}", summary.level, summary.last_ordinal, summary.text);
                    }
                }
            }
            if compact.pending_turns > 0 {
                println!("({} turns not summarized yet)", compact.pending_turns);
            }
            for summary in &answer.history {
                println!(
                    "  v level {} turns {}-{}: {}",
                    summary.level, summary.first_ordinal, summary.last_ordinal, summary.text
                );
            }
        }
        MemoryCommand::Assemble { conversation, message, budget, tenant, json } => {
            let request = Assemble { conversation, tenant, message, budget, now_ms: None };
            let answer = crate::connect::call(loaded, paths, &request)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            for message in &answer.messages {
                println!("--- {}\n{}", message.role, message.content);
            }
            println!("\n{} of {} tokens ({})", answer.tokens, answer.budget, answer.counted_with);
            for part in &answer.included {
                println!("  + {:?}{} {} tokens: {}", part.kind, turn_label(part.turn), part.tokens, part.why);
            }
            for part in &answer.left_out {
                println!("  - {:?}{}: {}", part.kind, turn_label(part.turn), part.why);
            }
        }
        MemoryCommand::Export { conversation, tenant, out } => {
            let request = ExportMemory { conversation, tenant };
            let answer = crate::connect::call(loaded, paths, &request)?;
            let text = serde_json::to_string_pretty(&answer)? + "\n";
            match out {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "wrote {} turns and {} summaries to {}",
                        answer.turns.len(),
                        answer.summaries.len(),
                        path.display()
                    );
                }
                None => print!("{text}"),
            }
        }
        MemoryCommand::Conversations { tenant, json } => {
            let request = Conversations { tenant };
            let answer = crate::connect::call(loaded, paths, &request).context("listing conversations")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else if answer.conversations.is_empty() {
                println!("no conversations yet: engram memory append CONVERSATION TEXT");
            } else {
                for c in answer.conversations {
                    let archived = if c.archived > 0 { format!(" ({} archived)", c.archived) } else { String::new() };
                    println!("{}: {} turns{archived}", c.conversation, c.turns);
                }
            }
        }
    }
    Ok(())
}

/// `N turns (a, b, …)`: what an archive or restore moved.
fn ordinals(done: &Archived) -> String {
    let shown: Vec<String> = done.turns.iter().take(20).map(u64::to_string).collect();
    let more = if done.turns.len() > shown.len() { ", …" } else { "" };
    match done.turns.len() {
        0 => "no turns".into(),
        1 => format!("turn {}", shown[0]),
        n => format!("{n} turns ({}{more})", shown.join(", ")),
    }
}

/// ` turn N` for a part that is a turn.
fn turn_label(turn: Option<u64>) -> String {
    turn.map(|t| format!(" turn {t}")).unwrap_or_default()
}

/// `engram eval memory`.
#[derive(Debug, clap::Args)]
pub struct EvalMemoryArgs {
    /// A LoCoMo JSON file (a list of samples with `conversation` and `qa`).
    #[arg(long, value_name = "FILE")]
    pub locomo: std::path::PathBuf,
    /// Where the evaluation's own journal and indexes live (emptied first)
    /// [default: <cache dir>/eval/memory].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<std::path::PathBuf>,
    /// Then archive each conversation down to this capacity (a number of
    /// turns, or a share of each conversation's: 50%) and score again.
    #[arg(long, value_name = "N|P%")]
    pub capacity: Option<engram_memory::eval::Capacity>,
    /// Also keep each conversation's compact memory with the configured
    /// model while replaying, and report how often the summary names the
    /// participants and the session's topics (slow on a CPU).
    #[arg(long)]
    pub summaries: bool,
    /// Also answer the questions (the first N; all without N) with the
    /// configured model from their assembled prompts, and report token F1
    /// against the gold answers (slow on a CPU).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0")]
    pub answer: Option<usize>,
    /// Print every figure as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `engram eval memory`.
pub fn eval(loaded: &Loaded, paths: &Paths, args: &EvalMemoryArgs) -> anyhow::Result<()> {
    use engram_memory::eval::{DEPTHS, EvalProgress};
    let request = engram_services::memory::EvalRequest {
        locomo: args.locomo.clone(),
        work_dir: args.work_dir.clone(),
        capacity: args.capacity,
        summaries: args.summaries,
        answer: args.answer,
    };
    let appending = crate::connect::terminal_bar("replaying", "turns", 0);
    let asking = crate::connect::terminal_bar("asking", "questions", 0);
    let report = engram_services::memory::eval(&loaded.config, paths, &request, &mut |event| {
        let (bar, done, total) = match event {
            EvalProgress::Appended { done, total } => (&appending, done, total),
            EvalProgress::Asked { done, total } => (&asking, done, total),
        };
        crate::connect::advance(bar, done, total);
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} conversations, {} turns (appended in {:.1}s, indexed in {:.1}s); {} questions ({} skipped: no evidence turn)",
        report.conversations,
        report.turns,
        report.append_seconds,
        report.index_seconds,
        report.questions,
        report.skipped
    );
    print_recall("evidence recall", &report.rows, report.recall_ms);
    if let Some(p) = report.prompt_tokens {
        println!(
            "assembled prompts ({}): p50 {:.0}, p95 {:.0}, max {:.0} tokens; {} over the budget of {}",
            p.counted_with, p.tokens.p50, p.tokens.p95, p.tokens.max, p.over_budget, p.budget
        );
    }
    if let Some(q) = &report.summaries {
        println!(
            "\ncompact memory ({} summaries written in {:.0}s), read after each of {} sessions: \
             names both participants {:.0}%, at least one {:.0}%; holds {:.0}% of the session's topic words",
            q.written,
            q.seconds,
            q.sessions,
            q.names_both * 100.0,
            q.names_one * 100.0,
            q.topic_recall * 100.0
        );
        for last in &q.last {
            println!("  last: {last}");
        }
    }
    if !report.answers.is_empty() {
        println!("\nanswers from the assembled prompts, token F1:");
        for row in &report.answers {
            println!("{:<14} {:>9} {:>8.3}", row.category, row.questions, row.f1);
        }
    }
    if let Some(f) = &report.forgetting {
        let capacity = match f.capacity {
            engram_memory::eval::Capacity::Turns(n) => format!("{n} turns"),
            engram_memory::eval::Capacity::Share(share) => format!("{:.0}% of the turns", share * 100.0),
        };
        let title =
            format!("\nafter forgetting to {capacity} per conversation ({} archived, {} kept)", f.archived, f.kept);
        print_recall(&title, &f.rows, f.recall_ms);
        let (before, after) = (report.recall_ms.p95, f.recall_ms.p95);
        let overall = |rows: &[engram_memory::eval::EvalRow]| rows.last().map_or(0.0, |r| r.recall_any[2]);
        println!(
            "forgetting: recall p95 {:+.0}%, recall@{} {:+.1} points",
            (after / before - 1.0) * 100.0,
            DEPTHS[2],
            (overall(&f.rows) - overall(&report.rows)) * 100.0
        );
    }
    Ok(())
}

/// A table of evidence recall by category, and the recall latency.
fn print_recall(title: &str, rows: &[engram_memory::eval::EvalRow], latency: engram_memory::eval::Latency) {
    use engram_memory::eval::DEPTHS;
    let depths: Vec<String> = DEPTHS.iter().map(|d| format!("@{d}")).collect();
    println!(
        "\n{title}: any evidence turn recalled (every evidence turn recalled)\n{:<14} {:>9} {:>15} {:>15} {:>15}",
        "category", "questions", depths[0], depths[1], depths[2]
    );
    for row in rows {
        let cell = |i: usize| format!("{:.3} ({:.3})", row.recall_any[i], row.recall_all[i]);
        println!("{:<14} {:>9} {:>15} {:>15} {:>15}", row.category, row.questions, cell(0), cell(1), cell(2));
    }
    println!("\nrecall latency: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms", latency.p50, latency.p95, latency.max);
}

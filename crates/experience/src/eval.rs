//! `engram eval experience`: learn a library from one half of a task set,
//! then run the other half in three arms — no insights, the insights a
//! lookup chooses from the learned library, and the same number of
//! insights drawn at random from it — and report pass@1 per arm with a
//! 95% Wilson interval, what learning admitted, and how often a retrieval
//! hurt (the task passed without insights and failed with them).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::learn::{Fate, Learner};
use crate::task::{Task, blocking};
use crate::{ExperienceError, Insight, Status};

/// Reads a task set: JSON lines of `{task_id, description, ground_truth}`
/// (other fields ignored); errors name the file and line.
pub fn read_tasks(path: &Path) -> Result<Vec<Task>, ExperienceError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| ExperienceError::Invalid(format!("cannot read {}: {err}", path.display())))?;
    let mut tasks = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let task: Task = serde_json::from_str(line).map_err(|err| {
            ExperienceError::Invalid(format!(
                "{}:{}: not a task ({{\"task_id\", \"description\", \"ground_truth\"}}): {err}",
                path.display(),
                n + 1
            ))
        })?;
        tasks.push(task);
    }
    if tasks.is_empty() {
        return Err(ExperienceError::Invalid(format!("{} holds no tasks", path.display())));
    }
    Ok(tasks)
}

/// Splits `tasks` into a learning and an evaluation set: a fixed shuffle
/// by `seed`, the first `learn_share` to learn from, at most `limit` in
/// each (0: all).
pub fn split(mut tasks: Vec<Task>, seed: u64, learn_share: f64, limit: usize) -> (Vec<Task>, Vec<Task>) {
    tasks.sort_by_key(|task| mix(seed ^ fnv(&task.id)));
    let at = ((tasks.len() as f64) * learn_share.clamp(0.0, 1.0)).round() as usize;
    let mut test = tasks.split_off(at.min(tasks.len()));
    let mut learn = tasks;
    if limit > 0 {
        learn.truncate(limit);
        test.truncate(limit);
    }
    (learn, test)
}

/// How an arm did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// Tasks run.
    pub tasks: usize,
    /// Tasks passed.
    pub passed: usize,
    /// `passed / tasks`.
    pub pass_at_1: f64,
    /// 95% Wilson interval of pass@1.
    pub interval: [f64; 2],
    /// Insights its prompts carried, on average.
    pub insights_per_task: f64,
}

impl Arm {
    fn of(results: &[(bool, usize)]) -> Self {
        let tasks = results.len();
        let passed = results.iter().filter(|(passed, _)| *passed).count();
        let carried: usize = results.iter().map(|(_, n)| n).sum();
        Self {
            tasks,
            passed,
            pass_at_1: if tasks == 0 { 0.0 } else { passed as f64 / tasks as f64 },
            interval: wilson(passed, tasks),
            insights_per_task: if tasks == 0 { 0.0 } else { carried as f64 / tasks as f64 },
        }
    }
}

/// What learning did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Learning {
    /// Tasks learned from.
    pub tasks: usize,
    /// Of those, passed at the first attempt.
    pub passed_first: usize,
    /// Candidates proposed by reflection.
    pub proposed: usize,
    /// Admitted (fixed their task on re-run).
    pub admitted: usize,
    /// Retired for repeating the task's numbers or answer.
    pub copied_task: usize,
    /// Merged into an active insight.
    pub merged: usize,
    /// Retired for not fixing their task.
    pub did_not_fix: usize,
    /// Proposals that were not insights.
    pub malformed: usize,
    /// Reflections that failed (the model's answer unusable).
    pub reflection_errors: usize,
    /// Seconds.
    pub seconds: f64,
}

/// The whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperienceEval {
    /// The generator.
    pub model: String,
    /// The verifier.
    pub verifier: String,
    /// The split's seed.
    pub seed: u64,
    /// Learning on the first half.
    pub learning: Learning,
    /// Active insights after learning.
    pub library: usize,
    /// The arms on the second half: `none`, `learned`, `random`.
    pub arms: BTreeMap<String, Arm>,
    /// Among evaluation tasks whose lookup chose insights, the share that
    /// passed without insights and failed with them.
    pub harmful_retrieval_rate: f64,
    /// … and the share that failed without and passed with them.
    pub helpful_retrieval_rate: f64,
    /// Evaluation tasks whose lookup chose at least one insight.
    pub retrieved_tasks: usize,
    /// Seconds for the three arms.
    pub eval_seconds: f64,
}

/// Progress of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalProgress {
    /// Learning: `done` of `total` tasks.
    Learned {
        /// Done.
        done: usize,
        /// Of.
        total: usize,
    },
    /// The arms: `done` of `total` tasks (each run in all three).
    Evaluated {
        /// Done.
        done: usize,
        /// Of.
        total: usize,
    },
}

/// One evaluation task in the three arms: passed, and insights carried.
type ArmsRow = [(bool, usize); 3];

/// Learns from `learn`, then runs `test` in the three arms, up to
/// `concurrency` tasks at once (a remote server's parallel slots).
pub async fn evaluate(
    learner: Arc<Learner>,
    learn: Vec<Task>,
    test: Vec<Task>,
    concurrency: usize,
    seed: u64,
    progress: &(dyn Fn(EvalProgress) + Sync),
) -> Result<ExperienceEval, ExperienceError> {
    let started = Instant::now();
    let total = learn.len();
    let learned = run_all(learn, concurrency, |done| progress(EvalProgress::Learned { done, total }), {
        let learner = learner.clone();
        move |task| {
            let learner = learner.clone();
            async move { learner.learn(&task).await }
        }
    })
    .await?;
    let mut learning =
        Learning { tasks: learned.len(), seconds: started.elapsed().as_secs_f64(), ..Learning::default() };
    for one in &learned {
        learning.passed_first += usize::from(one.attempt.verdict.passed);
        learning.reflection_errors += usize::from(one.reflection_error.is_some());
        for fate in &one.candidates {
            learning.proposed += 1;
            match fate {
                Fate::Admitted { .. } => learning.admitted += 1,
                Fate::CopiesTask { .. } => learning.copied_task += 1,
                Fate::Merged { .. } => learning.merged += 1,
                Fate::DidNotFix { .. } => learning.did_not_fix += 1,
                Fate::Malformed { .. } => learning.malformed += 1,
            }
        }
    }
    let library: Vec<Insight> = {
        let experience = learner.experience.clone();
        blocking(move || Ok(experience.library()?.into_values().filter(|i| i.status == Status::Active).collect()))
            .await?
    };

    let started = Instant::now();
    let total = test.len();
    let library = Arc::new(library);
    let rows = run_all(
        test.into_iter().enumerate().collect(),
        concurrency,
        |done| progress(EvalProgress::Evaluated { done, total }),
        {
            let (learner, library) = (learner.clone(), library.clone());
            move |(n, task): (usize, Task)| {
                let (learner, library) = (learner.clone(), library.clone());
                async move {
                    let none = learner.attempt(&task, &[]).await;
                    let (learned, _) = learner.run(&task).await?;
                    let drawn = draw(&library, learned.insights.len(), mix(seed ^ n as u64));
                    let random = learner.attempt(&task, &drawn).await;
                    Ok([
                        (none.verdict.passed, 0),
                        (learned.verdict.passed, learned.insights.len()),
                        (random.verdict.passed, drawn.len()),
                    ])
                }
            }
        },
    )
    .await?;
    let arm = |i: usize| Arm::of(&rows.iter().map(|row| row[i]).collect::<Vec<_>>());
    let retrieved: Vec<&ArmsRow> = rows.iter().filter(|row| row[1].1 > 0).collect();
    let share = |hit: &dyn Fn(&ArmsRow) -> bool| {
        if retrieved.is_empty() {
            0.0
        } else {
            retrieved.iter().filter(|row| hit(row)).count() as f64 / retrieved.len() as f64
        }
    };
    Ok(ExperienceEval {
        model: learner.generator.name(),
        verifier: learner.verifier.name(),
        seed,
        learning,
        library: library.len(),
        arms: BTreeMap::from([
            ("none".to_owned(), arm(0)),
            ("learned".to_owned(), arm(1)),
            ("random".to_owned(), arm(2)),
        ]),
        harmful_retrieval_rate: share(&|row| row[0].0 && !row[1].0),
        helpful_retrieval_rate: share(&|row| !row[0].0 && row[1].0),
        retrieved_tasks: retrieved.len(),
        eval_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs `work` on every item, at most `concurrency` at once, in item
/// order in the result; `tick` hears how many are done.
async fn run_all<I, T, F, Fut>(
    items: Vec<I>,
    concurrency: usize,
    tick: impl Fn(usize),
    work: F,
) -> Result<Vec<T>, ExperienceError>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = Result<T, ExperienceError>> + Send + 'static,
{
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut running = tokio::task::JoinSet::new();
    let total = items.len();
    for (n, item) in items.into_iter().enumerate() {
        let permit = gate.clone().acquire_owned().await.map_err(|err| ExperienceError::Panicked(err.to_string()))?;
        let future = work(item);
        running.spawn(async move {
            let result = future.await;
            drop(permit);
            (n, result)
        });
    }
    let mut results: Vec<Option<T>> = (0..total).map(|_| None).collect();
    let mut done = 0;
    while let Some(joined) = running.join_next().await {
        let (n, result) = joined.map_err(|err| ExperienceError::Panicked(format!("a task panicked: {err}")))?;
        results[n] = Some(result?);
        done += 1;
        tick(done);
    }
    Ok(results.into_iter().flatten().collect())
}

/// `n` insights of `library` drawn without replacement by `seed`.
fn draw(library: &[Insight], n: usize, seed: u64) -> Vec<Insight> {
    let mut order: Vec<(u64, &Insight)> =
        library.iter().enumerate().map(|(i, insight)| (mix(seed ^ (i as u64).wrapping_mul(0x9e37)), insight)).collect();
    order.sort_by_key(|(key, _)| *key);
    order.into_iter().take(n).map(|(_, insight)| insight.clone()).collect()
}

/// The 95% Wilson score interval of `k` successes in `n` trials.
pub fn wilson(k: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let (k, n, z) = (k as f64, n as f64, 1.959_963_984_540_054_f64);
    let p = k / n;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    // The closed forms at the ends (the arithmetic leaves a rounding error).
    let lower = if k == 0.0 { 0.0 } else { (centre - half).max(0.0) };
    let upper = if k == n { 1.0 } else { (centre + half).min(1.0) };
    [lower, upper]
}

/// SplitMix64's finalizer: a fixed, well-mixed function of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a of `text`.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_intervals_match_the_textbook() {
        let [lo, hi] = wilson(8, 10);
        assert!((lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3, "{lo} {hi}");
        assert_eq!(wilson(0, 0), [0.0, 1.0]);
        assert_eq!(wilson(0, 20)[0], 0.0);
        assert_eq!((wilson(0, 100)[0], wilson(100, 100)[1]), (0.0, 1.0));
    }

    #[test]
    fn the_split_is_fixed_by_the_seed_and_disjoint() {
        let tasks: Vec<Task> =
            (0..10).map(|i| Task { id: format!("t{i}"), text: String::new(), answer: 0.0 }).collect();
        let (learn, test) = split(tasks.clone(), 7, 0.5, 0);
        assert_eq!((learn.len(), test.len()), (5, 5));
        assert!(learn.iter().all(|l| !test.iter().any(|t| t.id == l.id)));
        assert_eq!(split(tasks.clone(), 7, 0.5, 0).0, learn);
        assert_ne!(split(tasks.clone(), 8, 0.5, 0).0, learn);
        assert_eq!(split(tasks, 7, 0.5, 2).1.len(), 2);
    }
}

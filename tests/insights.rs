//! The experience library end to end: `engram insights` against a running
//! daemon, through the operations' routes.

mod support;

use support::Sandbox;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn insights_are_imported_listed_edited_and_retired_through_the_daemon() {
    let sandbox = Sandbox::new();
    let models = support::models_dir().display().to_string();
    let daemon = sandbox.start(&[("ENGRAM_MODELS__DIR", models.as_str())]);
    let run = |args: &[&str]| {
        let output = sandbox.run(args, &[("USER", "ana")]);
        (output.status.success(), text(&output.stdout), text(&output.stderr))
    };
    let written = sandbox.path().join("written");
    std::fs::create_dir_all(&written).unwrap();
    std::fs::write(
        written.join("capacity.toml"),
        "status = \"active\"\ntaxonomy = \"formulation/constraints/capacity\"\n\
         condition = \"Several products share one warehouse\"\n\
         explanation = \"The capacity bounds their sum, not each product.\"\nexample = \"x1 + x2 <= 500\"\n",
    )
    .unwrap();
    let (ok, out, err) = run(&["insights", "import", written.to_str().unwrap()]);
    assert!(ok && out.contains("1 created"), "{out}{err}");
    let (ok, out, _) = run(&["insights", "list"]);
    assert!(ok && out.contains("ins-1") && out.contains("formulation/constraints/capacity"), "{out}");

    // Exported, edited by hand, imported: one edit, by its editor.
    let exported = sandbox.path().join("exported");
    let (ok, out, err) = run(&["insights", "export", exported.to_str().unwrap()]);
    assert!(ok && out.contains("1 insights written"), "{out}{err}");
    let file = exported.join("ins-1.toml");
    let edited = std::fs::read_to_string(&file).unwrap().replace("share one warehouse", "share one storage room");
    std::fs::write(&file, edited).unwrap();
    let (ok, out, err) = run(&["insights", "import", exported.to_str().unwrap()]);
    assert!(ok && out.contains("1 changed"), "{out}{err}");
    let (ok, out, _) = run(&["insights", "show", "ins-1"]);
    assert!(ok && out.contains("share one storage room") && out.contains("by ana: edited condition"), "{out}");
    let (ok, out, err) = run(&["insights", "edit", "ins-1", "--example", "x1 + x2 + x3 <= 500", "--editor", "bo"]);
    assert!(ok && out.contains("(version 3)"), "{out}{err}");
    let (ok, _, err) = run(&["insights", "edit", "ins-1", "--editor", "bo"]);
    assert!(!ok && err.contains("changes nothing"), "{err}");
    let (ok, out, _) = run(&["insights", "history", "ins-1"]);
    assert!(ok && out.contains("by bo: edited example"), "{out}");

    // A task finds it by its condition; its outcome is counted.
    let (ok, out, err) = run(&[
        "insights",
        "lookup",
        "Tables and chairs go into one shared storage room. Maximize profit.",
        "--no-check",
    ]);
    assert!(ok && out.contains("lookup 1: 1 of 1 candidates chosen (by similarity)"), "{out}{err}");
    assert!(
        out.contains("- [ins-1] formulation/constraints/capacity") && out.contains("When: Several products"),
        "{out}"
    );
    let (ok, out, err) = run(&["insights", "feedback", "1", "--passed", "--diagnosis", "the model solved"]);
    assert!(ok && out.contains("lookup 1: passed"), "{out}{err}");
    let (ok, _, err) = run(&["insights", "feedback", "7", "--passed"]);
    assert!(!ok && err.contains("no insight lookup 7"), "{err}");
    let (_, out, _) = run(&["insights", "show", "ins-1"]);
    assert!(out.contains("retrieved 1, helped 1, hurt 0"), "{out}");
    // Its record shows it helped where it was used: evolution leaves it be.
    let (ok, out, err) = run(&["insights", "evolve", "--dry-run"]);
    assert!(
        ok && out.contains("1 insights judged by their record (dry run: nothing recorded): 0 rewritten, 0 kept"),
        "{out}{err}"
    );
    // Any version comes back, as a new event.
    let (ok, out, err) = run(&["insights", "revert", "ins-1", "--version", "1"]);
    assert!(ok && out.contains("(version 4)"), "{out}{err}");
    let (_, out, _) = run(&["insights", "show", "ins-1"]);
    assert!(out.contains("share one warehouse") && out.contains("x1 + x2 <= 500\n"), "{out}");

    // Retired with a reason; listed by status.
    let (ok, _, err) = run(&["insights", "retire", "ins-1", "--reason", "superseded"]);
    assert!(ok, "{err}");
    let (_, out, _) = run(&["insights", "list", "--status", "retired"]);
    assert!(out.contains("ins-1"), "{out}");
    let (_, out, _) = run(&["insights", "list", "--status", "active"]);
    assert!(out.contains("no insights"), "{out}");

    // Bad input: a malformed file is named with its line; an unknown id.
    std::fs::write(exported.join("broken.toml"), "status = \"active\"\nthis is not toml\n").unwrap();
    let (ok, _, err) = run(&["insights", "import", exported.to_str().unwrap()]);
    assert!(!ok && err.contains("broken.toml:2"), "{err}");
    let (ok, _, err) = run(&["insights", "show", "ins-404"]);
    assert!(!ok && err.contains("no insight `ins-404`"), "{err}");
    drop(daemon);
}

#[test]
fn the_experience_evaluation_runs_the_real_model_and_plugin_and_names_bad_task_lines() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.path().join("plugins");
    support::copy_dir(&support::plugins_dir().join("lp"), &plugins.join("lp"));
    let models = support::models_dir().display().to_string();
    let env = [("ENGRAM_MODELS__DIR", models.as_str()), ("ENGRAM_PLUGINS__DIR", plugins.to_str().unwrap())];
    let tasks = sandbox.path().join("tasks.jsonl");
    let task = |id: &str, answer: f64| {
        serde_json::json!({"task_id": id, "source": "here", "ground_truth": answer, "description":
            "A workshop makes chairs (30 yuan profit each) and tables (50 yuan). A chair takes 2 hours and a table \
             4; 120 hours are available. One warehouse holds 40 pieces in all. Maximize the profit."})
        .to_string()
    };
    std::fs::write(&tasks, [task("a", 1600.0), task("b", 1600.0), task("c", 1600.0)].join("\n")).unwrap();
    let work = sandbox.path().join("work");
    let output = sandbox.run(
        &["eval", "experience", "--tasks", tasks.to_str().unwrap(), "--limit", "1", "--json"]
            .into_iter()
            .chain(["--work-dir", work.to_str().unwrap()])
            .collect::<Vec<_>>(),
        &env,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["verifier"], "lp.solve", "{report}");
    assert!(report["model"].as_str().unwrap().to_lowercase().contains("smollm2"), "{report}");
    assert_eq!(report["learning"]["tasks"], 1, "{report}");
    for arm in ["none", "learned", "random"] {
        assert_eq!(report["arms"][arm]["tasks"], 1, "{report}");
    }
    assert!(work.join("journal.sqlite3").is_file());

    std::fs::write(&tasks, format!("{}\n{{\"task_id\": \"b\"}}\n", task("a", 1.0))).unwrap();
    let output = sandbox.run(&["eval", "experience", "--tasks", tasks.to_str().unwrap()], &env);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("tasks.jsonl:2: not a task"), "{}", text(&output.stderr));
}

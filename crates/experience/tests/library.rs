//! The experience library on a real journal: the library is the fold of
//! its events, and its files round-trip a person's edits.

use engram_experience::files::{self, FilesError};
use engram_experience::record::{NewRetrieval, Weighed};
use engram_experience::{Change, Counters, Experience, ExperienceError, Provenance, Status, Text, fold};
use engram_store::{Store, StoreOptions};

fn library() -> (Experience, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("engram.db"), &StoreOptions::default()).unwrap();
    (Experience::new(store), dir)
}

fn text(taxonomy: &str, condition: &str) -> Text {
    Text {
        taxonomy: taxonomy.to_owned(),
        condition: condition.to_owned(),
        explanation: "Capacity limits bind the sum over products, not each product.".to_owned(),
        example: "Two products share 500 units of storage: x1 + x2 <= 500.".to_owned(),
    }
}

#[test]
fn the_library_is_the_fold_of_its_events_byte_for_byte() {
    let (experience, _dir) = library();
    let provenance =
        Provenance { task: Some("B015".into()), failure: Some("objective 2400, expected 2800".into()), model: None };
    let first = experience
        .create(
            "learner",
            text("formulation/constraints/capacity", "A shared warehouse"),
            Status::Candidate,
            provenance,
        )
        .unwrap();
    assert_eq!((first.id.as_str(), first.version), ("ins-1", 1));
    let second = experience
        .create(
            "ana",
            text("formulation/objective", "Profit from sales minus purchases"),
            Status::Active,
            Provenance::default(),
        )
        .unwrap();
    experience.set_status("learner", &first.id, Status::Active, "fixed B015 on re-run").unwrap();
    let counted = Change::Counted(Counters { retrieved: 3, helped: 2, hurt: 1, missed: 0 });
    let edit = Change::Edited {
        taxonomy: None,
        condition: Some("Products share one capacity".into()),
        explanation: None,
        example: None,
    };
    experience.record("ana", vec![(Some(second.id.clone()), counted), (Some(first.id.clone()), edit)]).unwrap();

    let now = experience.library().unwrap();
    assert_eq!(now[&first.id].text.condition, "Products share one capacity");
    assert_eq!((now[&first.id].version, now[&first.id].status), (3, Status::Active));
    assert_eq!((now[&second.id].counters.helped, now[&second.id].version), (2, 1));
    // Rebuilt from the events read back: identical, to the byte.
    let events = experience.events(None).unwrap();
    assert_eq!(events.len(), 5);
    let rebuilt = fold(&events).unwrap();
    assert_eq!(serde_json::to_string(&rebuilt).unwrap(), serde_json::to_string(&now).unwrap());
    // One insight's history, with who changed it.
    let history = experience.events(Some(&first.id)).unwrap();
    let editors: Vec<&str> = history.iter().map(|e| e.editor.as_str()).collect();
    assert_eq!(editors, ["learner", "learner", "ana"]);
}

#[test]
fn bad_changes_are_refused_whole_and_name_what_is_wrong() {
    let (experience, _dir) = library();
    let good = experience
        .create("ana", text("formulation/objective", "Profit"), Status::Active, Provenance::default())
        .unwrap();
    let err = experience
        .create("ana", text("Formulation Objective", "x"), Status::Active, Provenance::default())
        .unwrap_err();
    assert!(err.to_string().contains("`taxonomy`"), "{err}");
    let err = experience.set_status("ana", "ins-99", Status::Retired, "gone").unwrap_err();
    assert!(matches!(err, ExperienceError::UnknownInsight(ref id) if id == "ins-99"), "{err}");
    let err = experience.set_status("ana", &good.id, Status::Retired, " ").unwrap_err();
    assert!(err.to_string().contains("reason"), "{err}");
    // A batch with one bad change writes nothing.
    let batch = vec![
        (Some(good.id.clone()), Change::Status { status: Status::Retired, reason: "old".into() }),
        (Some("ins-404".to_owned()), Change::Status { status: Status::Retired, reason: "old".into() }),
    ];
    assert!(experience.record("ana", batch).is_err());
    assert_eq!(experience.get(&good.id).unwrap().status, Status::Active);
    assert_eq!(experience.events(None).unwrap().len(), 1);
}

#[test]
fn export_edit_import_round_trips_without_loss() {
    let (experience, dir) = library();
    let a = experience
        .create(
            "learner",
            text("formulation/constraints/capacity", "A shared warehouse"),
            Status::Active,
            Provenance::default(),
        )
        .unwrap();
    let multiline = Text {
        example: "max 9*s1 - 8*p1\ns.t. stock1 = 200 + p1 - s1\n      stock1 <= 500".into(),
        ..text("formulation/inventory", "Stock carries over months")
    };
    let b = experience.create("learner", multiline, Status::Candidate, Provenance::default()).unwrap();
    let folder = dir.path().join("insights");
    assert_eq!(files::export(&experience.library().unwrap(), &folder).unwrap(), 2);
    let path_a = folder.join(format!("{}.toml", a.id));
    let path_b = folder.join(format!("{}.toml", b.id));
    let before = std::fs::read_to_string(&path_b).unwrap();
    assert!(
        std::fs::read_to_string(folder.join(files::TAXONOMY_FILE)).unwrap().contains("\"formulation/inventory\" = 1")
    );

    // Nothing edited: nothing recorded.
    let report = files::import(&experience, &folder, "ana").unwrap();
    assert_eq!((report.unchanged, report.changed.len(), report.created.len()), (2, 0, 0));
    assert_eq!(experience.events(None).unwrap().len(), 2);

    // A person edits one condition and activates the other; and adds one.
    let edited =
        std::fs::read_to_string(&path_a).unwrap().replace("A shared warehouse", "Several products share one warehouse");
    std::fs::write(&path_a, edited).unwrap();
    std::fs::write(&path_b, before.replace("status = \"candidate\"", "status = \"active\"")).unwrap();
    std::fs::write(
        folder.join("new.toml"),
        "status = \"candidate\"\ntaxonomy = \"solver/integrality\"\ncondition = \"Counts of items\"\nexplanation = \"Items are whole.\"\n",
    )
    .unwrap();
    let report = files::import(&experience, &folder, "ana").unwrap();
    assert_eq!(report.changed, [a.id.clone(), b.id.clone()]);
    assert_eq!(report.created, ["ins-5"]);
    let now = experience.library().unwrap();
    assert_eq!(now[&a.id].text.condition, "Several products share one warehouse");
    assert_eq!((now[&b.id].status, now[&b.id].text.example.lines().count()), (Status::Active, 3));
    let last = experience.events(Some(&b.id)).unwrap().pop().unwrap();
    assert_eq!(last.editor, "ana");
    assert!(matches!(&last.change, Change::Status { reason, .. } if reason.contains(&format!("{}.toml", b.id))));

    // Exported again, an unchanged insight's file is the same to the byte.
    let again = dir.path().join("again");
    files::export(&experience.library().unwrap(), &again).unwrap();
    let a_again = std::fs::read_to_string(again.join(format!("{}.toml", a.id))).unwrap();
    assert!(a_again.contains("version = 2"));
    files::export(&experience.library().unwrap(), &folder).unwrap();
    assert_eq!(std::fs::read_to_string(&path_a).unwrap(), a_again);

    // An edit of a stale export is refused: it would undo a newer change.
    let stale = before.replace("Stock carries over months", "Stock moves between months");
    std::fs::write(&path_b, stale).unwrap();
    let err = files::import(&experience, &folder, "ana").unwrap_err();
    assert!(err.to_string().contains("changed since this file was written"), "{err}");
}

#[test]
fn malformed_files_are_named_with_their_line() {
    let (experience, dir) = library();
    let folder = dir.path().join("insights");
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("broken.toml");
    std::fs::write(
        &path,
        "status = \"active\"\ntaxonomy = \"a/b\"\ncondition = \"c\"\nexplanation = \"e\"\nsatus = 1\n",
    )
    .unwrap();
    match files::import(&experience, &folder, "ana").unwrap_err() {
        FilesError::Parse { path: at, line, message } => {
            assert_eq!((at, line), (path.clone(), 5), "{message}");
            assert!(message.contains("satus"), "{message}");
        }
        other => panic!("{other}"),
    }
    std::fs::write(
        &path,
        "id = \"ins-7\"\nstatus = \"active\"\ntaxonomy = \"a/b\"\ncondition = \"c\"\nexplanation = \"e\"\n",
    )
    .unwrap();
    let err = files::import(&experience, &folder, "ana").unwrap_err();
    assert!(
        err.to_string().starts_with(&path.display().to_string()) && err.to_string().contains("no insight `ins-7`"),
        "{err}"
    );
    std::fs::write(&path, "status = \"sometimes\"\ntaxonomy = \"a/b\"\ncondition = \"c\"\nexplanation = \"e\"\n")
        .unwrap();
    let err = files::import(&experience, &folder, "ana").unwrap_err();
    assert!(matches!(&err, FilesError::Parse { line: 1, .. }), "{err}");
    assert!(experience.events(None).unwrap().is_empty(), "nothing was recorded");
}

#[test]
fn concurrent_writers_lose_nothing() {
    let (experience, _dir) = library();
    let insight = experience
        .create("ana", text("formulation/objective", "Profit"), Status::Active, Provenance::default())
        .unwrap();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (experience, id) = (experience.clone(), insight.id.clone());
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let counted = Change::Counted(Counters { retrieved: 1, helped: 1, hurt: 0, missed: 0 });
                    experience.record("client", vec![(Some(id.clone()), counted)]).unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(experience.get(&insight.id).unwrap().counters.helped, 100);
}

#[test]
fn concurrent_feedback_from_several_clients_is_all_counted_on_the_callers_own_lookups() {
    let (experience, _dir) = library();
    let insight = experience
        .create("ana", text("formulation/objective", "Profit"), Status::Active, Provenance::default())
        .unwrap();
    let chosen = [insight.id.clone()];
    let lookup = |tenant: &str| {
        experience
            .record_retrieval(&NewRetrieval {
                tenant,
                task_id: "t",
                task: "maximize profit",
                candidates: &[Weighed { id: insight.id.clone(), score: 1.0 }],
                chosen: &chosen,
                checked: false,
            })
            .unwrap()
    };
    let lookups: Vec<u64> = (0..8).map(|_| lookup("acme")).collect();
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (experience, lookups) = (experience.clone(), lookups.clone());
            std::thread::spawn(move || {
                for (n, retrieval) in lookups.iter().enumerate() {
                    let passed = (n + client) % 2 == 0;
                    experience.record_outcome("acme", *retrieval, passed, &format!("client-{client}"), "").unwrap();
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let counters = experience.get(&insight.id).unwrap().counters;
    assert_eq!((counters.retrieved, counters.helped, counters.hurt), (8, 16, 16));
    let retrievals = experience.retrievals().unwrap();
    assert!(retrievals.iter().all(|r| r.outcomes.len() == 4 && r.tenant == "acme"));
    // Another tenant's feedback on acme's lookup finds no lookup of its own.
    let err = experience.record_outcome("bolt", lookups[0], true, "client", "").unwrap_err();
    assert!(matches!(err, ExperienceError::UnknownRetrieval(n) if n == lookups[0]), "{err}");
    assert_eq!(experience.get(&insight.id).unwrap().counters.helped, 16, "nothing was counted");
    // The counters are events too: the fold of them all agrees.
    assert_eq!(fold(&experience.events(None).unwrap()).unwrap()[&insight.id].counters, counters);
}

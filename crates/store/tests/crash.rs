//! Acknowledged writes survive `kill -9` of the writing process.
//!
//! The test re-runs its own binary as a writer process that commits changes
//! in a loop and prints each sequence number once `Store::write` returned
//! (the acknowledgement). The parent kills it with SIGKILL mid-stream, then
//! reopens the journal and checks that every acknowledged change is there.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use engram_store::{Entity, Op, Seq, Store, StoreOptions};

const WRITER_ENV: &str = "ENGRAM_TEST_CRASH_WRITER";

/// The writer half: runs only when the parent sets `WRITER_ENV`.
#[test]
fn crash_writer_process() {
    let Ok(path) = std::env::var(WRITER_ENV) else { return };
    let store = Store::open(path.as_ref(), &StoreOptions::default()).unwrap();
    // Bounded, so an orphaned writer stops by itself; the parent kills it long before.
    for i in 0..100_000 {
        let seq = store.write(|tx| tx.record(Entity::Turn, &format!("turn-{i}"), Op::Upsert)).unwrap();
        // Straight to the pipe: libtest captures `println!` even with --nocapture.
        let mut out = std::io::stdout().lock();
        writeln!(out, "ack {}", seq.0).and_then(|()| out.flush()).unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if std::env::var(WRITER_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite3");
    let mut acked: Vec<i64> = Vec::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_writer_process", "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let target = 200 * (round + 1);
        let mut this_round = 0;
        while this_round < target {
            let line = lines.next().expect("writer ended early").unwrap();
            // libtest's "test crash_writer_process ... " may precede the first ack.
            if let Some(seq) = line.find("ack ").map(|at| &line[at + 4..]) {
                acked.push(seq.parse().unwrap());
                this_round += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL, mid-write
        child.wait().unwrap();
        // Acknowledgements that were already in the pipe count too.
        for line in lines.map_while(Result::ok) {
            // libtest's "test crash_writer_process ... " may precede the first ack.
            if let Some(seq) = line.find("ack ").map(|at| &line[at + 4..]) {
                acked.push(seq.parse().unwrap());
            }
        }
    }

    let store = Store::open(&path, &StoreOptions::default()).unwrap();
    let stored: std::collections::HashSet<i64> =
        store.changes_since(Seq::ZERO, usize::MAX).unwrap().into_iter().map(|c| c.seq.0).collect();
    let lost: Vec<i64> = acked.iter().copied().filter(|seq| !stored.contains(seq)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(10)]);
    assert!(acked.windows(2).all(|w| w[0] < w[1]), "sequence went backwards across crashes");
    assert!(acked.len() >= 1200);
}

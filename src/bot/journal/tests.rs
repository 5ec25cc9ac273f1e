//! The journal against a real folder: durability before the answer, replay of exactly
//! the unanswered messages, torn tails, the old inbox, group commit and a full disk.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::*;
use crate::config::ConversationKind;
use crate::dingtalk::InboundContent;

fn message(id: &str) -> Inbound {
    Inbound {
        msg_id: id.to_string(),
        conversation_id: format!("cid{id}=="),
        conversation_kind: ConversationKind::Group,
        conversation_title: None,
        sender_id: "s".into(),
        sender_staff_id: Some("1".into()),
        sender_nick: "n".into(),
        content: InboundContent::Text(format!("text of {id}")),
        session_webhook: None,
        session_webhook_expires_ms: None,
        received_at_ms: 1,
    }
}

fn open(state: &Path) -> (Opened, mpsc::UnboundedReceiver<Inbound>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Journal::open_with(state, tx, Duration::ZERO).expect("journal opens"),
        rx,
    )
}

fn ids(msgs: &[Inbound]) -> Vec<&str> {
    msgs.iter().map(|m| m.msg_id.as_str()).collect()
}

#[tokio::test]
async fn a_message_is_durable_when_admitted_and_only_unanswered_ones_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (opened, mut rx) = open(dir.path());
    assert!(opened.pending.is_empty());
    let j = opened.journal;
    assert_eq!(j.admit(message("m1")).await.unwrap(), Admission::New);
    assert_eq!(j.admit(message("m2")).await.unwrap(), Admission::New);
    assert_eq!(j.admit(message("m1")).await.unwrap(), Admission::Duplicate);
    assert_eq!(rx.recv().await.unwrap().msg_id, "m1");
    assert_eq!(rx.recv().await.unwrap().msg_id, "m2");
    assert!(rx.try_recv().is_err(), "a duplicate reached the bot");
    j.done("m1", Instant::now());
    assert_eq!(j.admit(message("m1")).await.unwrap(), Admission::Duplicate);
    j.flush().await;
    assert_eq!(j.report().pending, 1);
    assert!(j.report().done_window_us_p99.is_some());
    drop(j);

    let (opened, _rx) = open(dir.path());
    assert_eq!(
        ids(&opened.pending),
        ["m2"],
        "replay must skip answered ids"
    );
    let j = opened.journal;
    assert_eq!(j.admit(message("m1")).await.unwrap(), Admission::Duplicate);
    assert_eq!(j.admit(message("m2")).await.unwrap(), Admission::Duplicate);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_records_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (opened, _rx) = open(dir.path());
    for id in ["a", "b"] {
        opened.journal.admit(message(id)).await.unwrap();
    }
    drop(opened);
    let log = dir.path().join("journal/journal.log");
    let whole = scan(&std::fs::read(&log).unwrap()).1;
    let mut torn = Vec::new();
    encode(
        &Record::Accepted {
            id: "c".into(),
            msg: Box::new(message("c")),
        },
        &mut torn,
    );
    torn.truncate(torn.len() / 2);
    // The torn record lands where the next record would go (in the preallocated zeros).
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.truncate(whole);
    bytes.extend_from_slice(&torn);
    bytes.extend_from_slice(&[0u8; 100]);
    std::fs::write(&log, &bytes).unwrap();

    let (opened, _rx) = open(dir.path());
    assert_eq!(ids(&opened.pending), ["a", "b"]);
    let after = std::fs::read(&log).unwrap();
    assert_eq!(scan(&after).1, whole);
    assert!(
        after[whole..].iter().all(|b| *b == 0),
        "torn tail not cleared"
    );
    opened.journal.admit(message("d")).await.unwrap();
    drop(opened);
    let (opened, _rx) = open(dir.path());
    assert_eq!(ids(&opened.pending), ["a", "b", "d"]);
}

#[tokio::test]
async fn one_sync_covers_every_message_that_arrived_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let opened = Journal::open_with(dir.path(), tx, Duration::from_millis(50)).unwrap();
    let j = opened.journal;
    // The first one starts a (slow) sync; the 199 others queue up meanwhile.
    let waits: Vec<_> = (0..200)
        .map(|i| j.admit(message(&format!("g{i}"))))
        .collect();
    for w in waits {
        assert_eq!(w.await.unwrap(), Admission::New);
    }
    let r = j.report();
    assert_eq!(r.records, 200);
    assert!(
        r.commits <= 3,
        "one sync per message: {} commits",
        r.commits
    );
}

#[tokio::test]
async fn an_answered_mark_is_written_at_once_even_while_a_slow_sync_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let opened = Journal::open_with(dir.path(), tx, Duration::from_millis(300)).unwrap();
    let j = opened.journal;
    j.admit(message("m1")).await.unwrap();
    // m2's sync is under way (300 ms) when m1 is marked answered.
    let m2 = j.admit(message("m2"));
    j.done("m1", Instant::now());
    let deadline = Instant::now() + Duration::from_secs(5);
    while j.report().done_window_us_max.is_none() {
        assert!(Instant::now() < deadline, "{:?}", j.report());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let window = j.report().done_window_us_max.unwrap();
    assert!(
        window < 100_000,
        "the answered mark waited {window} us behind a sync"
    );
    assert_eq!(m2.await.unwrap(), Admission::New);
}

#[tokio::test]
async fn the_old_inbox_is_migrated_once_and_a_fifo_never_blocks_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_path_buf();
    let inbox = state.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    // A file name that is not its id's hash: v0.1 answered it on every start.
    std::fs::write(
        inbox.join("0000000000000000000000000000beef.json"),
        serde_json::to_vec(&("old1", message("old1"))).unwrap(),
    )
    .unwrap();
    std::fs::write(
        inbox.join("1111.json"),
        serde_json::to_vec(&("old2", message("old2"))).unwrap(),
    )
    .unwrap();
    std::fs::write(state.join("inbox-done.log"), "old2\n").unwrap();
    std::fs::write(inbox.join("2222.tmp"), b"").unwrap();
    nix::unistd::mkfifo(&inbox.join("fifo.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();

    // Opening must finish even with the FIFO there (bounded wait instead of a hang).
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let st = state.clone();
    std::thread::spawn(move || {
        let (tx, _rx) = mpsc::unbounded_channel();
        let opened = Journal::open_with(&st, tx, Duration::ZERO).map(|o| ids(&o.pending).join(","));
        let _ = done_tx.send(opened);
    });
    let pending = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("opening the journal hung on a FIFO")
        .unwrap();
    assert_eq!(pending, "old1", "answered old2 must not be replayed");
    assert!(!inbox.join("0000000000000000000000000000beef.json").exists());
    assert!(!inbox.join("2222.tmp").exists(), "0-byte tmp left behind");
    assert!(!state.join("inbox-done.log").exists());
    assert!(
        inbox.join("fifo.json").exists(),
        "a FIFO is skipped, not touched"
    );

    // Once answered, it is gone for good: not migrated again, not replayed again.
    let (opened, _rx) = open(&state);
    assert_eq!(ids(&opened.pending), ["old1"]);
    opened.journal.done("old1", Instant::now());
    opened.journal.flush().await;
    drop(opened);
    let (opened, _rx) = open(&state);
    assert!(opened.pending.is_empty());
    assert_eq!(
        opened.journal.admit(message("old2")).await.unwrap(),
        Admission::Duplicate
    );
}

#[test]
fn a_journal_path_that_is_a_fifo_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("journal")).unwrap();
    let log = dir.path().join("journal/journal.log");
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = Journal::open_with(dir.path(), tx, Duration::ZERO)
        .err()
        .expect("a FIFO journal must be refused")
        .to_string();
    assert!(
        err.contains(&log.display().to_string()) && err.contains("FIFO"),
        "{err}"
    );
}

/// A small tmpfs mounted on `at`, unmounted on drop. Needs root (CAP_SYS_ADMIN).
pub(crate) struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub(crate) fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (this suite runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}

/// Fills the file system of `dir` until a write fails; returns the filler's path.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    for _ in 0..100_000 {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
    path
}

#[tokio::test]
async fn a_full_disk_refuses_new_messages_and_keeps_answered_ones_answered() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _fs = Tmpfs::mount(&state, "256k");
    let (opened, _rx) = open(&state);
    let j = opened.journal;
    // Records bigger than a page, so the slack of the file's last page cannot hold them.
    let m1 = format!("m1{}", "x".repeat(5000));
    let mut m2 = message("m2");
    m2.content = InboundContent::Text("y".repeat(16_000));
    assert_eq!(j.admit(message(&m1)).await.unwrap(), Admission::New);
    let filler = fill(&state);

    let err = j
        .admit(m2.clone())
        .await
        .expect_err("stored on a full disk");
    assert!(err.to_string().contains("journal.log"), "{err}");
    j.done(&m1, Instant::now());
    // The answered mark could not be written: it waits for a retry, and m1 stays answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    while j.report().done_retry_queue != 1 {
        assert!(Instant::now() < deadline, "{:?}", j.report());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(j.admit(message(&m1)).await.unwrap(), Admission::Duplicate);
    let r = j.report();
    assert!(r.failed_accepts >= 1 && r.last_error.is_some(), "{r:?}");

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while j.report().done_retry_queue != 0 {
        assert!(
            Instant::now() < deadline,
            "answered mark never retried: {:?}",
            j.report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(j.admit(m2).await.unwrap(), Admission::New);
    j.flush().await;
    drop(j);

    // The file holds whole records only, and m1 is answered for good.
    let bytes = std::fs::read(state.join("journal/journal.log")).unwrap();
    let valid = scan(&bytes).1;
    assert!(
        bytes[valid..].iter().all(|b| *b == 0),
        "a failed write left a torn record"
    );
    let (opened, _rx) = open(&state);
    assert_eq!(ids(&opened.pending), ["m2"]);
}

#[tokio::test]
async fn a_mostly_answered_journal_is_compacted_and_keeps_what_is_live() {
    let dir = tempfile::tempdir().unwrap();
    let (opened, _rx) = open(dir.path());
    let j = opened.journal;
    let big = |id: &str| {
        let mut m = message(id);
        m.content = InboundContent::Text("z".repeat(1500));
        m
    };
    let waits: Vec<_> = (0..1000).map(|i| j.admit(big(&format!("k{i}")))).collect();
    for w in waits {
        assert_eq!(w.await.unwrap(), Admission::New);
    }
    for i in 0..999 {
        j.done(&format!("k{i}"), Instant::now());
    }
    assert_eq!(j.admit(message("tail")).await.unwrap(), Admission::New);
    j.flush().await;
    let r = j.report();
    assert!(r.compactions >= 1, "{r:?}");
    let log = dir.path().join("journal/journal.log");
    let len = scan(&std::fs::read(&log).unwrap()).1;
    // 1.5 MB were written; dead records beyond the threshold (1 MiB) were dropped.
    assert!(len < 1 << 20, "journal still {len} bytes");
    drop(j);

    let (opened, _rx) = open(dir.path());
    assert_eq!(ids(&opened.pending), ["k999", "tail"]);
    assert_eq!(
        opened.journal.admit(message("k0")).await.unwrap(),
        Admission::Duplicate,
        "an answered id was forgotten by the compaction"
    );
    assert!(!dir.path().join("journal/journal.compact.tmp").exists());
}

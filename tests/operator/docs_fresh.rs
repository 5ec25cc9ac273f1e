//! The committed completions and man pages must match the CLI definition.
//! Regenerate with: CLAWDBOT_BLESS=1 cargo test --test operator docs_fresh

use std::path::Path;

#[test]
fn completions_and_man_pages_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("CLAWDBOT_BLESS").is_some();
    let mut stale = Vec::new();
    for (rel, body) in clawdbot::docs::render_all() {
        let path = root.join(&rel);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &body).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&body[..]) {
            stale.push(rel);
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run CLAWDBOT_BLESS=1 cargo test --test operator docs_fresh"
    );
}

#[test]
fn completions_command_prints_the_committed_script() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawdbot"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let committed =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("completions/clawdbot.bash"))
            .unwrap();
    assert_eq!(out.stdout, committed);
}

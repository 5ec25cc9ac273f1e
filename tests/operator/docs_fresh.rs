//! The committed completions and man pages must match the CLI definition.
//! Regenerate with: CLAWDBOT_BLESS=1 cargo test --test operator docs_fresh

use std::path::Path;

#[test]
fn completions_and_man_pages_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("CLAWDBOT_BLESS").is_some();
    let mut stale = Vec::new();
    let mut generated = clawdbot::docs::completions_and_units();
    let mut root_cmd = clawdbot::cli::command();
    root_cmd.build();
    man_pages(&root_cmd, "clawdbot", &mut generated);
    for (rel, body) in generated {
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

/// One man page per command and subcommand, named `clawdbot-daemon-start.1` and so on.
fn man_pages(cmd: &clap::Command, page_name: &str, out: &mut Vec<(String, Vec<u8>)>) {
    let renamed = cmd.clone().name(page_name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(renamed)
        .render(&mut buf)
        .expect("rendering a man page into memory cannot fail");
    out.push((format!("man/{page_name}.1"), buf));
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        man_pages(sub, &format!("{page_name}-{}", sub.get_name()), out);
    }
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

//! The first README command: quickstart shows the whole path and reports a healthy bot.

use crate::support;

use support::Home;

#[test]
fn quickstart_gets_a_reply_through_the_simulator_and_stops_cleanly() {
    let home = Home::new();
    let r = home.run(&[
        "--json",
        "quickstart",
        "--text",
        "quickstart canary 7731",
        "--stop",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["healthy"], true, "{doc}");
    let reply = doc["reply"].as_str().unwrap();
    assert!(reply.starts_with("echo: quickstart canary 7731"), "{doc}");
    assert_eq!(
        home.run(&["daemon", "status", "--name", "quickstart-bot"])
            .code,
        3
    );
    assert_eq!(
        home.run(&["daemon", "status", "--name", "quickstart-sim"])
            .code,
        3
    );
    assert!(
        !home.all_logs().contains("canary 7731"),
        "message text leaked into a log"
    );
}

#[test]
fn quickstart_twice_reuses_the_running_simulator() {
    let home = Home::new();
    let first = home.run(&["--json", "quickstart"]);
    assert_eq!(first.code, 0, "{first:?}");
    let second = home.run(&["--json", "quickstart"]);
    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(first.json()["sim_url"], second.json()["sim_url"]);
    let human = home.run(&["quickstart"]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(human.stdout.contains("bot's reply"), "{human:?}");
    assert!(
        human.stdout.contains("daemon stop --name quickstart-sim"),
        "{human:?}"
    );
    // The printed stop commands work as typed (they name this binary, not a `clawdbot`
    // that may not be on PATH).
    for cmd in second.json()["stop_commands"].as_array().unwrap() {
        let cmd = cmd.as_str().unwrap();
        let ran = std::process::Command::new("sh")
            .args(["-c", cmd])
            .env_remove("CLAWDBOT_HOME")
            .output()
            .expect("sh");
        assert!(ran.status.success(), "{cmd}: {ran:?}");
    }
    for name in ["quickstart-bot", "quickstart-sim"] {
        assert_eq!(home.run(&["daemon", "status", "--name", name]).code, 3);
    }
}

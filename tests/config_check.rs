//! `config check` and config errors through the real binary.

mod support;

use support::{seed_config, Home};

#[test]
fn seed_config_checks_ok() {
    let home = Home::new();
    let cfg = home.write("c.yaml", &seed_config("http://127.0.0.1:8000/v1"));
    let r = home.run(&[
        "--json",
        "config",
        "check",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["models"][0], "local_chat");
}

#[test]
fn errors_name_what_and_where_with_exit_2() {
    let home = Home::new();
    let cases = [
        (
            seed_config("http://x/v1").replace(
                "    model: \"local-chat\"",
                "    model: \"m\"\n    colour: red",
            ),
            vec!["colour", "line 7"],
        ),
        (
            seed_config("http://x/v1").replace("LOCAL_MODEL_API_KEY", "CLAWDBOT_NOT_SET_VAR"),
            vec!["CLAWDBOT_NOT_SET_VAR is not set", "line"],
        ),
        (
            seed_config("http://x/v1").replace("model: local_chat", "model: ghost"),
            vec!["routing.defaults.model", "ghost"],
        ),
        (seed_config("ftp://x/v1"), vec!["base_url", "http://"]),
        (
            seed_config("http://x/v1").replace("timeout_ms: 12000", "timeout_ms: soon"),
            vec!["models.local_chat.timeout_ms", "line 7"],
        ),
        ("models: [\n".to_string(), vec!["line"]),
    ];
    for (text, needles) in cases {
        let cfg = home.write("bad.yaml", &text);
        let r = home.run(&["config", "check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(
            r.stderr.contains("bad.yaml"),
            "error must name the file: {r:?}"
        );
        for n in needles {
            assert!(r.stderr.contains(n), "missing {n:?} in {r:?}");
        }
    }
    let r = home.run(&["config", "check", "--config", "/nonexistent/c.yaml"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("/nonexistent/c.yaml"), "{r:?}");
}

#[test]
fn usage_errors_exit_2() {
    let home = Home::new();
    assert_eq!(home.run(&["daemon", "frobnicate"]).code, 2);
    assert_eq!(home.run(&["daemon", "stop"]).code, 2);
}

#[test]
fn the_config_template_loads() {
    let home = Home::new();
    let template = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config-templates/dingtalk.yaml"
    );
    let r = home
        .command(&["--json", "config", "check", "--config", template])
        .env("DINGTALK_CLIENT_ID", "dingabc")
        .env("DINGTALK_CLIENT_SECRET", "s3cr3t")
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

//! The control socket survives hostile or broken clients.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use support::{seed_config, Home};

#[test]
fn garbage_oversize_and_silent_clients_cannot_wedge_the_daemon() {
    let home = Home::new();
    let cfg = home.write("bot.yaml", &seed_config("http://127.0.0.1:9/v1"));
    assert_eq!(
        home.run(&[
            "daemon",
            "start",
            "--name",
            "bot",
            "--config",
            cfg.to_str().unwrap()
        ])
        .code,
        0
    );
    let sock = home.run_dir("bot").join("control.sock");

    // Twenty silent clients hold connections open without saying hello.
    let silent: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();

    // A frame header announcing 2 GiB is refused and the connection closed.
    let mut huge = UnixStream::connect(&sock).unwrap();
    huge.write_all(&0x8000_0000u32.to_be_bytes()).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        huge.read(&mut buf).unwrap_or(0),
        0,
        "oversize frame must close the connection"
    );

    // Garbage JSON in a well-formed frame: closed, nothing else affected.
    let mut garbage = UnixStream::connect(&sock).unwrap();
    garbage.write_all(&5u32.to_be_bytes()).unwrap();
    garbage.write_all(b"{{{{{").unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(garbage.read(&mut buf).unwrap_or(0), 0);

    // A request before hello is refused.
    let mut rude = UnixStream::connect(&sock).unwrap();
    let body = br#"{"type":"shutdown","drain_ms":0}"#;
    rude.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    rude.write_all(body).unwrap();
    rude.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(rude.read(&mut buf).unwrap_or(0), 0);

    // Meanwhile a real client is served promptly.
    let t = Instant::now();
    let st = home.run(&["--json", "daemon", "status", "--name", "bot"]);
    assert_eq!(st.code, 0, "{st:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "status took {:?}",
        t.elapsed()
    );
    drop(silent);
    assert_eq!(
        home.run(&["daemon", "status", "--name", "bot"]).code,
        0,
        "the shutdown before hello was obeyed"
    );
}

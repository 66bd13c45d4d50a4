//! Hostile admin-socket clients: random bytes, huge lines, invalid UTF-8, truncated
//! and absurdly nested JSON, connections dropped mid-line, 200 concurrent connections.
//! The daemon keeps serving valid requests throughout; the socket is mode 0600 and a
//! client running as another uid is refused (by the file mode, and by the peer-uid
//! check when the mode is loosened).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::rng::Rng;
use support::{binary, env_u64, Harness, Options};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Send `garbage` then a valid status request on the same connection; return every
/// reply line read until the status reply (or EOF).
async fn garbage_then_status(socket: &std::path::Path, garbage: &[u8]) -> (Vec<Value>, bool) {
    let stream = UnixStream::connect(socket).await.expect("connect");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    // The daemon may close on us while we are still writing a huge line: that is fine.
    let _ = w.write_all(garbage).await;
    let _ = w.write_all(b"\n{\"cmd\":\"status\"}\n").await;
    let mut replies = Vec::new();
    loop {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(20), r.read_line(&mut line)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return (replies, false),
            Ok(Ok(_)) => {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {line:?}"));
                let is_status = v["ok"] == true && v.get("streams").is_some();
                replies.push(v);
                if is_status {
                    return (replies, true);
                }
            }
        }
    }
}

fn payloads(rng: &mut Rng, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = vec![
        ("truncated JSON".into(), br#"{"cmd":"sta"#.to_vec()),
        (
            "invalid UTF-8".into(),
            b"{\"cmd\":\"\xff\xfe\xc0status\"}".to_vec(),
        ),
        (
            "lone surrogate escape".into(),
            br#"{"cmd":"\ud800"}"#.to_vec(),
        ),
        (
            "nested 100k arrays".into(),
            "[".repeat(100_000).into_bytes(),
        ),
        ("nested objects".into(), "{\"a\":".repeat(5000).into_bytes()),
        ("huge line 1 MiB".into(), vec![b'a'; 1 << 20]),
        (
            "huge valid-looking JSON 200 KiB".into(),
            format!("{{\"cmd\":\"status\",\"x\":\"{}\"}}", "y".repeat(200_000)).into_bytes(),
        ),
        (
            "wrong types".into(),
            br#"{"cmd":["status"],"mode":7,"dry_run":"yes"}"#.to_vec(),
        ),
        ("unknown cmd".into(), br#"{"cmd":"shutdown"}"#.to_vec()),
        (
            "bad mode".into(),
            br#"{"cmd":"sync","mode":"sideways"}"#.to_vec(),
        ),
        ("NUL bytes".into(), vec![0u8; 1000]),
        ("CRLF and blanks".into(), b"\r\n\r\n   \r".to_vec()),
        ("number".into(), b"1e999999".to_vec()),
    ];
    for i in 0..n {
        let len = rng.range(1, 4096) as usize;
        v.push((format!("random bytes #{i}"), rng.bytes(len)));
    }
    v
}

async fn hostile_admin_run(random_payloads: usize, concurrent: usize) {
    let seed = Rng::seed_from_env();
    let mut rng = Rng::new(seed);
    let h = Harness::start(Options::default()).await;
    let mut daemon = h.spawn_daemon().await;

    // 1. The socket is private.
    let mode = std::fs::metadata(&h.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    // 2. Garbage on a connection, then a valid request on the same connection.
    let mut served = 0;
    let mut closed = Vec::new();
    for (name, bytes) in payloads(&mut rng, random_payloads) {
        let (replies, got_status) = garbage_then_status(&h.socket, &bytes).await;
        for r in &replies[..replies.len().saturating_sub(usize::from(got_status))] {
            assert_eq!(r["ok"], false, "{name}: garbage accepted: {r}");
            assert!(
                r["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{name}: {r}"
            );
        }
        if got_status {
            served += 1;
        } else {
            closed.push(name.clone());
        }
        assert!(daemon.alive(), "daemon died on {name}:\n{}", h.log_tail(20));
    }
    // Only over-long lines may cost the connection; everything else keeps it usable.
    for name in &closed {
        assert!(
            name.starts_with("huge") || name.starts_with("nested"),
            "connection lost after {name}"
        );
    }
    println!("hostile admin: {served} connections served a valid request after garbage; closed: {closed:?}");

    // 3. Many concurrent connections, half of them sending garbage slowly.
    let mut tasks = Vec::new();
    for i in 0..concurrent {
        let socket = h.socket.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = UnixStream::connect(&socket).await else {
                return "refused";
            };
            if i % 2 == 0 {
                let _ = s.write_all(b"{\"cmd\":").await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = s.write_all(b"\"status\"}\n").await;
            } else {
                let _ = s
                    .write_all(b"\x00\x01garbage\n{\"cmd\":\"status\"}\n")
                    .await;
            }
            let mut r = BufReader::new(s);
            let mut line = String::new();
            for _ in 0..2 {
                line.clear();
                match tokio::time::timeout(Duration::from_secs(20), r.read_line(&mut line)).await {
                    Ok(Ok(n)) if n > 0 => {
                        if line.contains("\"streams\"") {
                            return "served";
                        }
                    }
                    _ => return "closed",
                }
            }
            "busy"
        }));
    }
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for t in tasks {
        *outcomes.entry(t.await.unwrap()).or_default() += 1;
    }
    println!("hostile admin: {concurrent} concurrent connections → {outcomes:?}");
    assert!(
        outcomes.get("served").copied().unwrap_or(0) >= concurrent.min(64) / 2,
        "{outcomes:?}"
    );
    assert!(daemon.alive());

    // 4. Valid requests still work, through the CLI too.
    let out = h.ctl(&["--json", "status"]);
    assert!(out.status.success(), "{out:?}");
    let reply = h.ctl_sync();
    assert_eq!(reply["ok"], true);

    // 5. Another uid is refused: first by the file mode alone…
    for dir in [h.dir.path(), h.socket.parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A copy of the binary where uid 65534 can run it (the build directory may sit
    // under a private directory, e.g. a `mktemp -d` clone).
    let ctl_bin = h.dir.path().join("datasync-ctl-copy");
    std::fs::copy(binary(), &ctl_bin).expect("copy the datasync binary");
    std::fs::set_permissions(&ctl_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = || {
        Command::new(&ctl_bin)
            .args(["ctl", "--json", "--socket"])
            .arg(&h.socket)
            .arg("status")
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run ctl as uid 65534")
    };
    let out = as_nobody();
    assert!(
        !out.status.success(),
        "uid 65534 reached the daemon: {out:?}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("streams"),
        "{out:?}"
    );
    // …then by the daemon's peer-uid check when the file mode is loosened.
    std::fs::set_permissions(&h.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    assert!(
        !out.status.success(),
        "uid 65534 served once the socket is 0666: {out:?}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("streams"),
        "{out:?}"
    );
    println!(
        "hostile admin: uid 65534 refused (exit {:?}, reply {:?})",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let out = h.ctl(&["status"]);
    assert!(out.status.success(), "owner no longer served: {out:?}");
    assert!(daemon
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_clients_do_not_stop_valid_requests() {
    hostile_admin_run(40, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with scripts/reliability-long.sh"]
async fn hostile_admin_clients_do_not_stop_valid_requests_long() {
    hostile_admin_run(
        env_u64("RELIABILITY_ADMIN_PAYLOADS", 2000) as usize,
        env_u64("RELIABILITY_ADMIN_CONNECTIONS", 1000) as usize,
    )
    .await;
}

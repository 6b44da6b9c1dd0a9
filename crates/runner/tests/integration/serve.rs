//! Issue 18: the live view's HTTP rules over a real socket: read-only, files only from inside the
//! experiment's folder (raw and percent-encoded `..`, hidden files, links out), localhost by
//! default, and server-sent events carrying each publication.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use runner::serve::{parse_addr, LiveServer, DEFAULT_ADDR};

fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

#[test]
fn the_live_view_serves_only_its_folder_and_pushes_updates() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("exp");
    std::fs::create_dir_all(root.join("seed=0")).unwrap();
    std::fs::write(root.join("seed=0/output.png"), b"\x89PNG fake").unwrap();
    std::fs::write(root.join("seed=0/.claim-0"), b"host").unwrap();
    std::fs::write(tmp.path().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret.txt"), root.join("out.txt")).unwrap();
    assert!(DEFAULT_ADDR.ip().is_loopback() && parse_addr("0").unwrap().ip().is_loopback());
    let live = LiveServer::start(parse_addr("0").unwrap(), root, "exp", &serde_json::json!({"n": 1})).unwrap();
    let addr = live.addr();
    assert!(addr.ip().is_loopback());

    let (code, page) = request(addr, "GET", "/");
    assert_eq!(code, 200);
    assert!(page.contains("<title>exp · gatys-rs</title>") && page.contains(r#"{"n":1}"#), "{page}");
    let (code, png) = request(addr, "GET", "/seed%3D0/output.png");
    assert!(code == 200 && png.contains("content-type: image/png") && png.ends_with("PNG fake"), "{png}");
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/seed=0/%2E%2E/%2E%2E/secret.txt",
        "/seed=0/.claim-0",
        "/out.txt",
        "/seed=0/..%2f..%2fsecret.txt",
        "/%00",
    ] {
        let (code, body) = request(addr, "GET", path);
        assert!(code == 404 || code == 400, "{path}: {code}");
        assert!(!body.contains("secret"), "{path} leaked: {body}");
    }
    let (code, _) = request(addr, "POST", "/seed=0/output.png");
    assert_eq!(code, 405, "read-only");

    // Server-sent events: the current document, then each publication.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut data = Vec::new();
    let mut line = String::new();
    while data.len() < 2 {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "the event stream ended");
        if let Some(d) = line.trim_end().strip_prefix("data: ") {
            data.push(d.to_string());
            if data.len() == 1 {
                live.publish(&serde_json::json!({"n": 2}));
            }
        }
    }
    assert_eq!(data, [r#"{"n":1}"#, r#"{"n":2}"#]);
}

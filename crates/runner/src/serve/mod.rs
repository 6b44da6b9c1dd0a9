//! The live view (`runner SPEC --serve [ADDR]`): an HTTP server, on its own thread and a small
//! tokio runtime, that serves the experiment's page (the `index.html` of [`crate::report::html`])
//! and pushes each newer page document to it as a server-sent event, while the sweep runs.
//!
//! It reads what the sweep publishes ([`LiveServer::publish`]) and never calls into the runs.
//! Read-only: `GET` and `HEAD` only. Files are served from the experiment's folder only: a
//! request path is taken apart into plain names (no `..`, no hidden files, no absolute paths or
//! backslashes), and the file found must still lie inside the folder once links are resolved.
//! It binds to 127.0.0.1 unless given another address. A browser that goes away, or never comes,
//! costs the sweep nothing: a publication replaces the previous one and nothing waits for readers.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::StreamExt;

/// Why the live view could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// An address that does not parse.
    #[error("`{0}`: not an address (expected PORT, HOST:PORT or [IPv6]:PORT, as 8080 or 127.0.0.1:8080)")]
    Address(String),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The runtime cannot start.
    #[error("cannot start the live view's runtime")]
    Runtime(#[source] std::io::Error),
}

/// The address `--serve` listens on when given none.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// `--serve`'s value: a port alone binds to 127.0.0.1 (never to every interface by omission);
/// `HOST:PORT` binds where it says.
pub fn parse_addr(s: &str) -> Result<SocketAddr, ServeError> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse().map_err(|_| ServeError::Address(s.to_string()))
}

/// The file a request path names under `root`, or `None` when the path is not a plain relative
/// path of visible names, or leads (through links) outside `root`, or to no file.
pub fn resolve(root: &Path, request: &str) -> Option<PathBuf> {
    let rel = Path::new(request.trim_start_matches('/'));
    if request.contains('\\') || request.contains('\0') {
        return None;
    }
    let mut path = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(name) if !name.to_string_lossy().starts_with('.') => path.push(name),
            _ => return None,
        }
    }
    let real = path.canonicalize().ok()?;
    let root = root.canonicalize().ok()?;
    (real.starts_with(&root) && real.is_file()).then_some(real)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("csv") => "text/csv; charset=utf-8",
        Some("toml" | "txt") => "text/plain; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

struct Shared {
    root: PathBuf,
    title: String,
    data: watch::Receiver<String>,
}

async fn page(State(s): State<Arc<Shared>>) -> Response {
    let data: serde_json::Value = serde_json::from_str(&s.data.borrow()).unwrap_or_default();
    let html = crate::report::html::render(&s.title, &data);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], html).into_response()
}

async fn events(State(s): State<Arc<Shared>>) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let stream = WatchStream::new(s.data.clone()).map(|json| Ok(Event::default().data(json)));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn file(State(s): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, HEAD")], "read-only\n").into_response();
    }
    let decoded = percent_decode(uri.path());
    let Some(path) = decoded.as_deref().and_then(|p| resolve(&s.root, p)) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    // Small files (images of a run, CSVs): read at once, on the server's one thread.
    match std::fs::read(&path) {
        Ok(bytes) => {
            let ct = HeaderValue::from_static(content_type(&path));
            ([(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))], bytes)
                .into_response()
        }
        Err(_) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// `%XX` decoded; `None` when an escape is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A running live view.
pub struct LiveServer {
    addr: SocketAddr,
    tx: watch::Sender<String>,
    _thread: std::thread::JoinHandle<()>,
}

impl LiveServer {
    /// Listens on `addr` (port 0: any free port) and serves the experiment `title` whose folder
    /// is `root`, starting from the page document `initial`.
    pub fn start(
        addr: SocketAddr,
        root: PathBuf,
        title: &str,
        initial: &serde_json::Value,
    ) -> Result<Self, ServeError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ServeError::Runtime)?;
        let std_listener = std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
        let addr = std_listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
        std_listener.set_nonblocking(true).map_err(|source| ServeError::Bind { addr, source })?;
        let (tx, rx) = watch::channel(initial.to_string());
        let shared = Arc::new(Shared { root, title: title.to_string(), data: rx });
        let app = Router::new()
            .route("/", get(page))
            .route("/index.html", get(page))
            .route("/events", get(events))
            .fallback(file)
            .with_state(shared);
        let thread = std::thread::Builder::new()
            .name("live-view".into())
            .spawn(move || {
                rt.block_on(async move {
                    if let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) {
                        let _ = axum::serve(listener, app).await;
                    }
                })
            })
            .map_err(ServeError::Runtime)?;
        Ok(Self { addr, tx, _thread: thread })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the page document; connected pages receive it as an event.
    pub fn publish(&self, data: &serde_json::Value) {
        self.tx.send_replace(data.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_binds_to_localhost_only() {
        assert_eq!(parse_addr("9000").unwrap(), "127.0.0.1:9000".parse().unwrap());
        assert_eq!(parse_addr("0.0.0.0:80").unwrap(), "0.0.0.0:80".parse().unwrap());
        assert_eq!(parse_addr("[::1]:8080").unwrap(), "[::1]:8080".parse().unwrap());
        assert!(DEFAULT_ADDR.ip().is_loopback());
        for bad in ["localhost", "8080x", "1.2.3.4", "99999"] {
            assert!(parse_addr(bad).unwrap_err().to_string().contains("not an address"), "{bad}");
        }
    }

    #[test]
    fn only_visible_files_inside_the_folder_are_served() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("exp");
        std::fs::create_dir_all(root.join("seed=0")).unwrap();
        std::fs::write(root.join("seed=0/output.png"), b"png").unwrap();
        std::fs::write(root.join("seed=0/.claim-0"), b"host").unwrap();
        std::fs::write(tmp.path().join("secret.txt"), b"secret").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret.txt"), root.join("link.txt")).unwrap();
        assert!(resolve(&root, "/seed=0/output.png").is_some());
        for bad in [
            "/../secret.txt",
            "/seed=0/../../secret.txt",
            "/seed=0/.claim-0",
            "//etc/passwd",
            "/link.txt",
            "/seed=0",
            "/seed=0\\..\\..\\secret.txt",
            "/nothing.png",
        ] {
            assert_eq!(resolve(&root, bad), None, "{bad}");
        }
        assert_eq!(percent_decode("/seed%3D0/output.png").as_deref(), Some("/seed=0/output.png"));
        assert_eq!(percent_decode("/%2e%2e/secret.txt").as_deref(), Some("/../secret.txt"));
        assert_eq!(percent_decode("/%zz"), None);
    }
}

//! The Prometheus endpoint (`--metrics-addr`): `GET /metrics` answers the
//! site's metrics in the text exposition format 0.0.4.
//!
//! A scrape is one small request every few seconds from a known scraper, so
//! a dozen lines of HTTP/1.1 on a tokio `TcpListener` do (one connection
//! task, `Connection: close`, a bounded request head and a read timeout)
//! instead of a web framework. Rendering reads atomics
//! ([`kiln_actors::metrics`]) and asks the scheduler for its task table: no
//! node actor is asked anything, so a scrape costs the same at 100,000
//! nodes as at ten.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use kiln_actors::Site;
use kiln_actors::scheduler::ListPeriodic;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The longest request head read; a scraper's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds the endpoint's listener.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen for metrics on {addr} (metrics_addr)"))
}

/// Answers scrapes until `shutdown` turns true.
pub async fn serve(listener: TcpListener, site: Site, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let site = site.clone();
                    actix::spawn(async move {
                        if let Err(e) = answer(stream, &site).await {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

fn route(head: &str) -> Route {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Route::Metrics,
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

async fn answer(mut stream: TcpStream, site: &Site) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let head = String::from_utf8_lossy(&head);
    let is_head = head.starts_with("HEAD ");
    let (status, content_type, body) = match route(&head) {
        Route::Metrics => {
            let periodic = site.scheduler.send(ListPeriodic).await.unwrap_or_default();
            let mut text = site.metrics.render(&periodic, &site.store.stats());
            if let Some(shared) = &site.config.shared {
                text.push_str(&shared.directory.render());
            }
            ("200 OK", CONTENT_TYPE, text)
        }
        Route::NotFound => ("404 Not Found", "text/plain", "not found; metrics are at /metrics\n".to_string()),
        Route::MethodNotAllowed => ("405 Method Not Allowed", "text/plain", "use GET\n".to_string()),
        Route::BadRequest => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !is_head {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route("HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route("POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route("GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route("\u{0}\u{1}garbage"), Route::BadRequest);
    }
}

//! A TCP relay that can be cut: what a network partition between a member
//! and PostgreSQL looks like to both. While cut, the relay reads nothing
//! from either side, so bytes wait in the kernels' buffers as they would on
//! a partitioned link; healed, they flow again (late, as after TCP's
//! retransmissions). It runs on a tokio runtime on its own thread; dropping
//! the relay stops it and closes every connection it holds.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The running relay.
pub struct Relay {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Relays loopback connections on a free port to `upstream`.
    pub fn start(upstream: SocketAddr) -> Relay {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((client, _)) = accepted else { continue };
                            let cut = cut_rx.clone();
                            tokio::spawn(async move {
                                if let Ok(server) = TcpStream::connect(upstream).await {
                                    let (cr, cw) = client.into_split();
                                    let (sr, sw) = server.into_split();
                                    tokio::join!(pipe(cr, sw, cut.clone()), pipe(sr, cw, cut));
                                }
                            });
                        }
                    }
                }
            });
        });
        Relay { addr, cut, stop: Some(stop), thread: Some(thread) }
    }

    /// Cuts the link (true) or heals it (false).
    pub fn cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

/// Copies one direction, reading nothing while the link is cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while *cut.borrow() {
            if cut.changed().await.is_err() {
                return;
            }
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            // Cut while waiting to read: stop reading at once.
            changed = cut.changed() => if changed.is_err() { return },
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! A real etcd (Debian's `etcd-server`, installed by `./dev`) on loopback ports with a temporary
//! data dir, and a TCP proxy that can cut one client off from it (a network partition without
//! root: the proxy stops forwarding and holds every connection open, so the client sees silence,
//! not a reset, as behind a dropped link).

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener as TokioListener, TcpStream};
use tokio::sync::watch;

pub struct Etcd {
    child: Child,
    pub endpoint: String,
    pub addr: SocketAddr,
    peer_url: String,
    dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_etcd(dir: &std::path::Path, endpoint: &str, peer_url: &str) -> Child {
    Command::new("etcd")
        .args(["--name", "test", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            endpoint,
            "--advertise-client-urls",
            endpoint,
        ])
        .args([
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
        ])
        .args(["--initial-cluster", &format!("test={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd (Debian package etcd-server; ./dev installs it)")
}

/// Starts a single-member etcd on loopback and waits until it answers.
pub async fn start_etcd() -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = spawn_etcd(dir.path(), &endpoint, &peer_url);
    let etcd = Etcd {
        child,
        addr: format!("127.0.0.1:{client}").parse().unwrap(),
        endpoint,
        peer_url,
        dir,
    };
    etcd.wait_until_answering().await;
    etcd
}

impl Etcd {
    async fn wait_until_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([self.endpoint.as_str()], None).await {
                if c.status().await.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: etcd stops at once, as in a crash; its data dir stays.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts etcd again on the same ports and data dir (after [`Etcd::kill9`]) and waits until
    /// it answers.
    pub async fn restart(&mut self) {
        self.child = spawn_etcd(self.dir.path(), &self.endpoint, &self.peer_url);
        self.wait_until_answering().await;
    }
}

/// A TCP proxy to `target` that can be cut and healed.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    is_cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TokioListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let is_cut = Arc::new(AtomicBool::new(false));
        let flag = is_cut.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if flag.load(Ordering::Acquire) {
                    held.push(inbound); // black hole: accepted, never answered
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    let partitioned = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        _ = cut_rx.wait_for(|cut| *cut) => true,
                    };
                    if partitioned {
                        // Stop forwarding but keep both sockets open until healed.
                        let _ = cut_rx.wait_for(|cut| !*cut).await;
                    } else {
                        let _ = inbound.shutdown().await;
                    }
                });
            }
        });
        Proxy {
            addr,
            cut,
            is_cut,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection through this proxy (they go silent) and black-holes new ones.
    pub fn cut(&self) {
        self.is_cut.store(true, Ordering::Release);
        let _ = self.cut.send(true);
    }

    /// Forwards again: connections cut before are closed, new ones are forwarded.
    pub fn heal(&self) {
        self.is_cut.store(false, Ordering::Release);
        let _ = self.cut.send(false);
    }
}

/// A node's cluster role from its readiness report (`leader`, `follower`, `no_quorum`), or
/// `None` when it does not answer within `timeout`.
pub async fn role_of(
    client: &reqwest::Client,
    base: &str,
    timeout: std::time::Duration,
) -> Option<String> {
    let response = client
        .get(format!("{base}/health/ready"))
        .timeout(timeout)
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["role"].as_str().map(str::to_string)
}

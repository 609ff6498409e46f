//! Test harness: runs the real `timelock` binary on `127.0.0.1:0` with a temporary data dir,
//! learns its port from `--port-file`, and talks to it over HTTP. Servers can be stopped
//! gracefully (SIGTERM), killed (`kill -9`) and restarted on the same data dir.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod checker;
pub mod etcd;

/// The server binary: cargo's own for this package's tests; the bench crate (bench/, a workspace
/// member that includes this module) is told by its build script where the binary of its profile is.
pub const BIN: &str = match option_env!("CARGO_BIN_EXE_timelock") {
    Some(path) => path,
    None => match option_env!("TIMELOCK_BENCH_BIN") {
        Some(path) => path,
        None => "timelock",
    },
};

/// The binary a [`TestServer`] runs: `TIMELOCK_TEST_BIN` if set (to run a test against another
/// build, such as the code before a fix, and see it fail), else [`BIN`].
pub fn server_binary() -> String {
    std::env::var("TIMELOCK_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

pub struct TestServer {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    work: PathBuf,
    starts: u32,
}

impl TestServer {
    /// Starts a server on `data_dir` with extra `TIMELOCK__...` environment variables.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let work = data_dir.parent().expect("data dir has a parent");
        Self::start_in(data_dir, work, env)
    }

    /// Like [`TestServer::start`] with logs and the port file in `work`.
    pub fn start_in(data_dir: &Path, work: &Path, env: &[(&str, &str)]) -> Self {
        let work = work.to_path_buf();
        std::fs::create_dir_all(&work).expect("work dir");
        let mut server = Self {
            child: None,
            port: 0,
            data_dir: data_dir.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            work,
            starts: 0,
        };
        server.launch();
        server
    }

    fn log_path(&self) -> PathBuf {
        self.work.join(format!("server-{}.log", self.starts))
    }

    fn launch(&mut self) {
        self.starts += 1;
        let port_file = self.work.join("port");
        let _ = std::fs::remove_file(&port_file);
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut command = Command::new(server_binary());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .arg("--port-file")
            .arg(&port_file)
            .env_remove("RUST_LOG")
            // Relative defaults (var/backups, var/migrations) land in the test's own directory.
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn timelock");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                if let Ok(port) = text.trim().parse::<u16>() {
                    self.port = port;
                    break;
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("server exited during start-up ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child = Some(child);
    }

    /// The current run's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process is still running (false once it exited by itself, e.g. aborted).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Reaps a server that exited by itself, so that it can be restarted.
    pub fn reap(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts again on the same data dir (after `kill9` or `terminate`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.launch();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `tests/powercut/powercut.c` built once per test binary (power cuts and I/O faults).
pub fn powercut_library() -> PathBuf {
    static LIB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("libpowercut-{}.so", std::process::id()));
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powercut/powercut.c");
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&out)
            .arg(&source)
            .args(["-ldl", "-lpthread"])
            .status()
            .expect("cc (build-essential)");
        assert!(status.success(), "building the power-cut library failed");
        out
    })
    .clone()
}

/// A temporary directory holding `data/` and the server logs.
pub fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    (dir, data)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A response reduced to what tests assert on.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn number(&self) -> i64 {
        assert_eq!(self.status, 200, "expected 200, got {self:?}");
        self.body
            .parse()
            .unwrap_or_else(|_| panic!("not a bare number: {:?}", self.body))
    }

    /// Asserts a Conjure `SerializableError` with this status and code.
    pub fn assert_conjure_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "{self:?}"
        );
        let v = self.json();
        assert_eq!(v["errorCode"], code, "{self:?}");
        assert!(
            v["errorName"].as_str().is_some_and(|s| s.contains(':')),
            "{self:?}"
        );
        let id = v["errorInstanceId"].as_str().expect("errorInstanceId");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{self:?}");
        assert!(v["parameters"].is_object(), "{self:?}");
        v
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.text().await.expect("body");
    Reply {
        status,
        content_type,
        body,
    }
}

pub async fn post(server: &TestServer, path: &str) -> Reply {
    send(client().post(server.url(path))).await
}

pub async fn post_json(server: &TestServer, path: &str, body: &str) -> Reply {
    send(
        client()
            .post(server.url(path))
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

pub async fn get(server: &TestServer, path: &str) -> Reply {
    send(client().get(server.url(path))).await
}

/// Namespaces the server reports.
pub async fn namespaces(server: &TestServer) -> Vec<String> {
    serde_json::from_value(post(server, "/tl/management/getNamespaces").await.json()).unwrap()
}

//! The HTTP client of the operator's commands, apart from the server: the CLI and the
//! migration tool (`operations::migrate`) talk to running servers through it. It checks what an
//! operator gives before anything is sent — namespaces by the server's own rule, server URLs,
//! timestamps — and percent-encodes every path segment, so no value can reach another route.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode};

/// A namespace by the server's rule ([`crate::namespaces::validate_name`]).
pub fn check_namespace(namespace: &str) -> anyhow::Result<()> {
    crate::namespaces::validate_name(namespace).map_err(|e| anyhow!("{e}"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so that no value can add a
/// path segment, a query or a fragment to the URL it is put in. (Valid namespaces need no
/// encoding; this is the second line of defence.)
pub fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks every node of a comma-separated server list: an `http://` or `https://` URL with a
/// host, and no query or fragment.
pub fn check_servers(servers: &str) -> anyhow::Result<()> {
    let nodes: Vec<&str> = servers
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if nodes.is_empty() {
        bail!("--server is empty: give the server's base URL, e.g. http://127.0.0.1:8421");
    }
    for node in nodes {
        server_url(node)?;
    }
    Ok(())
}

/// Parses one server's base URL (see [`check_servers`]).
pub fn server_url(text: &str) -> anyhow::Result<reqwest::Url> {
    let hint =
        "expected a base URL such as http://127.0.0.1:8421 or https://host:8421/timelock/api";
    let url = reqwest::Url::parse(text)
        .map_err(|e| anyhow!("{text:?} is not a server URL ({e}); {hint}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!(
            "{text:?} is not a server URL (scheme {:?}); {hint}",
            url.scheme()
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("{text:?} is not a server URL (no host); {hint}");
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        bail!("{text:?} is not a base URL (it has a query, fragment or user name); {hint}");
    }
    Ok(url)
}

/// A timestamp an operator gives (`--timestamp`, a file, `--fast-forward-to`): timestamps are
/// positive, so 0 and negative values are refused before anything is sent or moved.
pub fn check_timestamp(ts: i64) -> anyhow::Result<i64> {
    if ts <= 0 {
        bail!("timestamp {ts} is not positive: timestamps start at 1; give the last timestamp issued (as `timelock timestamp fetch` or `invalidate` prints it)");
    }
    Ok(ts)
}

/// Reads a single-line decimal timestamp, which must be positive.
pub fn read_timestamp_file(path: &Path) -> anyhow::Result<i64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read timestamp file {}", path.display()))?;
    parse_timestamp(&text)
        .and_then(check_timestamp)
        .with_context(|| {
            format!(
                "timestamp file {} does not hold one positive decimal timestamp",
                path.display()
            )
        })
}

pub fn parse_timestamp(text: &str) -> anyhow::Result<i64> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| anyhow!("expected a decimal timestamp, got {:?}", text.trim()))
}

/// The HTTP client of the CLI commands (no automatic redirects: see [`Client::call`]).
pub(crate) struct Client {
    http: reqwest::Client,
    /// Keys of the warnings already printed (see [`Client::warn_once`]).
    warned: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl Client {
    /// A client for `http://` and `https://` servers. From the environment:
    /// `TIMELOCK_CA_CERT` (a PEM file of CA certificates to trust for `https://`),
    /// `TIMELOCK_CLIENT_CERT` (a PEM file holding a client certificate and its key, for mutual
    /// TLS), and the bearer token sent with every request, `TIMELOCK_TOKEN` or the file named by
    /// `TIMELOCK_TOKEN_FILE` (the admin credential, for servers with `[auth]` set).
    pub(crate) fn new() -> anyhow::Result<Self> {
        crate::transport::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if let Some(path) = std::env::var_os("TIMELOCK_CA_CERT") {
            let pem = std::fs::read(&path)
                .with_context(|| format!("TIMELOCK_CA_CERT: cannot read {path:?}"))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("TIMELOCK_CA_CERT: bad PEM in {path:?}"))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(path) = std::env::var_os("TIMELOCK_CLIENT_CERT") {
            let pem = std::fs::read(&path)
                .with_context(|| format!("TIMELOCK_CLIENT_CERT: cannot read {path:?}"))?;
            builder = builder.identity(
                reqwest::Identity::from_pem(&pem)
                    .with_context(|| format!("TIMELOCK_CLIENT_CERT: {path:?} must hold a PEM certificate and its private key"))?,
            );
        }
        let token = match (
            std::env::var("TIMELOCK_TOKEN"),
            std::env::var_os("TIMELOCK_TOKEN_FILE"),
        ) {
            (Ok(token), _) => Some(token),
            (Err(_), Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("TIMELOCK_TOKEN_FILE: cannot read {path:?}"))?,
            ),
            _ => None,
        };
        if let Some(token) = token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .context("the bearer token must be printable ASCII")?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        Ok(Self {
            http: builder.build().context(
                "cannot set up the HTTP client (check TIMELOCK_CA_CERT and TIMELOCK_CLIENT_CERT)",
            )?,
            warned: Default::default(),
        })
    }

    /// Prints `message` on stderr the first time it is given for `key`.
    pub(crate) fn warn_once(&self, key: &str, message: &str) {
        if self.warned.lock().insert(key.to_string()) {
            eprintln!("warning: {message}");
        }
    }

    /// PUTs a JSON body to an admin route `path` of `base` (no redirects followed); Ok on 2xx.
    /// Tried at `base`, then at its root (see [`admin_bases`]).
    pub(crate) async fn put_json(&self, base: &str, path: &str, body: &str) -> anyhow::Result<()> {
        let mut last = None;
        for base in admin_bases(base) {
            let url = format!("{}/{path}", base.trim_end_matches('/'));
            let response = self
                .http
                .put(&url)
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| anyhow!("cannot reach {url}: {}", describe_reqwest(&e)))?;
            if response.status().is_success() {
                return Ok(());
            }
            last = Some(anyhow!("{url} answered HTTP {}", response.status()));
            if response.status() != StatusCode::NOT_FOUND {
                break;
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no server given")))
    }

    /// Like [`Client::call`] for an admin route: admin routes live at the server's root, not
    /// under the client routes' prefix, so a `--server` with a path (`.../timelock/api`) that
    /// answers 404 is tried again at its root.
    pub(crate) async fn call_admin(
        &self,
        method: Method,
        base: &str,
        path: &str,
    ) -> anyhow::Result<String> {
        let bases = admin_bases(base);
        let mut result = Err(anyhow!("no server given"));
        for (i, base) in bases.iter().enumerate() {
            result = self.call(method.clone(), base, path).await;
            match &result {
                Err(e) if i + 1 < bases.len() && e.to_string().contains("HTTP 404") => {}
                _ => break,
            }
        }
        result
    }

    /// Sends one request to one node and returns its status and body whatever the status:
    /// for questions about that very node (its readiness, a takeover), where a redirect or a
    /// 503 is an answer, not a reason to ask another node. A `base` with a path that answers
    /// 404 is asked again at its root (see [`Client::call_admin`]).
    pub(crate) async fn ask_node(
        &self,
        method: Method,
        base: &str,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<(StatusCode, String)> {
        server_url(base)?;
        let mut last = Err(anyhow!("no server given"));
        for base in admin_bases(base) {
            let url = format!("{}/{path}", base.trim_end_matches('/'));
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header("Content-Type", "application/json");
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let response = request.send().await.map_err(|e| {
                anyhow!(
                    "cannot reach timelock server at {base}: {}",
                    describe_reqwest(&e)
                )
            })?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            last = Ok((status, text));
            if status != StatusCode::NOT_FOUND {
                break;
            }
        }
        last
    }

    /// Turns a non-2xx answer of [`Client::ask_node`] into the error the other commands give.
    pub(crate) fn failure(base: &str, status: StatusCode, body: &str) -> anyhow::Error {
        explain_failure(base, status, body)
    }

    /// Sends the request to `base`/`path`, following up to 3 leader redirects. `base` may list
    /// several nodes of a cluster, comma-separated: a node that answers 503 (not the leader, leader
    /// unknown) or cannot be reached is skipped for the next. Returns the body of a 2xx
    /// response; anything else becomes an error that says what happened.
    pub(crate) async fn call(
        &self,
        method: Method,
        base: &str,
        path: &str,
    ) -> anyhow::Result<String> {
        check_servers(base)?;
        let nodes: Vec<&str> = base
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        let mut last_error = None;
        for (i, node) in nodes.iter().enumerate() {
            match self.call_node(method.clone(), node, path).await {
                Ok(body) => return Ok(body),
                Err(NodeError::TryAnother(e)) if i + 1 < nodes.len() => {
                    eprintln!("{e:#}; trying {}", nodes[i + 1]);
                    last_error = Some(e);
                }
                Err(NodeError::TryAnother(e)) | Err(NodeError::Final(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no server given")))
    }

    async fn call_node(&self, method: Method, base: &str, path: &str) -> Result<String, NodeError> {
        let mut base = base.trim_end_matches('/').to_string();
        for _ in 0..4 {
            let url = format!("{base}/{path}");
            let response = self
                .http
                .request(method.clone(), &url)
                .header("Content-Type", "application/json")
                // The CLI follows 308 redirects to the leader, so it says it speaks the protocol
                // in which cluster followers redirect (AtlasDB's `atlasdb-http-client/2.0`).
                .header(
                    "User-Agent",
                    concat!(
                        "timelock-cli/",
                        env!("CARGO_PKG_VERSION"),
                        " atlasdb-http-client/2.0"
                    ),
                )
                .send()
                .await
                .map_err(|e| {
                    NodeError::TryAnother(anyhow!(
                        "cannot reach timelock server at {base}: {}",
                        describe_reqwest(&e)
                    ))
                })?;
            let status = response.status();
            if status == StatusCode::PERMANENT_REDIRECT || status == StatusCode::TEMPORARY_REDIRECT
            {
                let location = response
                    .headers()
                    .get("Location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| NodeError::TryAnother(anyhow!("{base} is not the leader and did not say which node is (HTTP {status} without Location)")))?;
                eprintln!("{base} is not the leader; following redirect to {location}");
                base = location.trim_end_matches('/').to_string();
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            if status.is_success() {
                return Ok(body);
            }
            let error = explain_failure(&base, status, &body);
            return Err(
                if status == StatusCode::SERVICE_UNAVAILABLE && body.is_empty() {
                    NodeError::TryAnother(error)
                } else {
                    NodeError::Final(error)
                },
            );
        }
        Err(NodeError::TryAnother(anyhow!(
            "too many leader redirects from {base}; the cluster may be electing a leader, try again"
        )))
    }
}

/// Where to find a server's admin routes: `base` itself, then, if `base` has a path (a client
/// prefix such as `/timelock/api`), every node of it at its root.
fn admin_bases(base: &str) -> Vec<String> {
    let roots: Vec<String> = base
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|node| match reqwest::Url::parse(node) {
            Ok(url) if url.path().trim_matches('/').is_empty() => node.to_string(),
            Ok(url) => url.origin().ascii_serialization(),
            Err(_) => node.to_string(),
        })
        .collect();
    let roots = roots.join(",");
    if roots == base {
        vec![base.to_string()]
    } else {
        vec![base.to_string(), roots]
    }
}

/// How one node's failure bears on trying the next.
enum NodeError {
    /// Not the leader, unreachable: another node may serve.
    TryAnother(anyhow::Error),
    /// An answer about the request itself: another node would say the same.
    Final(anyhow::Error),
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused or host unreachable (is the server running, and is the URL right?)"
            .into()
    } else if e.is_timeout() {
        "timed out".into()
    } else {
        e.to_string()
    }
}

fn explain_failure(base: &str, status: StatusCode, body: &str) -> anyhow::Error {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/parameters/message"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body.trim().to_string());
    match (status, field("errorName").as_deref()) {
        (_, Some("TimeLock:NamespaceInvalidated")) => anyhow!("refused: {message}"),
        (StatusCode::SERVICE_UNAVAILABLE, Some(_)) => {
            anyhow!("{base} cannot serve this (HTTP 503): {message}")
        }
        (StatusCode::SERVICE_UNAVAILABLE, None) => anyhow!(
            "{base} answered HTTP 503: it is not the leader (try another node) or is unavailable"
        ),
        (StatusCode::TOO_MANY_REQUESTS, _) => {
            anyhow!("{base} is overloaded (HTTP 429); try again shortly")
        }
        (status, Some(name)) => {
            anyhow!("{base} refused the request (HTTP {status}, {name}): {message}")
        }
        (status, None) => anyhow!("{base} answered HTTP {status}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("ns_1-A"), "ns_1-A");
        assert_eq!(encode_segment("x/../v"), "x%2F..%2Fv");
        assert_eq!(encode_segment("v#?%"), "v%23%3F%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn admin_routes_are_tried_at_the_root_of_a_prefixed_base() {
        assert_eq!(admin_bases("http://h:1"), vec!["http://h:1"]);
        assert_eq!(admin_bases("http://h:1/"), vec!["http://h:1/"]);
        assert_eq!(
            admin_bases("http://h:1/timelock/api,https://g:2/timelock/api/"),
            vec![
                "http://h:1/timelock/api,https://g:2/timelock/api/",
                "http://h:1,https://g:2"
            ]
        );
    }

    #[test]
    fn server_urls_and_timestamps_are_checked() {
        for ok in [
            "http://127.0.0.1:8421",
            "https://h/timelock/api",
            "http://a:1,http://b:2",
        ] {
            assert!(check_servers(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ",",
            "not a url",
            "ftp://h",
            "h:1",
            "http://h:1?x=1",
            "http://u@h",
        ] {
            assert!(check_servers(bad).is_err(), "{bad:?}");
        }
        assert!(check_timestamp(1).is_ok());
        for bad in [0, -1, i64::MIN] {
            assert!(check_timestamp(bad).is_err(), "{bad}");
        }
    }
}

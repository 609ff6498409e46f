//! TLS against the real server: HTTPS on the client port with a plain-HTTP listener only on
//! loopback, certificates reloaded when their files change (a bad file is refused and the old
//! certificate kept), and mutual TLS whose certificate identities decide which namespaces and
//! which admin routes a client may use.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ca {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

/// A leaf certificate signed by `ca`, as (certificate PEM, key PEM).
fn leaf(ca: &Ca, common_name: &str, server: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names = if server {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        vec![]
    };
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write_server_cert(dir: &Path, ca: &Ca) {
    let (cert, key) = leaf(ca, "timelock", true);
    // Write under temporary names and rename, as rotation tools do.
    std::fs::write(dir.join("server.pem.tmp"), cert).unwrap();
    std::fs::write(dir.join("server.key.tmp"), key).unwrap();
    std::fs::rename(dir.join("server.pem.tmp"), dir.join("server.pem")).unwrap();
    std::fs::rename(dir.join("server.key.tmp"), dir.join("server.key")).unwrap();
}

fn https_client(ca: &Ca, identity: Option<(String, String)>) -> reqwest::Client {
    timelock::transport::tls::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        // A new handshake per request: reloads apply to new connections only.
        .pool_max_idle_per_host(0);
    if let Some((cert, key)) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn fresh_timestamp(client: &reqwest::Client, url: &str) -> i64 {
    let reply = client.post(url).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    reply.text().await.unwrap().parse().unwrap()
}

async fn status(client: &reqwest::Client, url: &str) -> Result<u16, String> {
    client
        .post(url)
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

fn tls_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        (
            "TIMELOCK__TLS__CERT_FILE".into(),
            dir.join("server.pem").display().to_string(),
        ),
        (
            "TIMELOCK__TLS__KEY_FILE".into(),
            dir.join("server.key").display().to_string(),
        ),
    ]
}

fn start(dir: &Path, env: Vec<(String, String)>) -> TestServer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestServer::start(&dir.join("data"), &env)
}

#[tokio::test]
async fn https_on_the_client_port_and_plain_http_only_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    write_server_cert(dir.path(), &ca);
    let mut env = tls_env(dir.path());
    env.push(("TIMELOCK__TLS__PLAIN_LISTEN".into(), "127.0.0.1:0".into()));
    let server = start(dir.path(), env);
    let https = https_client(&ca, None);
    let base = format!("https://127.0.0.1:{}", server.port);
    let first = fresh_timestamp(&https, &format!("{base}/tls/timestamp/fresh-timestamp")).await;
    // The client port speaks TLS only.
    let plain = client()
        .post(server.url("/tls/timestamp/fresh-timestamp"))
        .send()
        .await;
    assert!(
        plain.map(|r| r.status().as_u16() >= 400).unwrap_or(true),
        "plain HTTP answered on the TLS port"
    );
    // The loopback plain listener serves the same namespace.
    let log = server.log();
    let plain_addr = log
        .split("also listening for plain HTTP on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no plain listener in the log:\n{log}"))
        .to_string();
    let second = fresh_timestamp(
        &client(),
        &format!("http://{plain_addr}/tls/timestamp/fresh-timestamp"),
    )
    .await;
    assert!(second > first);
    assert!(log.contains(&format!("https://127.0.0.1:{}", server.port)));
}

#[test]
fn plain_http_beside_tls_must_be_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    write_server_cert(dir.path(), &ca);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_timelock"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("TIMELOCK__TLS__PLAIN_LISTEN", "0.0.0.0:0");
    for (k, v) in tls_env(dir.path()) {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[tokio::test]
async fn certificates_are_reloaded_when_their_files_change_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (ca("old CA"), ca("new CA"));
    write_server_cert(dir.path(), &old_ca);
    let mut env = tls_env(dir.path());
    env.push(("TIMELOCK__TLS__RELOAD_INTERVAL_MS".into(), "100".into()));
    let server = start(dir.path(), env);
    let url = format!(
        "https://127.0.0.1:{}/reload/timestamp/fresh-timestamp",
        server.port
    );
    let (trusts_old, trusts_new) = (https_client(&old_ca, None), https_client(&new_ca, None));
    assert_eq!(status(&trusts_old, &url).await, Ok(200));
    assert!(status(&trusts_new, &url).await.is_err());

    // Rotate: the new certificate is served without a restart.
    write_server_cert(dir.path(), &new_ca);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&trusts_new, &url).await != Ok(200) {
        assert!(Instant::now() < deadline, "new certificate never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status(&trusts_old, &url).await.is_err());

    // A broken certificate file is refused; the last good certificate stays in use.
    std::fs::write(dir.path().join("server.pem"), "not a certificate").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // /metrics is behind TLS too: read it over HTTPS.
        let text = trusts_new
            .get(format!("https://127.0.0.1:{}/metrics", server.port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("timelock_tls_reloads_total{result=\"error\"} 1") {
            assert!(text.contains("timelock_tls_reloads_total{result=\"ok\"} 1"));
            break;
        }
        assert!(Instant::now() < deadline, "bad file not noticed:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&trusts_new, &url).await, Ok(200));
    assert!(server.log().contains("new TLS files rejected"));
}

#[tokio::test]
async fn mutual_tls_identities_decide_namespaces_and_admin() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    write_server_cert(dir.path(), &ca);
    std::fs::write(dir.path().join("client-ca.pem"), ca.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("identities"),
        "# identity grants\nsvc-a alpha,gamma\nops admin\n",
    )
    .unwrap();
    let mut env = tls_env(dir.path());
    env.push((
        "TIMELOCK__TLS__CLIENT_CA_FILE".into(),
        dir.path().join("client-ca.pem").display().to_string(),
    ));
    env.push((
        "TIMELOCK__AUTH__CERT_IDENTITIES_FILE".into(),
        dir.path().join("identities").display().to_string(),
    ));
    let server = start(dir.path(), env);
    let base = format!("https://127.0.0.1:{}", server.port);
    let svc_a = https_client(&ca, Some(leaf(&ca, "svc-a", false)));
    let ops = https_client(&ca, Some(leaf(&ca, "ops", false)));
    let stranger = https_client(&ca, Some(leaf(&ca, "stranger", false)));
    let no_cert = https_client(&ca, None);
    let other_ca = ca_client_with_foreign_cert(&ca);

    let ts = |ns: &str| format!("{base}/{ns}/timestamp/fresh-timestamp");
    let admin = format!("{base}/tl/management/getNamespaces");
    assert_eq!(status(&svc_a, &ts("alpha")).await, Ok(200));
    assert_eq!(status(&svc_a, &ts("gamma")).await, Ok(200));
    assert_eq!(status(&svc_a, &ts("beta")).await, Ok(403));
    assert_eq!(status(&svc_a, &admin).await, Ok(403));
    assert_eq!(status(&ops, &admin).await, Ok(200));
    assert_eq!(status(&ops, &ts("beta")).await, Ok(200));
    assert_eq!(status(&stranger, &ts("alpha")).await, Ok(403));
    assert_eq!(status(&stranger, &ts("epsilon")).await, Ok(403));
    // Required client authentication: no certificate, or one from another CA, no connection.
    assert!(status(&no_cert, &ts("alpha")).await.is_err());
    assert!(status(&other_ca, &ts("alpha")).await.is_err());
    // The refused requests created nothing.
    let names = ops.post(&admin).send().await.unwrap().text().await.unwrap();
    assert!(
        names.contains("alpha") && !names.contains("epsilon"),
        "{names}"
    );
}

/// Trusts the server's CA but presents a client certificate from an unrelated CA.
fn ca_client_with_foreign_cert(server_ca: &Ca) -> reqwest::Client {
    let foreign = ca("foreign CA");
    https_client(server_ca, Some(leaf(&foreign, "svc-a", false)))
}

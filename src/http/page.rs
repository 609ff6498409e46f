//! The status page at `/`: the status snapshot ([`crate::status`]) as one self-contained HTML
//! page for a person with a browser. Rendered on the server, with inline CSS, no script and no
//! external asset; it reloads itself (`<meta http-equiv="refresh">`). Behind the admin
//! credential when one is configured, like `/admin/status`.
//!
//! Every value that comes from outside the code is HTML-escaped: namespace names are a client's
//! input (the name rule keeps markup out today; escaping does not rely on it), and migration
//! sides, backup names and failure reasons are operators' or the system's text. The answer
//! forbids scripts, frames and outside loads by its Content-Security-Policy besides.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::TimelockError;
use crate::status::{human_age, human_ms, shard_ranges, LeadershipStatus, NamespaceState, Status};

/// How often the page reloads itself, in seconds.
const REFRESH_SECS: u32 = 5;

pub async fn page(State(state): State<AppState>) -> Result<Response, TimelockError> {
    let status = super::admin::snapshot(&state).await?;
    let mut response = render(&status).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse}th,td{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
.serving{color:#1a7f37}.fenced,.invalidated{color:#9a6700;font-weight:bold}\
.fail-stopped,.bad{color:#cf222e;font-weight:bold}.muted{color:#666}";

/// The whole page.
pub fn render(s: &Status) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str(&format!(
        "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">"
    ));
    out.push_str("<title>timelock status</title><style>");
    out.push_str(STYLE);
    out.push_str("</style></head><body>\n");
    out.push_str(&format!(
        "<h1>timelock {} <span class=\"muted\">&middot; refreshes every {REFRESH_SECS}s</span></h1>\n",
        escape(&s.version)
    ));

    // The node.
    let n = &s.node;
    out.push_str("<h2>Node</h2>\n<table id=\"node\">");
    row(
        &mut out,
        "role",
        &format!("<span id=\"role\">{}</span>", escape(&n.role)),
    );
    if let Some(id) = &n.node_id {
        row(&mut out, "node id", &escape(id));
    }
    let per_namespace = n
        .leadership
        .as_ref()
        .is_some_and(|l| l.mode == "per-namespace");
    if n.role != "single" {
        let leader = match &n.leader_url {
            _ if per_namespace => "one per shard: see Leadership".to_string(),
            Some(url) if n.role == "leader" => format!("this node ({})", escape(url)),
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                format!(
                    "<a href=\"{0}/\">{0}</a>",
                    escape(url.trim_end_matches('/'))
                )
            }
            Some(url) => escape(url),
            None => "<span class=\"bad\">unknown</span>".to_string(),
        };
        row(&mut out, "leader", &leader);
    }
    row(
        &mut out,
        "serves clients",
        if n.serves {
            "yes"
        } else {
            "<span class=\"bad\">no</span>"
        },
    );
    if n.shutting_down {
        row(&mut out, "shutting down", "<span class=\"bad\">yes</span>");
    }
    if n.force_killed {
        row(
            &mut out,
            "force-killed",
            "<span class=\"bad\">yes: restart the process</span>",
        );
    }
    out.push_str("</table>\n");

    if let Some(l) = &n.leadership {
        leadership(&mut out, l);
    }

    // Namespaces.
    out.push_str("<h2>Namespaces</h2>\n");
    match &s.namespaces {
        None => out.push_str(
            "<p id=\"namespaces\" class=\"muted\">This node does not serve now: the leader shows the namespaces.</p>\n",
        ),
        Some(list) if list.is_empty() => out.push_str(
            "<p id=\"namespaces\" class=\"muted\">No namespaces yet: one is created on its first request.</p>\n",
        ),
        Some(list) => {
            out.push_str(
                "<table id=\"namespaces\"><tr><th>namespace</th><th>state</th><th>last issued</th>\
<th>durable bound</th><th>locks held</th><th>lock waiters</th><th>v1 lock tokens</th></tr>\n",
            );
            for ns in list {
                let state = match (&ns.failure, ns.state) {
                    (Some(why), NamespaceState::FailStopped) => {
                        format!("fail-stopped: {}", escape(why))
                    }
                    _ => ns.state.as_str().to_string(),
                };
                out.push_str(&format!(
                    "<tr><td class=\"name\">{}</td><td class=\"state {}\">{}</td><td class=\"n\">{}</td>\
<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
                    escape(&ns.name),
                    ns.state.as_str(),
                    state,
                    ns.last_issued,
                    ns.durable_bound,
                    ns.locks_held,
                    ns.lock_waiters,
                    ns.v1_lock_tokens
                ));
            }
            out.push_str("</table>\n");
        }
    }

    // Backups and migrations.
    out.push_str("<h2>Backups</h2>\n<p id=\"backup\">");
    match (&s.last_backup, &s.backup_error) {
        (_, Some(e)) => out.push_str(&format!(
            "<span class=\"bad\">the backup dir cannot be listed: {}</span>",
            escape(e)
        )),
        (Some(b), None) => out.push_str(&format!(
            "last backup <b>{}</b> ({}), taken {} ({} ago); {} in all",
            escape(&b.name),
            escape(&b.backup_type),
            escape(&b.created_at),
            human_age(b.age_seconds),
            b.count
        )),
        (None, None) => out.push_str("<span class=\"bad\">no backup yet</span>"),
    }
    out.push_str("</p>\n<h2>Migrations in flight</h2>\n");
    if s.migrations_in_flight.is_empty() {
        out.push_str("<p id=\"migrations\" class=\"muted\">none</p>\n");
    } else {
        out.push_str("<table id=\"migrations\"><tr><th>id</th><th>state</th><th>from</th><th>to</th><th>namespaces</th></tr>\n");
        for m in &s.migrations_in_flight {
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&m.id),
                escape(&format!("{:?}", m.state).to_uppercase()),
                escape(&m.source),
                escape(&m.destination),
                escape(&m.namespaces.join(", "))
            ));
        }
        out.push_str("</table>\n");
    }
    out.push_str(&format!(
        "<p class=\"muted\">Taken at {} (server clock). The same as JSON: <code>GET /admin/status</code>; \
in a terminal: <code>timelock status --server URL</code>.</p>\n</body></html>\n",
        escape(&crate::operations::backup::utc_rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(s.generated_at_unix_ms)
        ))
    ));
    out
}

/// Cluster mode: the leader mode, this node's terms and lease, and who it knows leads what.
fn leadership(out: &mut String, l: &LeadershipStatus) {
    out.push_str("<h2>Leadership</h2>\n<table id=\"leadership\">");
    let shards: Vec<usize> = l.terms.iter().map(|t| t.shard).collect();
    let namespaces: usize = l.terms.iter().map(|t| t.namespaces.len()).sum();
    row(out, "leader mode", &escape(&l.mode));
    row(
        out,
        "shards led",
        &format!(
            "<span id=\"shards-led\">{} of {}</span> ({})",
            shards.len(),
            l.shards,
            escape(&shard_ranges(&shards))
        ),
    );
    row(out, "namespaces led", &namespaces.to_string());
    row(
        out,
        "lease",
        &format!(
            "renewed {} ago{}",
            human_ms(l.lease_renewal_age_ms),
            if shards.is_empty() {
                String::new()
            } else {
                format!(", {} left", human_ms(l.lease_remaining_ms))
            }
        ),
    );
    if !l.unled_shards.is_empty() {
        row(
            out,
            "shards without a leader",
            &format!(
                "<span class=\"bad\">{}</span>",
                escape(&shard_ranges(&l.unled_shards))
            ),
        );
    }
    out.push_str("</table>\n");
    if !l.leaders.is_empty() {
        out.push_str("<table id=\"leaders\"><tr><th>leader</th><th>url</th><th>shards</th></tr>\n");
        for leader in &l.leaders {
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&leader.node),
                escape(&leader.url),
                escape(&shard_ranges(&leader.shards))
            ));
        }
        out.push_str("</table>\n");
    }
    if !l.terms.is_empty() {
        out.push_str("<table id=\"terms\"><tr><th>shard</th><th>term (etcd revision)</th><th>since</th><th>namespaces</th></tr>\n");
        for t in &l.terms {
            out.push_str(&format!(
                "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>\n",
                t.shard,
                t.revision,
                escape(&crate::operations::backup::utc_rfc3339(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.since_unix_ms)
                )),
                escape(&t.namespaces.join(", "))
            ));
        }
        out.push_str("</table>\n");
    }
}

fn row(out: &mut String, key: &str, value_html: &str) {
    out.push_str(&format!("<tr><th>{key}</th><td>{value_html}</td></tr>"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{NamespaceStatus, NodeStatus};

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x")&'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;)&amp;&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn no_value_reaches_the_page_unescaped() {
        // The name rule keeps `<` out of real namespaces; the page must not depend on it.
        let evil = "<script>alert(1)</script>";
        let status = Status {
            version: "1".into(),
            generated_at_unix_ms: 0,
            node: NodeStatus {
                role: "follower".into(),
                serves: false,
                node_id: Some(evil.into()),
                advertise_url: None,
                leader_url: Some(format!("http://x/\"><{evil}")),
                shutting_down: false,
                force_killed: false,
                leadership: Some(crate::status::LeadershipStatus {
                    mode: evil.into(),
                    shards: 2,
                    lease_renewal_age_ms: 1,
                    lease_remaining_ms: 2,
                    terms: vec![crate::status::TermStatus {
                        shard: 0,
                        revision: 7,
                        since_unix_ms: 0,
                        namespaces: vec![evil.into()],
                    }],
                    leaders: vec![crate::status::LeaderStatus {
                        node: evil.into(),
                        url: evil.into(),
                        shards: vec![0],
                    }],
                    unled_shards: vec![1],
                }),
            },
            namespaces: Some(vec![NamespaceStatus {
                name: evil.into(),
                state: NamespaceState::FailStopped,
                last_issued: 1,
                durable_bound: 2,
                locks_held: 0,
                lock_waiters: 0,
                v1_lock_tokens: 0,
                failure: Some(evil.into()),
            }]),
            last_backup: None,
            backup_error: Some(evil.into()),
            migrations_in_flight: vec![],
        };
        let html = render(&status);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            html.contains("<span id=\"shards-led\">1 of 2</span> (0)"),
            "{html}"
        );
    }
}

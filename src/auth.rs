//! Who may do what: the access policy, independent of HTTP and TLS.
//!
//! Unmodified AtlasDB clients send a dummy bearer token (`Bearer omitted`, `Bearer unused`), so
//! nothing here may demand a credential by default: with no `[auth]` settings everything is
//! open, exactly as TimeLock. Each setting closes one door:
//!
//! * `auth.admin_token` (a secret read from a file or an environment variable): every admin and
//!   management operation (`/admin/*`, `/tl/management/*`, invalidate, revalidate) needs it;
//! * `auth.namespace_tokens_file`: lines `<namespace> <token>`; a namespace listed there needs
//!   one of its tokens (or the admin token), other namespaces stay open;
//! * `auth.cert_identities_file`: lines `<identity> <grant>[,<grant>...]` mapping a verified
//!   client certificate's identity (subject CN or a DNS name) to the namespaces it may use, `*`
//!   for all, or `admin`.
//!
//! Answers are `Unauthenticated` (401: no credential, or one we do not know) or `Forbidden`
//! (403: we know who you are, and you may not). Tokens are kept only as SHA-256 digests and
//! compared digest to digest, so the secrets are never logged, never printed by `Debug`, and a
//! comparison's timing says nothing about them.

use std::collections::HashSet;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::AuthSettings;

/// The SHA-256 digest of a bearer token: the policy holds only these, never the tokens.
pub type TokenDigest = [u8; 32];

/// The digest a token is known by.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// The policy's sets and maps: foldhash, seeded at random per map (as [`crate::FastHashMap`]),
/// since a request can look up three of them.
type FastHashSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// The identities of the verified client certificate of a connection (subject CN and DNS
/// names), attached by the TLS listener to every request on it.
#[derive(Debug, Clone)]
pub struct CertificateIdentity(pub std::sync::Arc<[String]>);

/// What a request presents. The bearer token is hashed once, here, however many checks follow
/// (a multi-namespace request checks each namespace).
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// Digest of the token of an `Authorization: Bearer <token>` header.
    bearer: Option<TokenDigest>,
    /// The identities of a verified client certificate (subject CN and DNS names), if any.
    certificate: Option<&'a [String]>,
}

impl<'a> Credentials<'a> {
    pub fn new(bearer: Option<&str>, certificate: Option<&'a [String]>) -> Self {
        Self::with_digest(bearer.map(digest), certificate)
    }

    /// From a bearer token's digest already computed (see `http::auth::TokenMemo`).
    pub fn with_digest(bearer: Option<TokenDigest>, certificate: Option<&'a [String]>) -> Self {
        Self {
            bearer,
            certificate,
        }
    }
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 401: no credential, or an unknown one.
    Unauthenticated(String),
    /// 403: a known credential that does not grant this.
    Forbidden(String),
}

/// What one certificate identity may use.
#[derive(Debug, Default, Clone)]
struct Grants {
    admin: bool,
    all_namespaces: bool,
    namespaces: FastHashSet<String>,
}

/// The loaded policy; see the module docs.
#[derive(Default)]
pub struct AccessPolicy {
    admin_token: Option<TokenDigest>,
    /// Token digest → the namespaces it opens.
    namespace_tokens: crate::FastHashMap<TokenDigest, FastHashSet<String>>,
    /// Namespaces that need a token.
    protected: FastHashSet<String>,
    /// Certificate identity → grants. Empty: certificates grant nothing by themselves.
    identities: crate::FastHashMap<String, Grants>,
}

impl std::fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessPolicy")
            .field("admin_token", &self.admin_token.map(|_| "<secret>"))
            .field("protected_namespaces", &self.protected)
            .field("namespace_tokens", &self.namespace_tokens.len())
            .field("certificate_identities", &self.identities.len())
            .finish()
    }
}

/// Reads a secret named `file:PATH` or `env:NAME`. A literal secret in the configuration is
/// refused: configuration files get copied, committed and printed.
pub fn read_secret(reference: &str, setting: &str) -> Result<String, String> {
    let value = if let Some(path) = reference.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map_err(|e| format!("{setting}: cannot read the secret file {path:?}: {e}"))?
    } else if let Some(name) = reference.strip_prefix("env:") {
        std::env::var(name).map_err(|_| {
            format!("{setting}: the environment variable {name:?} is not set (or not UTF-8)")
        })?
    } else {
        return Err(format!(
            "{setting} must be file:PATH or env:NAME (the secret itself never goes in the configuration)"
        ));
    };
    let value = value.trim().to_string();
    if value.len() < 16 {
        return Err(format!(
            "{setting}: the secret is shorter than 16 characters; use a long random token"
        ));
    }
    Ok(value)
}

/// Lines of `path` without comments and blanks, each split in two at the first whitespace.
fn pairs(path: &Path, setting: &str) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{setting}: cannot read {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(number, line)| {
            line.split_once(char::is_whitespace)
                .map(|(a, b)| (a.to_string(), b.trim().to_string()))
                .filter(|(_, b)| !b.is_empty() && !b.contains(char::is_whitespace))
                .ok_or_else(|| {
                    // Never echo the line: it may hold a token.
                    format!(
                        "{setting}: line {number} of {} must be two fields separated by whitespace",
                        path.display()
                    )
                })
        })
        .collect()
}

impl AccessPolicy {
    /// Loads the policy named by `settings` (reading secrets and files now).
    pub fn load(settings: &AuthSettings) -> Result<Self, String> {
        let mut policy = Self::default();
        if !settings.admin_token.is_empty() {
            let token = read_secret(&settings.admin_token, "auth.admin_token")?;
            policy.admin_token = Some(digest(&token));
        }
        if !settings.namespace_tokens_file.as_os_str().is_empty() {
            let setting = "auth.namespace_tokens_file";
            for (namespace, token) in pairs(&settings.namespace_tokens_file, setting)? {
                crate::namespaces::validate_name(&namespace)
                    .map_err(|e| format!("{setting}: {e}"))?;
                if token.len() < 16 {
                    return Err(format!(
                        "{setting}: the token for namespace {namespace:?} is shorter than 16 characters"
                    ));
                }
                policy.protected.insert(namespace.clone());
                policy
                    .namespace_tokens
                    .entry(digest(&token))
                    .or_default()
                    .insert(namespace);
            }
            if let Some(admin) = policy.admin_token {
                if policy.namespace_tokens.contains_key(&admin) {
                    return Err(format!(
                        "{setting}: a namespace token equals the admin token; give clients their own"
                    ));
                }
            }
        }
        if !settings.cert_identities_file.as_os_str().is_empty() {
            let setting = "auth.cert_identities_file";
            for (identity, list) in pairs(&settings.cert_identities_file, setting)? {
                let grants = policy.identities.entry(identity).or_default();
                for grant in list.split(',').filter(|g| !g.is_empty()) {
                    match grant {
                        "admin" => grants.admin = true,
                        "*" => grants.all_namespaces = true,
                        namespace => {
                            crate::namespaces::validate_name(namespace)
                                .map_err(|e| format!("{setting}: {e}"))?;
                            grants.namespaces.insert(namespace.to_string());
                        }
                    }
                }
            }
        }
        Ok(policy)
    }

    /// Whether any door is closed (if not, the HTTP layer skips the check entirely).
    pub fn is_enforcing(&self) -> bool {
        self.admin_token.is_some() || !self.protected.is_empty() || !self.identities.is_empty()
    }

    /// Whether admin operations need a credential.
    pub fn admin_protected(&self) -> bool {
        self.admin_token.is_some() || self.identities.values().any(|g| g.admin)
    }

    fn certificate_grants<'a>(&'a self, credentials: &Credentials<'_>) -> Option<&'a Grants> {
        let names = credentials.certificate?;
        names.iter().find_map(|name| self.identities.get(name))
    }

    fn is_admin(&self, credentials: &Credentials<'_>) -> bool {
        let by_token = match (self.admin_token, credentials.bearer) {
            (Some(admin), Some(token)) => token == admin,
            _ => false,
        };
        by_token
            || self
                .certificate_grants(credentials)
                .is_some_and(|g| g.admin)
    }

    /// Whether the request carries a credential this policy knows (for 401 versus 403).
    fn is_known(&self, credentials: &Credentials<'_>) -> bool {
        self.certificate_grants(credentials).is_some()
            || credentials
                .bearer
                .is_some_and(|t| self.namespace_tokens.contains_key(&t))
    }

    /// May these credentials perform an admin or management operation?
    pub fn authorize_admin(&self, credentials: &Credentials<'_>) -> Decision {
        if !self.admin_protected() || self.is_admin(credentials) {
            return Decision::Allow;
        }
        if self.is_known(credentials) {
            Decision::Forbidden("this credential may not perform admin operations".into())
        } else {
            Decision::Unauthenticated("admin operations need the admin credential".into())
        }
    }

    /// May these credentials use `namespace`?
    pub fn authorize_namespace(&self, namespace: &str, credentials: &Credentials<'_>) -> Decision {
        if self.is_admin(credentials) {
            return Decision::Allow;
        }
        if !self.identities.is_empty() && credentials.certificate.is_some() {
            return match self.certificate_grants(credentials) {
                Some(g) if g.all_namespaces || g.namespaces.contains(namespace) => Decision::Allow,
                _ => Decision::Forbidden(format!(
                    "this client certificate may not use namespace {namespace:?}"
                )),
            };
        }
        if !self.protected.contains(namespace) {
            return Decision::Allow;
        }
        match credentials
            .bearer
            .and_then(|t| self.namespace_tokens.get(&t))
        {
            Some(namespaces) if namespaces.contains(namespace) => Decision::Allow,
            Some(_) => {
                Decision::Forbidden(format!("this token may not use namespace {namespace:?}"))
            }
            None => {
                Decision::Unauthenticated(format!("namespace {namespace:?} needs its bearer token"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-secret-0123456789";
    const ALPHA: &str = "alpha-secret-0123456789";

    fn policy(identities: &str) -> AccessPolicy {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("admin");
        std::fs::write(&admin, format!("{ADMIN}\n")).unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            format!("# clients\nalpha {ALPHA}\n\nbeta beta-secret-0123456789\n"),
        )
        .unwrap();
        let ids = dir.path().join("ids");
        std::fs::write(&ids, identities).unwrap();
        AccessPolicy::load(&AuthSettings {
            admin_token: format!("file:{}", admin.display()),
            namespace_tokens_file: tokens,
            cert_identities_file: if identities.is_empty() {
                Default::default()
            } else {
                ids
            },
        })
        .unwrap()
    }

    fn bearer(token: &str) -> Credentials<'static> {
        Credentials::new(Some(token), None)
    }

    #[test]
    fn admin_needs_the_admin_token() {
        let p = policy("");
        assert_eq!(p.authorize_admin(&bearer(ADMIN)), Decision::Allow);
        assert!(matches!(
            p.authorize_admin(&Credentials::default()),
            Decision::Unauthenticated(_)
        ));
        assert!(matches!(
            p.authorize_admin(&bearer("omitted")),
            Decision::Unauthenticated(_)
        ));
        assert!(matches!(
            p.authorize_admin(&bearer(ALPHA)),
            Decision::Forbidden(_)
        ));
    }

    #[test]
    fn namespace_tokens_close_only_their_namespaces() {
        let p = policy("");
        assert_eq!(
            p.authorize_namespace("alpha", &bearer(ALPHA)),
            Decision::Allow
        );
        assert_eq!(
            p.authorize_namespace("alpha", &bearer(ADMIN)),
            Decision::Allow
        );
        assert!(matches!(
            p.authorize_namespace("beta", &bearer(ALPHA)),
            Decision::Forbidden(_)
        ));
        assert!(matches!(
            p.authorize_namespace("alpha", &bearer("omitted")),
            Decision::Unauthenticated(_)
        ));
        // Unlisted namespaces stay open to unmodified clients.
        assert_eq!(
            p.authorize_namespace("gamma", &bearer("omitted")),
            Decision::Allow
        );
        assert_eq!(
            p.authorize_namespace("gamma", &Credentials::default()),
            Decision::Allow
        );
    }

    #[test]
    fn certificate_identities_map_to_namespaces_and_admin() {
        let p = policy("svc-a alpha,gamma\nops admin\nall *\n");
        let cert = |names: &'static [String]| Credentials::new(None, Some(names));
        let svc_a: &'static [String] = Box::leak(Box::new(["svc-a".to_string()]));
        let ops: &'static [String] = Box::leak(Box::new(["ops".to_string()]));
        let all: &'static [String] = Box::leak(Box::new(["x".to_string(), "all".to_string()]));
        let stranger: &'static [String] = Box::leak(Box::new(["stranger".to_string()]));
        assert_eq!(
            p.authorize_namespace("alpha", &cert(svc_a)),
            Decision::Allow
        );
        assert_eq!(
            p.authorize_namespace("gamma", &cert(svc_a)),
            Decision::Allow
        );
        assert!(matches!(
            p.authorize_namespace("delta", &cert(svc_a)),
            Decision::Forbidden(_)
        ));
        assert!(matches!(
            p.authorize_admin(&cert(svc_a)),
            Decision::Forbidden(_)
        ));
        assert_eq!(p.authorize_admin(&cert(ops)), Decision::Allow);
        assert_eq!(p.authorize_namespace("delta", &cert(all)), Decision::Allow);
        assert!(matches!(
            p.authorize_namespace("delta", &cert(stranger)),
            Decision::Forbidden(_)
        ));
    }

    #[test]
    fn open_by_default_and_secrets_are_never_literal_or_short() {
        let open = AccessPolicy::load(&AuthSettings::default()).unwrap();
        assert!(!open.is_enforcing());
        assert_eq!(
            open.authorize_admin(&Credentials::default()),
            Decision::Allow
        );
        assert!(read_secret(ADMIN, "s")
            .unwrap_err()
            .contains("file:PATH or env:NAME"));
        std::env::set_var("TIMELOCK_TEST_SHORT_SECRET", "short");
        assert!(read_secret("env:TIMELOCK_TEST_SHORT_SECRET", "s")
            .unwrap_err()
            .contains("shorter"));
        std::env::set_var("TIMELOCK_TEST_SECRET", ADMIN);
        assert_eq!(read_secret("env:TIMELOCK_TEST_SECRET", "s").unwrap(), ADMIN);
        assert!(!format!("{:?}", policy("")).contains(ADMIN));
    }
}

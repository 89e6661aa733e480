//! Who may call what: the role each path needs, and the check of a
//! request's basic-auth credentials against the web configuration.
//!
//! With no `basic_auth_users`, every request passes (roles need users).
//! With users: no or wrong credentials is [`Denied::Unauthenticated`]
//! (401); a user without the role the path needs is [`Denied::Forbidden`]
//! (403). A user without a `promraft_roles` entry has read and write.
//!
//! bcrypt is slow on purpose (about 50 ms at cost 10), and a remote-write
//! sender authenticates every request, so successful checks are cached by
//! a SHA-256 of user, password and stored hash (never the password
//! itself); the cache is bounded by [`AUTH_CACHE_ENTRIES_MAX`]. Failed
//! checks are never cached.

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::file::WebSettings;

/// Successful credential checks remembered at once. Each is 32 bytes; a
/// node has a few dozen distinct senders and users, so 4096 never evicts
/// in practice, and when it is full it is simply emptied (the next check
/// of each user pays bcrypt once more).
pub const AUTH_CACHE_ENTRIES_MAX: usize = 4_096;

/// A role of `promraft_roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Queries, metadata, status, `/metrics`.
    Read,
    /// Remote write (and so `promraft import`).
    Write,
    /// Everything under `/api/v1/admin/`: backup, snapshot, delete,
    /// export, cluster membership; and `POST /-/reload`.
    Admin,
}

impl Role {
    /// The name used in the file and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Role, ()> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            _ => Err(()),
        }
    }
}

/// The role a path needs; `None` for the health endpoints, which stay
/// open so that orchestrator probes need no credentials (they reveal only
/// whether the node serves and is ready; docs/security.md).
pub fn role_for_path(path: &str) -> Option<Role> {
    match path {
        "/-/healthy" | "/-/ready" => None,
        "/api/v1/write" => Some(Role::Write),
        // Prometheus serves it only with --web.enable-lifecycle; promraft
        // with the admin API.
        "/-/reload" => Some(Role::Admin),
        p if p.starts_with("/api/v1/admin/") || p == "/api/v1/admin" => Some(Role::Admin),
        _ => Some(Role::Read),
    }
}

/// Why a request may not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, a malformed header, an unknown user or a wrong
    /// password.
    Unauthenticated,
    /// The user is known but lacks the role.
    Forbidden {
        /// The user.
        user: String,
        /// The role the path needs.
        role: Role,
    },
}

/// The roles of `user` under `settings`.
pub fn roles_of(settings: &WebSettings, user: &str) -> BTreeSet<Role> {
    match settings.roles.get(user) {
        Some(r) => r.clone(),
        None => BTreeSet::from([Role::Read, Role::Write]),
    }
}

/// `(user, password)` from an `Authorization: Basic ...` header value.
pub fn parse_basic(header: Option<&[u8]>) -> Option<(String, String)> {
    let h = std::str::from_utf8(header?).ok()?;
    let (scheme, rest) = h.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// A bounded set of successful checks.
#[derive(Default)]
pub struct AuthCache {
    ok: HashSet<[u8; 32]>,
}

impl AuthCache {
    fn key(user: &str, password: &str, hash: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        // Lengths first, so no two different triples hash the same input.
        for part in [user, password, hash] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        self.ok.contains(key)
    }

    fn insert(&mut self, key: [u8; 32]) {
        if self.ok.len() >= AUTH_CACHE_ENTRIES_MAX {
            self.ok.clear();
        }
        self.ok.insert(key);
    }
}

/// A bcrypt hash (cost 10, the usual) of a random password, checked when
/// the user is unknown so that an unknown user costs as much as a wrong
/// password (no timing oracle for user names).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let secret: [u8; 16] = rand::random();
        bcrypt::hash(secret, 10).unwrap_or_default()
    })
}

/// Checks the credentials in `authorization` for a request that needs
/// `role`. bcrypt runs on a blocking thread.
pub async fn check(
    settings: &WebSettings,
    cache: &parking_lot::Mutex<AuthCache>,
    authorization: Option<&[u8]>,
    role: Role,
) -> Result<Option<String>, Denied> {
    if settings.users.is_empty() {
        return Ok(None);
    }
    let Some((user, password)) = parse_basic(authorization) else {
        return Err(Denied::Unauthenticated);
    };
    let known = settings.users.get(&user).cloned();
    let hash = known.clone().unwrap_or_else(|| dummy_hash().to_string());
    let key = AuthCache::key(&user, &password, &hash);
    let cached = known.is_some() && cache.lock().contains(&key);
    if !cached {
        let (p, h) = (password.clone(), hash.clone());
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(p, &h).unwrap_or(false))
            .await
            .unwrap_or(false);
        if !ok || known.is_none() {
            return Err(Denied::Unauthenticated);
        }
        cache.lock().insert(key);
    }
    if roles_of(settings, &user).contains(&role) {
        Ok(Some(user))
    } else {
        Err(Denied::Forbidden { user, role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_need_roles() {
        assert_eq!(role_for_path("/-/healthy"), None);
        assert_eq!(role_for_path("/api/v1/write"), Some(Role::Write));
        assert_eq!(role_for_path("/api/v1/admin/backup"), Some(Role::Admin));
        assert_eq!(role_for_path("/-/reload"), Some(Role::Admin));
        assert_eq!(role_for_path("/api/v1/admin/cluster/promote"), Some(Role::Admin));
        assert_eq!(role_for_path("/api/v1/query"), Some(Role::Read));
        assert_eq!(role_for_path("/metrics"), Some(Role::Read));
    }

    #[test]
    fn basic_header_parses_and_rejects_garbage() {
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pa:ss")
        );
        assert_eq!(parse_basic(Some(v.as_bytes())), Some(("alice".into(), "pa:ss".into())));
        assert_eq!(parse_basic(Some(b"Bearer x")), None);
        assert_eq!(parse_basic(Some(b"Basic !!!")), None);
        assert_eq!(parse_basic(Some(&[0xff, 0xfe])), None);
        assert_eq!(parse_basic(None), None);
    }

    #[tokio::test]
    async fn check_caches_success_only_and_applies_roles() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let text = format!("basic_auth_users:\n  alice: {hash}\n  bob: {hash}\npromraft_roles:\n  alice: [read]\n");
        let s = super::super::file::parse(&text, std::path::Path::new(".")).unwrap();
        let cache = parking_lot::Mutex::new(AuthCache::default());
        let auth = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        let a = auth("alice", "secret");
        assert_eq!(
            check(&s, &cache, Some(a.as_bytes()), Role::Read).await,
            Ok(Some("alice".into()))
        );
        assert_eq!(cache.lock().ok.len(), 1);
        assert_eq!(
            check(&s, &cache, Some(a.as_bytes()), Role::Write).await,
            Err(Denied::Forbidden {
                user: "alice".into(),
                role: Role::Write
            })
        );
        let wrong = auth("alice", "nope");
        assert_eq!(
            check(&s, &cache, Some(wrong.as_bytes()), Role::Read).await,
            Err(Denied::Unauthenticated)
        );
        assert_eq!(cache.lock().ok.len(), 1, "failures are not cached");
        let b = auth("bob", "secret");
        assert!(check(&s, &cache, Some(b.as_bytes()), Role::Write).await.is_ok());
        assert!(matches!(
            check(&s, &cache, Some(b.as_bytes()), Role::Admin).await,
            Err(Denied::Forbidden { .. })
        ));
        let nobody = auth("carol", "secret");
        assert_eq!(
            check(&s, &cache, Some(nobody.as_bytes()), Role::Read).await,
            Err(Denied::Unauthenticated)
        );
        assert_eq!(check(&s, &cache, None, Role::Read).await, Err(Denied::Unauthenticated));
    }
}

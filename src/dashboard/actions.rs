//! Retry and Dismiss from the dashboard, the GitOps way: a confirmation page says what the
//! request would match and whether it would be Rejected or wait, then the request is written
//! under `requests/` (`crate::request_file`) and committed with the dashboard user as the
//! author; the next pass runs it. Owns who may act and the cross-site checks.
//!
//! Invariants: without a token every action answers 403. A POST whose `Origin` or
//! `Sec-Fetch-Site` names another site is refused whatever else it carries; a form must carry
//! the CSRF token of the session (derived from the session id and a key made at start, so
//! nothing is stored). The token itself never appears in a page or a log.

use std::io::Read;
use std::path::Path;

use axum::http::HeaderMap;
use axum::http::header;
use sha2::{Digest, Sha256};

use crate::config::{ErrorFilter, RequestAction};
use crate::request_file::{self, Assessment};

use super::DashboardError;
use super::filter::ErrorParams;

/// The name of the session cookie.
const COOKIE: &str = "dualwrite_session";

/// The dashboard token: who acts and the secret that proves it.
#[derive(Clone)]
pub struct Token {
    /// The dashboard user, the author of the commits (`Name` or `Name <email>`).
    pub user: String,
    secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a dashboard token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the dashboard token names its user (user:secret) unless --dashboard-user does")]
    NoUser,
    #[error("the dashboard token is too short (8 characters at least)")]
    TooShort,
}

impl Token {
    /// The token from the value of its variable: `user:secret`, or the secret alone with
    /// `user` given apart (`--dashboard-user`).
    pub fn parse(value: &str, user: Option<&str>) -> Result<Token, TokenError> {
        let (user, secret) = match (user, value.split_once(':')) {
            (Some(user), _) => (user.to_string(), value.to_string()),
            (None, Some((user, _))) if !user.is_empty() => (user.to_string(), value.to_string()),
            _ => return Err(TokenError::NoUser),
        };
        if secret.len() < 8 {
            return Err(TokenError::TooShort);
        }
        Ok(Token { user, secret })
    }

    /// Whether `given` is the secret (in time that does not depend on where they differ).
    pub(crate) fn accepts(&self, given: &str) -> bool {
        let a = Sha256::digest(given.as_bytes());
        let b = Sha256::digest(self.secret.as_bytes());
        a.iter().zip(b.iter()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }

    /// The commit author: `Name <email>`.
    fn author(&self) -> String {
        if self.user.contains('<') {
            self.user.clone()
        } else {
            let local: String = self
                .user
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '.' })
                .collect();
            format!("{} <{local}@dashboard.invalid>", self.user)
        }
    }
}

/// Sessions: signed ids in a cookie, and the CSRF token of each, from a key made at start.
pub(crate) struct Sessions {
    key: [u8; 32],
}

fn hex_of(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

impl Sessions {
    pub fn new() -> Sessions {
        let mut key = [0u8; 32];
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key));
        if read.is_err() {
            // No urandom: a key from the clock and the process is still unknown to a
            // cross-site page, which is what it guards against.
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            key.copy_from_slice(&Sha256::digest(seed.as_bytes()));
        }
        Sessions { key }
    }

    fn sign(&self, what: &str, id: &str) -> String {
        hex_of(&[&self.key, what.as_bytes(), id.as_bytes()])
    }

    /// A new session: the `Set-Cookie` value.
    pub fn open(&self) -> String {
        let id = hex_of(&[
            &self.key,
            format!("{:?}", std::time::SystemTime::now()).as_bytes(),
        ]);
        let id = &id[..32];
        format!(
            "{COOKIE}={id}.{}; Path=/; HttpOnly; SameSite=Strict",
            self.sign("session", id)
        )
    }

    /// The session id of the request's cookie, when it is one of ours.
    pub fn of(&self, headers: &HeaderMap) -> Option<String> {
        let cookies = headers.get_all(header::COOKIE);
        cookies
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))
            .filter_map(|v| v.split_once('.'))
            .find(|(id, sig)| self.sign("session", id) == *sig)
            .map(|(id, _)| id.to_string())
    }

    /// The CSRF token of a session.
    pub fn csrf(&self, session: &str) -> String {
        self.sign("csrf", session)[..40].to_string()
    }
}

/// Whether a POST comes from the dashboard's own pages: refused when `Sec-Fetch-Site` or
/// `Origin` names another site. A request with neither (not from a browser) passes this
/// check; it still needs the session and the form's token.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    match (text("origin"), text("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        (Some(_), None) => false,
    }
}

/// What a Retry or Dismiss form carries.
#[derive(Debug)]
pub(crate) struct ActionForm {
    pub csrf: String,
    pub action: RequestAction,
    /// "Retry selected" / "Dismiss selected": only the ticked ids.
    pub selected: bool,
    pub ids: Vec<i64>,
    pub params: ErrorParams,
}

impl ActionForm {
    /// Reads an `application/x-www-form-urlencoded` body (ids repeat: `id=1&id=2`).
    pub fn parse(body: &str) -> Result<ActionForm, DashboardError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(body)
            .map_err(|e| DashboardError::BadRequest(format!("the form: {e}")))?;
        let mut csrf = String::new();
        let mut todo = String::new();
        let mut ids = Vec::new();
        let mut rest = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "csrf" => csrf = v,
                "do" => todo = v,
                "id" => ids.push(
                    v.parse::<i64>()
                        .map_err(|_| DashboardError::BadRequest(format!("id {v:?}")))?,
                ),
                _ => rest.push((k, v)),
            }
        }
        let params: ErrorParams =
            serde_urlencoded::from_str(&serde_urlencoded::to_string(&rest).expect("pairs encode"))
                .map_err(|e| DashboardError::BadRequest(format!("the form: {e}")))?;
        let (action, selected) = match todo.as_str() {
            "retry-selected" => (RequestAction::Retry, true),
            "retry-all" => (RequestAction::Retry, false),
            "dismiss-selected" => (RequestAction::Dismiss, true),
            "dismiss-all" => (RequestAction::Dismiss, false),
            other => {
                return Err(DashboardError::BadRequest(format!(
                    "do {other:?}: retry-selected, retry-all, dismiss-selected or dismiss-all"
                )));
            }
        };
        if selected && ids.is_empty() {
            return Err(DashboardError::BadRequest(
                "nothing selected: tick the records to act on".into(),
            ));
        }
        Ok(ActionForm {
            csrf,
            action,
            selected,
            ids: if selected { ids } else { Vec::new() },
            params,
        })
    }

    /// The value of the `do` field that asks for this again.
    pub fn todo(&self) -> &'static str {
        match (self.action, self.selected) {
            (RequestAction::Retry, true) => "retry-selected",
            (RequestAction::Retry, false) => "retry-all",
            (RequestAction::Dismiss, true) => "dismiss-selected",
            (RequestAction::Dismiss, false) => "dismiss-all",
        }
    }

    /// The map (required) and the filter the request carries.
    pub fn request(&self) -> Result<(String, ErrorFilter), DashboardError> {
        let map = self.params.map().map(str::to_string).ok_or_else(|| {
            DashboardError::BadRequest(
                "a request acts on the records of one map: choose a map".into(),
            )
        })?;
        let mut filter = self.params.selection()?.filter;
        filter.ids = self.ids.clone();
        Ok((map, filter))
    }
}

/// What the confirmation page says.
pub(crate) struct Preview {
    pub map: String,
    pub assessment: Assessment,
    /// A Retry waits while the map is not Running: its phase now.
    pub phase: String,
}

/// What the request would do, read from the store.
pub(crate) fn preview(
    view: &super::source::View,
    form: &ActionForm,
) -> Result<Preview, DashboardError> {
    let (map, filter) = form.request()?;
    view.require_map(&map)?;
    let store = view.store()?;
    let assessment = request_file::assess(store, &view.cfg, &map, &filter)?;
    let phase = store
        .maps()?
        .into_iter()
        .find(|m| m.name == map)
        .map_or_else(
            || "NotRunning".to_string(),
            |m| super::pages::name(&m.phase),
        );
    Ok(Preview {
        map,
        assessment,
        phase,
    })
}

/// Writes the request and commits it with the dashboard user as the author. Returns its
/// name. A request that would be Rejected is not written; nothing is left when the commit
/// fails.
pub(crate) fn submit(
    dir: &Path,
    view: &super::source::View,
    form: &ActionForm,
    token: &Token,
) -> Result<String, DashboardError> {
    let p = preview(view, form)?;
    if let Some(reason) = p.assessment.rejected {
        return Err(DashboardError::BadRequest(format!(
            "the request would be Rejected: {reason}; nothing written"
        )));
    }
    let (map, filter) = form.request()?;
    let now = chrono::Utc::now();
    let name = request_file::default_name(form.action, &map, now);
    let by = format!("the dashboard (user {})", token.user);
    let relative = request_file::write(
        dir,
        &request_file::NewRequest {
            name: &name,
            map: &map,
            action: form.action,
            filter: &filter,
            by: &by,
            now,
        },
    )
    .map_err(|e| DashboardError::BadRequest(e.to_string()))?;
    let path = relative.to_string_lossy().into_owned();
    let verb = match form.action {
        RequestAction::Retry => "Retry",
        RequestAction::Dismiss => "Dismiss",
    };
    let message =
        format!("{verb} errored records of map {map} (request {name}, from the dashboard)");
    let author = token.author();
    let env = [
        ("GIT_COMMITTER_NAME", "dualwrite dashboard"),
        ("GIT_COMMITTER_EMAIL", "dashboard@dualwrite.invalid"),
    ];
    let git = |args: &[&str]| crate::config::loader::git_with_env(dir, args, &env);
    let committed = git(&["add", "--", &path]).and_then(|_| {
        git(&[
            "commit",
            "-q",
            "--no-verify",
            "-m",
            &message,
            "--author",
            &author,
            "--",
            &path,
        ])
    });
    if let Err(e) = committed {
        let _ = git(&["rm", "-q", "--cached", "--", &path]);
        let _ = std::fs::remove_file(dir.join(&relative));
        return Err(DashboardError::Commit(format!("{path}: {e}")));
    }
    tracing::info!(request = %name, map = %map, user = %token.user, "dashboard request committed");
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_names_its_user_and_never_shows_its_secret() {
        let t = Token::parse("alice:s3cret-value", None).unwrap();
        assert_eq!(t.user, "alice");
        assert!(t.accepts("alice:s3cret-value"));
        assert!(!t.accepts("alice:s3cret-valuf"));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert_eq!(t.author(), "alice <alice@dashboard.invalid>");
        assert!(Token::parse("nouser", None).is_err());
    }

    #[test]
    fn another_origin_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:9465".parse().unwrap());
        assert!(same_origin(&h));
        h.insert("origin", "http://127.0.0.1:9465".parse().unwrap());
        assert!(same_origin(&h));
        h.insert("origin", "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert("origin", "http://127.0.0.1:9465".parse().unwrap());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h));
    }

    #[test]
    fn sessions_are_signed() {
        let s = Sessions::new();
        let cookie = s.open();
        let value = cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, value.parse().unwrap());
        let id = s.of(&h).unwrap();
        assert_eq!(s.csrf(&id).len(), 40);
        h.insert(header::COOKIE, format!("{COOKIE}={id}.00").parse().unwrap());
        assert_eq!(s.of(&h), None);
    }
}

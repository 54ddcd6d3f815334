//! Who may use the HTTP server (#11). The dashboard asks for a login once — `/?token=T` (as
//! Jupyter does) or the login form, which POSTs the token — and then keeps a cookie: a
//! random session id this server maps to the user in memory (never the token itself),
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it),
//! `Secure` over TLS. The JSON API takes the cookie or `Authorization: Bearer <token>`;
//! `/metrics` a bearer token unless `metrics_public`. Everything but the login POST is a
//! read-only GET; the POST checks that its `Origin` is this server's own (CSRF).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use flame_core::auth::{Principal, BEARER_PREFIX};
use flame_core::FlameError;

use crate::security::Security;

/// The cookie holding a dashboard login.
pub const COOKIE: &str = "flame_session";
/// How long a dashboard login lasts.
const LOGIN_FOR: Duration = Duration::from_secs(12 * 3600);
/// Most logins kept at once (the oldest go first beyond it).
const MAX_LOGINS: usize = 10_000;

const LOGIN_HTML: &str = include_str!("assets/login.html");

/// What the HTTP server checks requests against.
#[derive(Clone)]
pub struct HttpAuth {
    pub security: Arc<Security>,
    /// `/metrics` without a token (config `metrics_public`).
    pub metrics_public: bool,
    /// Served over TLS: cookies are `Secure`.
    pub secure: bool,
    logins: Arc<Mutex<HashMap<String, (Principal, Instant)>>>,
}

impl HttpAuth {
    pub fn new(security: Arc<Security>, metrics_public: bool, secure: bool) -> Self {
        Self {
            security,
            metrics_public,
            secure,
            logins: Arc::default(),
        }
    }

    /// The user of a token, for a login or a bearer header.
    fn user_of(&self, token: &str) -> Result<Principal, FlameError> {
        let entry = self.security.tokens.check(token)?;
        match entry.principal() {
            Some(p @ Principal::User { .. }) => Ok(p),
            _ => Err(FlameError::Unauthenticated(format!(
                "the {} token {} is not a user token; the dashboard and the API take user \
                 tokens",
                entry.kind.as_str(),
                entry.id
            ))),
        }
    }

    /// A new login for `user`: the `Set-Cookie` value.
    fn login(&self, user: Principal) -> String {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).expect("the OS random source failed");
        let sid: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        logins.retain(|_, (_, until)| *until > now);
        if logins.len() >= MAX_LOGINS {
            let oldest = logins
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                logins.remove(&k);
            }
        }
        logins.insert(sid.clone(), (user, now + LOGIN_FOR));
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
            LOGIN_FOR.as_secs()
        )
    }

    /// The user of a login cookie still valid.
    fn cookie_user(&self, headers: &HeaderMap) -> Option<Principal> {
        let sid = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))?;
        let logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        let (user, until) = logins.get(sid)?;
        (*until > Instant::now()).then(|| user.clone())
    }
}

/// A refusal: 401 with JSON (or the login page for the dashboard's own page).
fn unauthorized(e: FlameError) -> Response {
    let body = serde_json::json!({ "error": e.to_string() });
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let html = LOGIN_HTML.replace("{{message}}", &escaped);
    (status, Html(html)).into_response()
}

/// The `token` of a `?token=` query or of a `token=` form body.
fn token_param(s: &str) -> Option<&str> {
    s.split('&').find_map(|kv| kv.strip_prefix("token="))
}

/// A POST comes from a page of this very server (`Origin` names its `Host`).
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (host, origin) {
        (Some(h), Some(o)) => {
            let o = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"));
            o == Some(h)
        }
        _ => false,
    }
}

/// The login form's POST: a cookie and back to the dashboard, or the form again.
pub async fn post_login(State(auth): State<HttpAuth>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&headers) {
        let e = FlameError::PermissionDenied(
            "a login must come from this dashboard's own page (Origin does not match Host)".into(),
        );
        let body = serde_json::json!({ "error": e.to_string() });
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let text = String::from_utf8_lossy(&body);
    let token = token_param(&text).unwrap_or("");
    match auth.user_of(token) {
        Ok(user) => {
            let cookie = auth.login(user);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(e) => login_page(StatusCode::UNAUTHORIZED, &e.to_string()),
    }
}

/// The middleware in front of every route: finds the caller and puts its [`Principal`] in
/// the request's extensions, or answers for it (login page, cookie, 401).
pub async fn require_login(State(auth): State<HttpAuth>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // Static assets hold no data; the login POST is its own handler.
    if path == "/app.js"
        || path == "/style.css"
        || (path == "/login" && req.method() == Method::POST)
    {
        return next.run(req).await;
    }
    let is_page = path == "/";
    let is_metrics = path == "/metrics";
    // `/?token=T`: log in, then the dashboard without the token in the address bar.
    if is_page {
        if let Some(token) = req.uri().query().and_then(token_param) {
            return match auth.user_of(token) {
                Ok(user) => {
                    let cookie = auth.login(user);
                    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
                }
                Err(e) => login_page(StatusCode::UNAUTHORIZED, &e.to_string()),
            };
        }
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix(BEARER_PREFIX).unwrap_or(v).to_string());
    let user = match bearer {
        Some(t) => match auth.user_of(&t) {
            Ok(u) => Some(u),
            Err(e) if is_page => return login_page(StatusCode::UNAUTHORIZED, &e.to_string()),
            Err(e) => return unauthorized(e),
        },
        // `/metrics` takes a bearer token, not the dashboard's cookie.
        None if is_metrics => None,
        None => auth.cookie_user(req.headers()),
    };
    match user {
        Some(u) => {
            req.extensions_mut().insert(u);
            next.run(req).await
        }
        None if is_metrics && auth.metrics_public => next.run(req).await,
        None if is_page => login_page(StatusCode::UNAUTHORIZED, ""),
        None => unauthorized(FlameError::Unauthenticated(if is_metrics {
            "no token: /metrics needs 'Authorization: Bearer <token>' (or metrics_public = \
             true in the head's config)"
                .into()
        } else {
            "no token: log in to the dashboard (/?token=<token>) or send 'Authorization: \
             Bearer <token>'"
                .into()
        })),
    }
}

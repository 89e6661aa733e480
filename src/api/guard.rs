//! The gate every request passes before its handler: credentials and
//! roles (`web::auth`), the admin API switch, and the response headers of
//! the web configuration.
//!
//! Order: 401 (no or wrong credentials) before 403 (a role is missing)
//! before the admin switch (500 `admin APIs disabled`, exactly what
//! Prometheus 2.42 answers). The health endpoints pass without credentials.

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::web::auth::{self, Denied, Role};

/// What Prometheus answers on an admin endpoint without
/// `--web.enable-admin-api`: HTTP 500 with errorType `unavailable`
/// (checked against Prometheus 2.42).
pub fn admin_disabled() -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        error_type: "unavailable",
        message: "admin APIs disabled".into(),
    }
}

/// The middleware.
pub async fn guard(State(node): State<AppState>, req: Request, next: Next) -> Response {
    let settings = node.web.current();
    let path = req.uri().path().to_string();
    let mut resp = match auth::role_for_path(&path) {
        None => next.run(req).await,
        Some(role) => {
            let authz = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
            match auth::check(&settings, &node.web.cache, authz.as_deref(), role).await {
                Err(Denied::Unauthenticated) => {
                    node.web
                        .auth_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (
                        StatusCode::UNAUTHORIZED,
                        [
                            (header::WWW_AUTHENTICATE, "Basic"),
                            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                        ],
                        "Unauthorized\n",
                    )
                        .into_response()
                }
                Err(Denied::Forbidden { user, role }) => forbidden(&path, &user, role),
                Ok(_) if role == Role::Admin && !node.enable_admin_api => admin_disabled().into_response(),
                Ok(_) => next.run(req).await,
            }
        }
    };
    let h = resp.headers_mut();
    for (name, value) in &settings.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            h.insert(n, v);
        }
    }
    resp
}

/// 403 naming the role: Prometheus's error JSON under `/api/`, text
/// elsewhere.
fn forbidden(path: &str, user: &str, role: Role) -> Response {
    let msg = format!(
        "user {user:?} lacks the role {:?} that {path} needs (promraft_roles in the web config)",
        role.name()
    );
    if path.starts_with("/api/") {
        ApiError {
            status: StatusCode::FORBIDDEN,
            error_type: "forbidden",
            message: msg,
        }
        .into_response()
    } else {
        (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            msg + "\n",
        )
            .into_response()
    }
}

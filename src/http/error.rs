//! The one place where a failure becomes an HTTP status and an RFC error code.

use http::{header, HeaderValue, Response, StatusCode};

use super::{json_response, Body};
use crate::metadata::MetadataError;
use crate::registry;

/// The challenge of every token-protected resource (SPEC §6a.23).
const BEARER: &str = "Bearer realm=\"certgate\"";

/// An error answer: status, RFC error code, description, and how to challenge.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// Extra headers such as `Allow` or `WWW-Authenticate`.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error without extra headers.
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            headers: Vec::new(),
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// 401 `invalid_token` for a presented token, with its RFC 6750 §3.1 challenge.
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", description).with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"certgate\", error=\"invalid_token\""),
        )
    }

    /// 401 for a token-protected resource asked without a token: the challenge carries no
    /// error code (RFC 6750 §3.1).
    pub fn token_required(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static(BEARER))
    }

    /// 503 `temporarily_unavailable`: the node cannot commit changes now.
    pub fn unavailable(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description,
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
    }

    /// 404 for a path certgate does not serve.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    /// 405 with the methods the path allows.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("allowed methods: {allow}"),
        )
        .with_header(header::ALLOW, HeaderValue::from_static(allow))
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The JSON error response (`Cache-Control: no-store` like every answer that may
    /// concern credentials).
    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({
            "error": self.code,
            "error_description": self.description,
        });
        let mut resp = json_response(self.status, &body, true);
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
        resp
    }
}

impl From<registry::Error> for ApiError {
    fn from(e: registry::Error) -> Self {
        use registry::Error as E;
        match e {
            E::Metadata(MetadataError::RedirectUri(d)) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_redirect_uri", d)
            }
            E::Metadata(MetadataError::ClientMetadata(d)) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_client_metadata", d)
            }
            E::Metadata(MetadataError::InvalidSoftwareStatement(d)) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_software_statement", d)
            }
            E::Metadata(MetadataError::UnapprovedSoftwareStatement(d)) => {
                Self::new(StatusCode::BAD_REQUEST, "unapproved_software_statement", d)
            }
            E::InvalidRequest(d) => Self::invalid_request(d),
            // Client authentication at /token, /introspect, /revoke: a Basic challenge
            // whatever method was tried (SPEC §6a.23, RFC 6749 §5.2).
            E::InvalidClient(d) => Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
                .with_header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"certgate\""),
                ),
            E::RegistrationDenied(d) => Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
                .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static(BEARER)),
            E::InvalidToken(d) => Self::invalid_token(d),
            E::InsufficientScope(d) => Self::new(StatusCode::FORBIDDEN, "insufficient_scope", d)
                .with_header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"certgate\", error=\"insufficient_scope\"",
                    ),
                ),
            E::NotFound(d) => Self::new(StatusCode::NOT_FOUND, "not_found", d),
            E::InvalidGrant(d) => Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d),
            E::InvalidScope(d) => Self::new(StatusCode::BAD_REQUEST, "invalid_scope", d),
            E::UnsupportedGrantType(d) => {
                Self::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", d)
            }
            E::UnauthorizedClient(d) => {
                Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", d)
            }
            E::Unavailable(d) => {
                // The details (a file, a database error) are for the operator's log.
                tracing::error!(error = %d, "storage unavailable");
                Self::unavailable("the registry cannot be reached or changed right now")
            }
        }
    }
}

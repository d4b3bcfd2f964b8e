//! `POST /token`, `/introspect`, `/revoke`: form-encoded, client-authenticated.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{header, HeaderMap, Request, Response, StatusCode};

use super::error::ApiError;
use super::RequestBody;
use super::{json_response, read_body, require_media_type, Body, Ctx};
use crate::registry::{Authenticated, ClientCredentials};

/// Form bodies are small; anything larger is not a token request.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// `POST /token` (client_credentials).
pub async fn token(
    ctx: &mut Ctx<'_>,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (client, form, cert) = authenticate(ctx, req).await?;
    let grant = ctx
        .app
        .registry
        .issue_token(
            &client,
            form.get("grant_type").map(String::as_str),
            form.get("scope").map(String::as_str),
            cert.as_deref(),
        )
        .await?;
    Ok(json_response(StatusCode::OK, &grant, true))
}

/// `POST /introspect` (RFC 7662).
pub async fn introspect(
    ctx: &mut Ctx<'_>,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (client, form, _) = authenticate(ctx, req).await?;
    let token = form
        .get("token")
        .ok_or_else(|| ApiError::invalid_request("the token parameter is required"))?;
    let body = ctx.app.registry.introspect(&client, token).await?;
    Ok(json_response(StatusCode::OK, &body, true))
}

/// `POST /revoke` (RFC 7009).
pub async fn revoke(
    ctx: &mut Ctx<'_>,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (client, form, _) = authenticate(ctx, req).await?;
    let token = form
        .get("token")
        .ok_or_else(|| ApiError::invalid_request("the token parameter is required"))?;
    ctx.app.registry.revoke(&client, token).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({}), true))
}

type Form = HashMap<String, String>;
type Cert = Option<std::sync::Arc<crate::identity::ClientCertificate>>;

async fn authenticate(
    ctx: &mut Ctx<'_>,
    req: Request<RequestBody>,
) -> Result<(Authenticated, Form, Cert), ApiError> {
    let cert = ctx.cert(req.headers())?;
    let basic = basic_credentials(req.headers())?;
    let registry = &ctx.app.registry;
    if let Some(basic) = &basic {
        // Credentials in the header are judged before the body is read: a caller with
        // wrong ones gets its 401 without making the server buffer anything (SPEC §8).
        let early = ClientCredentials {
            basic: Some(basic.clone()),
            ..ClientCredentials::default()
        };
        registry
            .authenticate_client(&early, cert.as_deref())
            .await?;
    }
    let form = form(req, ctx.app.config.limits.request_timeout).await?;
    let creds = ClientCredentials {
        basic,
        client_id: form.get("client_id").cloned(),
        client_secret: form.get("client_secret").cloned(),
    };
    // Again with the body: it must not contradict the header (RFC 6749 §2.3).
    let client = registry
        .authenticate_client(&creds, cert.as_deref())
        .await?;
    ctx.client_id = Some(client.client_id.clone());
    Ok((client, form, cert))
}

/// `Authorization: Basic` credentials, form-decoded as RFC 6749 §2.3.1 requires.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || ApiError::invalid_request("malformed Basic credentials");
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, b64)) = value.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(b64.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let decode = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((decode(id), decode(secret))))
}

/// An `application/x-www-form-urlencoded` body; repeated parameters are refused
/// (RFC 6749 §3.1).
async fn form(req: Request<RequestBody>, timeout: std::time::Duration) -> Result<Form, ApiError> {
    require_media_type(req.headers(), "application/x-www-form-urlencoded")?;
    let bytes = read_body(req, MAX_FORM_BYTES, timeout).await?;
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(ApiError::invalid_request(format!(
                "parameter {k:?} is repeated"
            )));
        }
    }
    Ok(out)
}

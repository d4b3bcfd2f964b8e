//! `POST /register` (RFC 7591) and `GET|PUT|DELETE /register/{client_id}` (RFC 7592).

use http::{Method, Request, Response, StatusCode};

use super::error::ApiError;
use super::RequestBody;
use super::{bearer, json_object, raw_json, Body, Ctx};
use crate::config::RegistrationAuth;
use crate::registry::{ManageOp, Outcome, TokenKind};
use crate::secret;

/// `POST /register`.
pub async fn register(
    ctx: &mut Ctx<'_>,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let cert = ctx.cert(req.headers())?;
    let registry = &ctx.app.registry;
    let accepts_token = registry
        .settings()
        .authentication
        .contains(&RegistrationAuth::InitialAccessToken);
    let initial = match bearer(req.headers())? {
        Some(token) if accepts_token => {
            Some(registry.initial_access(token, cert.as_deref()).await?)
        }
        _ => None,
    };
    registry.authorize_registration(cert.as_deref(), initial.is_some())?;
    let body = json_object(
        req,
        ctx.app.config.registration.max_body_bytes,
        ctx.app.config.limits.request_timeout,
    )
    .await?;
    // The initial access token's use is spent with the registration, in one commit.
    let resp = registry
        .register(body, cert.as_deref(), initial.and_then(|i| i.consumes))
        .await?;
    ctx.app.metrics.registrations.inc();
    ctx.client_id = Some(resp.client_id.as_str().into());
    Ok(raw_json(StatusCode::CREATED, resp.to_json().into(), true))
}

/// `GET|PUT|DELETE /register/{client_id}`.
pub async fn manage(
    ctx: &mut Ctx<'_>,
    client_id: &str,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    ctx.client_id = Some(client_id.into());
    let cert = ctx.cert(req.headers())?;
    let token = bearer(req.headers())?
        .ok_or_else(|| ApiError::token_required("a registration access token is required"))?
        .to_owned();
    if !secret::well_formed(&token) {
        return Err(ApiError::invalid_token("unknown, expired or revoked token"));
    }
    // Which kind of token this is, and whether an access token may manage at all, is
    // settled before the body is read: a caller without a usable token learns nothing
    // about how its body would fare.
    let registry = &ctx.app.registry;
    let kind = registry
        .token_kind(&token, cert.as_deref(), req.method() == Method::PUT)
        .await?;
    let op = match *req.method() {
        Method::GET => ManageOp::Read,
        Method::PUT => ManageOp::Update(
            json_object(
                req,
                ctx.app.config.registration.max_body_bytes,
                ctx.app.config.limits.request_timeout,
            )
            .await?,
        ),
        _ => ManageOp::Delete,
    };
    let rotates = !matches!(op, ManageOp::Delete);
    let outcome = match kind {
        TokenKind::Registration(rec) => {
            registry
                .manage_self(client_id, &token, cert.as_deref(), op, Some(rec))
                .await?
        }
        TokenKind::Admin => registry.manage_admin(client_id, op).await?,
    };
    Ok(respond(ctx, outcome, rotates))
}

fn respond(ctx: &Ctx<'_>, outcome: Outcome, rotates: bool) -> Response<Body> {
    match outcome {
        Outcome::Client(resp) => {
            if rotates && resp.registration_access_token.is_some() {
                ctx.app.metrics.rotations.inc();
            }
            raw_json(StatusCode::OK, resp.to_json().into(), true)
        }
        Outcome::Deleted => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
    }
}

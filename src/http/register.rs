//! `POST /register` (RFC 7591) and `GET|PUT|DELETE /register/{client_id}` (RFC 7592).

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::error::ApiError;
use super::{bearer, json_object, json_response, Body, Ctx};
use crate::registry::{ManageOp, Outcome};
use crate::secret;

/// `POST /register`.
pub async fn register(
    ctx: &mut Ctx<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let cert = ctx.cert(req.headers())?;
    let registry = &ctx.app.registry;
    registry.authorize_registration(cert.as_deref(), false)?;
    let body = json_object(req, ctx.app.config.registration.max_body_bytes).await?;
    let resp = registry.register(body, cert.as_deref())?;
    ctx.app.metrics.registrations.inc();
    ctx.client_id = Some(resp.client_id.clone());
    Ok(json_response(StatusCode::CREATED, &resp, true))
}

/// `GET|PUT|DELETE /register/{client_id}`.
pub async fn manage(
    ctx: &mut Ctx<'_>,
    client_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    ctx.client_id = Some(client_id.to_owned());
    let cert = ctx.cert(req.headers())?;
    let token = bearer(req.headers())?
        .ok_or_else(|| ApiError::invalid_token("a registration access token is required"))?
        .to_owned();
    if !secret::well_formed(&token) {
        return Err(ApiError::invalid_token("unknown, expired or revoked token"));
    }
    let op = match *req.method() {
        Method::GET => ManageOp::Read,
        Method::PUT => {
            ManageOp::Update(json_object(req, ctx.app.config.registration.max_body_bytes).await?)
        }
        _ => ManageOp::Delete,
    };
    let rotates = !matches!(op, ManageOp::Delete);
    let outcome = ctx
        .app
        .registry
        .manage_self(client_id, &token, cert.as_deref(), op)?;
    Ok(respond(ctx, outcome, rotates))
}

fn respond(ctx: &Ctx<'_>, outcome: Outcome, rotates: bool) -> Response<Body> {
    match outcome {
        Outcome::Client(resp) => {
            if rotates && resp.registration_access_token.is_some() {
                ctx.app.metrics.rotations.inc();
            }
            json_response(StatusCode::OK, &resp, true)
        }
        Outcome::Deleted => {
            let mut resp = Response::new(Full::default());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
    }
}

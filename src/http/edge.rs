//! Requests under a `[[routes]]` prefix: admission, then forwarding (SPEC §5a). Thin: the
//! rules are `Registry::admit`'s, the proxying is `route::forward`'s.

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, StatusCode};

use super::error::ApiError;
use super::RequestBody;
use super::{bearer, Body, Ctx};
use crate::proxy_header;
use crate::route::{forward, Forwarded, Peer, Route};

/// Admits and forwards one request to `route`.
pub async fn serve(
    ctx: &mut Ctx<'_>,
    route: &Arc<Route>,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let answer = admit_and_forward(ctx, route, req).await;
    let status = match &answer {
        Ok(resp) => resp.status(),
        Err(e) => e.status,
    };
    ctx.app
        .metrics
        .route_request(&route.prefix, status.as_u16(), started.elapsed());
    answer
}

async fn admit_and_forward(
    ctx: &mut Ctx<'_>,
    route: &Arc<Route>,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let app = ctx.app;
    let refused = |reason: &'static str| app.metrics.route_refused(&route.prefix, reason);
    let cert = ctx
        .cert(req.headers())
        .inspect_err(|_| refused("certificate_header"))?;
    // The Authorization header only: a token in the query or the body is not looked at.
    let Some(token) = bearer(req.headers())? else {
        refused("missing_token");
        return Err(ApiError::token_required("this API needs an access token"));
    };
    let admitted = app
        .registry
        .admit(token, cert.as_deref(), &route.required_scope)
        .await
        .map_err(|r| {
            refused(r.reason);
            ApiError::from(r.error)
        })?;
    ctx.client_id = Some(admitted.client_id.as_str().into());
    let conn = ctx.conn;
    let peer = Peer {
        addr: conn.peer.ip(),
        trusted_proxy: conn.trusted_proxy(app).is_ok(),
        https: conn.https,
    };
    let certificate_headers =
        proxy_header::header_names(app.config.proxy.header_format, &app.proxy_header);
    match forward(
        route,
        req,
        &admitted,
        cert.as_deref(),
        &peer,
        &certificate_headers,
    )
    .await
    {
        Forwarded::Response(resp) => Ok(resp.map(Body::stream)),
        Forwarded::Unavailable(why) => {
            tracing::warn!(route = %route.prefix, error = %why, "upstream unavailable");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream could not be reached",
            ))
        }
        Forwarded::Timeout => {
            tracing::warn!(route = %route.prefix, timeout = ?route.timeout, "upstream timed out");
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
            ))
        }
    }
}

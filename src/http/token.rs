//! `POST /token`, `/introspect`, `/revoke`: form-encoded, client-authenticated.

use std::borrow::Cow;
use std::ops::Range;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
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
            form.get("grant_type").as_deref(),
            form.get("scope").as_deref(),
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
    let body = ctx.app.registry.introspect(&client, &token).await?;
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
    ctx.app.registry.revoke(&client, &token).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({}), true))
}

async fn authenticate(
    ctx: &mut Ctx<'_>,
    req: Request<RequestBody>,
) -> Result<(Authenticated, Form, Cert), ApiError> {
    let cert = ctx.cert(req.headers())?;
    let basic = basic_credentials(req.headers())?;
    let basic = basic
        .as_ref()
        .map(|(id, secret)| (id.as_ref(), secret.as_ref()));
    let registry = &ctx.app.registry;
    if basic.is_some() {
        // Credentials in the header are judged before the body is read: a caller with
        // wrong ones gets its 401 without making the server buffer anything (SPEC §8).
        let early = ClientCredentials {
            basic,
            ..ClientCredentials::default()
        };
        registry
            .authenticate_client(&early, cert.as_deref())
            .await?;
    }
    let form = form(req, ctx.app.config.limits.request_timeout).await?;
    // Again with the body: it must not contradict the header (RFC 6749 §2.3).
    let client = {
        let client_id = form.get("client_id");
        let client_secret = form.get("client_secret");
        let creds = ClientCredentials {
            basic,
            client_id: client_id.as_deref(),
            client_secret: client_secret.as_deref(),
        };
        registry
            .authenticate_client(&creds, cert.as_deref())
            .await?
    };
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
    Form::parse(bytes)
}

/// A form body, decoded as `form_urlencoded` decodes it, without copying: a parameter is
/// looked up among the body's `name=value` pieces, and only a name or value with escapes
/// (`%`, `+`) or invalid UTF-8 is decoded into a new string.
struct Form {
    body: Bytes,
    /// The body's non-empty `&`-separated pieces, each with where its name ends (its first
    /// `=`, or its end).
    pieces: Vec<(Range<usize>, usize)>,
}

impl Form {
    fn parse(body: Bytes) -> Result<Self, ApiError> {
        let mut pieces = Vec::with_capacity(4);
        let mut start = 0;
        for piece in body.split(|&b| b == b'&') {
            if !piece.is_empty() {
                let name_end = start + piece.iter().position(|&b| b == b'=').unwrap_or(piece.len());
                pieces.push((start..start + piece.len(), name_end));
            }
            start += piece.len() + 1;
        }
        let form = Self { body, pieces };
        if let Some(name) = form.repeated() {
            return Err(ApiError::invalid_request(format!(
                "parameter {name:?} is repeated"
            )));
        }
        Ok(form)
    }

    /// The first parameter name that occurs twice, if any.
    fn repeated(&self) -> Option<String> {
        const FEW: usize = 8;
        let n = self.pieces.len();
        // A token request has a handful of parameters: each pair is compared, with no
        // allocation. A larger form is sorted, so it cannot cost quadratic time.
        if n <= FEW {
            let mut names: [Cow<'_, str>; FEW] = Default::default();
            for (i, slot) in names.iter_mut().take(n).enumerate() {
                *slot = self.name(i);
            }
            return (1..n)
                .find(|&i| names[..i].contains(&names[i]))
                .map(|i| names[i].clone().into_owned());
        }
        let mut sorted: Vec<Cow<'_, str>> = (0..n).map(|i| self.name(i)).collect();
        sorted.sort_unstable();
        sorted
            .windows(2)
            .find(|w| w[0] == w[1])
            .map(|w| w[0].clone().into_owned())
    }

    /// The value of parameter `name`.
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        // An ASCII name without escapes is itself: it is compared byte for byte, and only
        // another name is decoded to compare.
        let i = (0..self.pieces.len()).find(|&i| {
            let raw = self.raw_name(i);
            if raw.is_ascii() && !has_escapes(raw) {
                raw == name.as_bytes()
            } else {
                self.name(i) == name
            }
        })?;
        let (piece, name_end) = &self.pieces[i];
        let raw = self.body.get(name_end + 1..piece.end).unwrap_or_default();
        Some(plain(raw).unwrap_or_else(|| self.decoded(i).1))
    }

    /// The name of piece `i`.
    fn name(&self, i: usize) -> Cow<'_, str> {
        plain(self.raw_name(i)).unwrap_or_else(|| self.decoded(i).0)
    }

    /// The name of piece `i` as sent.
    fn raw_name(&self, i: usize) -> &[u8] {
        let (piece, name_end) = &self.pieces[i];
        &self.body[piece.start..*name_end]
    }

    /// Piece `i` decoded by `form_urlencoded` itself: `+` as space, percent escapes, invalid
    /// UTF-8 replaced.
    fn decoded(&self, i: usize) -> (Cow<'_, str>, Cow<'_, str>) {
        url::form_urlencoded::parse(&self.body[self.pieces[i].0.clone()])
            .next()
            .unwrap_or_default()
    }
}

/// `raw` as it is, when decoding would not change it.
fn plain(raw: &[u8]) -> Option<Cow<'_, str>> {
    if has_escapes(raw) {
        return None;
    }
    std::str::from_utf8(raw).ok().map(Cow::Borrowed)
}

/// Whether `raw` has something form decoding replaces (`+`, `%`).
fn has_escapes(raw: &[u8]) -> bool {
    raw.iter().any(|&b| b == b'%' || b == b'+')
}

type Cert = Option<std::sync::Arc<crate::identity::ClientCertificate>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// What `form_urlencoded` makes of `body`: its pairs, or the name that repeats.
    fn reference(body: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut seen = std::collections::HashSet::new();
        let mut pairs = Vec::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            if !seen.insert(k.to_string()) {
                return Err(k.into_owned());
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(pairs)
    }

    #[test]
    fn a_form_reads_as_form_urlencoded_reads_it() {
        let many = (0..20).map(|i| format!("p{i}=v{i}")).collect::<Vec<_>>();
        let mut many_repeated = many.clone();
        many_repeated.push("p7=again".into());
        let bodies: Vec<Vec<u8>> = [
            "grant_type=client_credentials&client_id=abc&scope=api%3Aread",
            "a=1&&b=2&",
            "&a=x=y=z",
            "novalue&other=",
            "sp+ace=a+b&pct=%41%42%zz%4",
            "client%5Fid=x&client_id=y",
            "a=1&b=2&a=3",
            "=empty-name&=again",
            "",
            &many.join("&"),
            &many_repeated.join("&"),
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .chain([b"k=\xff\xfe&\xffname=v".to_vec(), b"\xff=1&\xfe=2".to_vec()])
        .collect();
        for body in bodies {
            let shown = String::from_utf8_lossy(&body).into_owned();
            let form = Form::parse(Bytes::from(body.clone()));
            match (reference(&body), form) {
                (Ok(pairs), Ok(form)) => {
                    for (k, v) in &pairs {
                        assert_eq!(form.get(k).as_deref(), Some(v.as_str()), "{shown}: {k}");
                    }
                    assert_eq!(form.get("absent"), None, "{shown}");
                }
                (Err(name), Err(e)) => {
                    let said = &e.description;
                    assert!(said.contains(&format!("{name:?}")), "{shown}: {said}")
                }
                (want, got) => panic!("{shown}: {want:?} but {:?}", got.map(|_| ())),
            }
        }
        // And bodies made of the characters that matter, thousands of them.
        let alphabet = b"ab=&%+41\xff";
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..5000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let body: Vec<u8> = (0..len)
                .map(|i| alphabet[((seed >> (i * 2 % 60)) % alphabet.len() as u64) as usize])
                .collect();
            let form = Form::parse(Bytes::from(body.clone()));
            match (reference(&body), form) {
                (Ok(pairs), Ok(form)) => {
                    for (k, v) in &pairs {
                        assert_eq!(form.get(k).as_deref(), Some(v.as_str()), "{body:?}");
                    }
                }
                (Err(_), Err(_)) => {}
                (want, got) => panic!("{body:?}: {want:?} but {:?}", got.map(|_| ())),
            }
        }
        // A name is looked up as decoded, never as sent.
        let form = Form::parse(Bytes::from_static(b"sp+ace=1&p%41=2")).unwrap();
        assert_eq!(form.get("sp+ace"), None);
        assert_eq!(form.get("p%41"), None);
        assert_eq!(form.get("sp ace").as_deref(), Some("1"));
        assert_eq!(form.get("pA").as_deref(), Some("2"));
    }
}

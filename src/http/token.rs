//! `POST /token`, `/introspect`, `/revoke`: form-encoded, client-authenticated.

use std::borrow::Cow;
use std::ops::Range;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};

use super::error::ApiError;
use super::RequestBody;
use super::{json_response, raw_json, read_body, require_media_type, Body, Ctx};
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
    Ok(raw_json(StatusCode::OK, grant.to_json().into(), true))
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
    let answer = ctx.app.registry.introspect(&client, &token).await?;
    Ok(raw_json(StatusCode::OK, answer.to_json().into(), true))
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
    Ok(Some((
        decode(id.as_bytes()).into_owned(),
        decode(secret.as_bytes()).into_owned(),
    )))
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
    pieces: Vec<Piece>,
}

/// One non-empty `&`-separated piece of a form body, classified in the one pass that
/// splits the body, so that a look-up compares bytes and scans nothing again.
struct Piece {
    span: Range<usize>,
    /// Where the name ends: the piece's first `=`, or its end.
    name_end: usize,
    /// The name is ASCII without `%` or `+`: it is itself, compared byte for byte.
    plain_name: bool,
    /// The value has no `%` or `+`: it is itself if it is UTF-8.
    plain_value: bool,
}

/// What a form byte means to [`Form::parse`].
const PLAIN: u8 = 0;
const AMPERSAND: u8 = 1;
const EQUALS: u8 = 2;
/// `%` and `+`, which form decoding replaces.
const ESCAPE: u8 = 3;
const NON_ASCII: u8 = 4;

static CLASS: [u8; 256] = {
    let mut class = [PLAIN; 256];
    let mut b = 0x80;
    while b < 256 {
        class[b] = NON_ASCII;
        b += 1;
    }
    class[b'&' as usize] = AMPERSAND;
    class[b'=' as usize] = EQUALS;
    class[b'%' as usize] = ESCAPE;
    class[b'+' as usize] = ESCAPE;
    class
};

impl Piece {
    /// A piece starting at `start`, plain until a byte says otherwise.
    fn at(start: usize) -> Self {
        Self {
            span: start..start,
            name_end: usize::MAX,
            plain_name: true,
            plain_value: true,
        }
    }

    /// Ends the piece at `end`, keeping it if it is not empty.
    fn end(mut self, end: usize, pieces: &mut Vec<Piece>) {
        if end > self.span.start {
            self.span.end = end;
            self.name_end = self.name_end.min(end);
            pieces.push(self);
        }
    }
}

impl Form {
    fn parse(body: Bytes) -> Result<Self, ApiError> {
        let mut pieces = Vec::with_capacity(4);
        let mut piece = Piece::at(0);
        // One pass, byte by byte through a class table: most bytes are none of these.
        for (i, &b) in body.iter().enumerate() {
            match CLASS[usize::from(b)] {
                PLAIN => {}
                AMPERSAND => {
                    piece.end(i, &mut pieces);
                    piece = Piece::at(i + 1);
                }
                EQUALS if piece.name_end == usize::MAX => piece.name_end = i,
                ESCAPE if piece.name_end == usize::MAX => piece.plain_name = false,
                ESCAPE => piece.plain_value = false,
                NON_ASCII if piece.name_end == usize::MAX => piece.plain_name = false,
                _ => {}
            }
        }
        piece.end(body.len(), &mut pieces);
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
        let pieces = &self.pieces;
        // A token request has a handful of plain names: each pair is compared as bytes,
        // with no allocation. Any other form is sorted by decoded name, so it cannot cost
        // quadratic time.
        if pieces.len() <= FEW && pieces.iter().all(|p| p.plain_name) {
            return (1..pieces.len())
                .find(|&i| {
                    let name = self.raw_name(&pieces[i]);
                    pieces[..i].iter().any(|p| self.raw_name(p) == name)
                })
                .map(|i| self.name(i).into_owned());
        }
        let mut sorted: Vec<Cow<'_, str>> = (0..pieces.len()).map(|i| self.name(i)).collect();
        sorted.sort_unstable();
        sorted
            .windows(2)
            .find(|w| w[0] == w[1])
            .map(|w| w[0].clone().into_owned())
    }

    /// The value of parameter `name`.
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        let i = self.pieces.iter().enumerate().position(|(i, p)| {
            if p.plain_name {
                self.raw_name(p) == name.as_bytes()
            } else {
                self.name(i) == name
            }
        })?;
        let p = &self.pieces[i];
        let raw = self
            .body
            .get(p.name_end + 1..p.span.end)
            .unwrap_or_default();
        let plain = p
            .plain_value
            .then(|| std::str::from_utf8(raw).ok())
            .flatten();
        Some(plain.map_or_else(|| decode(raw), Cow::Borrowed))
    }

    /// The name of piece `i`.
    fn name(&self, i: usize) -> Cow<'_, str> {
        let p = &self.pieces[i];
        if p.plain_name {
            // ASCII, so UTF-8.
            if let Ok(name) = std::str::from_utf8(self.raw_name(p)) {
                return Cow::Borrowed(name);
            }
        }
        decode(self.raw_name(p))
    }

    /// A piece's name as sent.
    fn raw_name(&self, p: &Piece) -> &[u8] {
        &self.body[p.span.start..p.name_end]
    }
}

/// Form decoding as `form_urlencoded` does it: `+` is a space, `%` and two hex digits a
/// byte (any other `%` stays), and invalid UTF-8 is replaced.
fn decode(raw: &[u8]) -> Cow<'_, str> {
    let hex = |b: Option<&u8>| b.and_then(|&b| char::from(b).to_digit(16));
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => match (hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
                (Some(high), Some(low)) => {
                    // Two hex digits: at most 0xff.
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            _ => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
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
    fn rfc6749_2_3_1_basic_credentials_are_each_decoded_as_one_form_value() {
        let basic = |user_pass: &str| {
            let mut headers = HeaderMap::new();
            let value = format!("Basic {}", STANDARD.encode(user_pass));
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            basic_credentials(&headers).unwrap().unwrap()
        };
        assert_eq!(
            basic("my%20client:p%26ss+word%3A"),
            ("my client".into(), "p&ss word:".into())
        );
        // Characters a form would split on are plain in a lone value.
        assert_eq!(basic("a=b:c&d=e"), ("a=b".into(), "c&d=e".into()));
        assert_eq!(basic("id:%zz%4"), ("id".into(), "%zz%4".into()));
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
        let alphabet = b"ab=&%+41Fg\xff";
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

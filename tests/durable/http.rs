//! A blocking HTTPS/1.1 client: one request at a time on one TLS connection, so a killed
//! server shows up as an I/O error on exactly the requests that were in flight.

use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use serde_json::Value;

use super::IO_TIMEOUT;
use crate::common;

/// A fully read response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    close: bool,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A string member of the JSON body.
    pub fn field(&self, name: &str) -> String {
        self.json()[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name:?} in {}", self.text()))
            .to_owned()
    }
}

/// One TLS connection to the gateway, driven synchronously.
pub struct Https {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Https {
    /// Connects and completes the handshake (the server's certificate is then known).
    pub fn connect(port: u16, cert: Option<&str>) -> io::Result<Self> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let config = Arc::new(common::client_config(cert, &[b"http/1.1"]));
        let conn =
            rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
                .map_err(io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Self { stream })
    }

    /// The DER of the certificate the server presented.
    pub fn server_cert(&self) -> Vec<u8> {
        self.stream
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("the server presented a certificate")
            .as_ref()
            .to_vec()
    }

    /// Writes raw bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends one request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Reply> {
        let mut msg = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            msg.push_str(&format!("{k}: {v}\r\n"));
        }
        msg.push_str("\r\n");
        let mut bytes = msg.into_bytes();
        bytes.extend_from_slice(body);
        self.write(&bytes)?;
        self.read_reply()
    }

    /// Reads one response (an interim `100 Continue` counts as one, with no body).
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line in {head:?}")))?;
        let mut len = None;
        let mut close = false;
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                len = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" {
                return Err(bad(format!("unexpected transfer-encoding in {head:?}")));
            } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        let len = match (status, len) {
            (100..=199 | 204 | 304, _) => 0,
            (_, Some(n)) => n,
            (_, None) => return Err(bad(format!("no content-length in {head:?}"))),
        };
        while buf.len() < head_end + len {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if buf.len() != head_end + len {
            return Err(bad("more bytes than one response".into()));
        }
        Ok(Reply {
            status,
            body: buf[head_end..].to_vec(),
            close,
        })
    }
}

/// A keep-alive client that reconnects when its connection is gone. It never retries a
/// request: a failed one is *in flight*, its effect unknown.
pub struct Api {
    pub port: u16,
    pub cert: Option<&'static str>,
    pub conn: Option<Https>,
}

impl Api {
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Reply> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(Https::connect(self.port, self.cert)?),
        };
        match conn.request(method, path, headers, body) {
            Ok(reply) => {
                if reply.close {
                    self.conn = None;
                }
                Ok(reply)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// Like `call`, for callers for whom an I/O error is a test failure.
    pub fn must(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.call(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn register(&mut self, body: &Value) -> io::Result<Reply> {
        self.call(
            "POST",
            "/register",
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// `GET|DELETE /register/{id}` with a Bearer token.
    pub fn manage(&mut self, method: &str, id: &str, token: &str) -> io::Result<Reply> {
        let auth = format!("Bearer {token}");
        self.call(
            method,
            &format!("/register/{id}"),
            &[("authorization", &auth)],
            b"",
        )
    }

    /// `POST` of a form to `path` with extra headers.
    pub fn form(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        params: &[(&str, &str)],
    ) -> io::Result<Reply> {
        let mut h = headers.to_vec();
        h.push(("content-type", "application/x-www-form-urlencoded"));
        self.call("POST", path, &h, common::form_encode(params).as_bytes())
    }

    /// client_credentials with Basic authentication.
    pub fn token_basic(&mut self, id: &str, secret: &str) -> io::Result<Reply> {
        let auth = common::basic_auth(id, secret);
        self.form(
            "/token",
            &[("authorization", &auth)],
            &[("grant_type", "client_credentials")],
        )
    }
}

/// The dev admin's `dcrm` access token (certificate-bound: use it with `cert = "admin"`).
pub fn dcrm_token(admin: &mut Api) -> String {
    let r = admin.must(
        "POST",
        "/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        common::form_encode(&[
            ("grant_type", "client_credentials"),
            ("client_id", "admin"),
            ("scope", "dcrm"),
        ])
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "dcrm token: {}", r.text());
    r.field("access_token")
}

//! What a test knows about its clients from acknowledged responses, the requests that
//! change them, and seeded pseudo-randomness.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{Api, Gateway, Reply};

/// The seed of a randomized test: `CERTGATE_TEST_SEED` (decimal or `0x` hexadecimal) when
/// it is set, else one from the clock and the process id. Tests print it (and name it in
/// their failure messages) so a failing run can be repeated with the same choices.
pub fn test_seed() -> u64 {
    match std::env::var("CERTGATE_TEST_SEED") {
        Ok(text) => {
            let t = text.trim();
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => t.parse(),
            };
            parsed.unwrap_or_else(|e| {
                panic!("CERTGATE_TEST_SEED={text:?} is not a decimal or 0x-hex u64: {e}")
            })
        }
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            nanos ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        }
    }
}

/// xorshift64*: pseudo-randomness without a crate, the same sequence for the same seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64's finalizer, so nearby seeds (seed + i) start far apart; never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An operation sent but not acknowledged when the server died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    Rotate,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Live,
    /// An acknowledged DELETE.
    Deleted,
}

/// What the test knows about one client from acknowledged responses only.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub id: String,
    /// Acknowledged registration access tokens, oldest first; the last is the current one.
    pub tokens: Vec<String>,
    /// Acknowledged client secrets, oldest first.
    pub secrets: Vec<String>,
    /// `tokens[..checked]` are known to be dead already.
    pub checked: usize,
    /// The last acknowledged access token from `/token`.
    pub access: Option<String>,
    pub status: Status,
    /// The request in flight when the server was killed, if any.
    pub pending: Option<Pending>,
}

impl Tracked {
    pub fn from_registration(r: &Reply) -> Self {
        Self {
            id: r.field("client_id"),
            tokens: vec![r.field("registration_access_token")],
            secrets: vec![r.field("client_secret")],
            checked: 0,
            access: None,
            status: Status::Live,
            pending: None,
        }
    }

    pub fn token(&self) -> &str {
        self.tokens.last().expect("a tracked client has a token")
    }

    pub fn secret(&self) -> &str {
        self.secrets.last().expect("a tracked client has a secret")
    }

    /// Takes the credentials of an acknowledged rotation.
    pub fn adopt(&mut self, r: &Reply) {
        self.tokens.push(r.field("registration_access_token"));
        self.secrets.push(r.field("client_secret"));
    }
}

/// The registration body the load uses (a `client_secret_basic` client by default).
pub fn registration_body() -> Value {
    json!({ "grant_types": ["client_credentials"] })
}

/// Registers a client (201 asserted) and returns it.
pub fn register_one(api: &mut Api) -> Tracked {
    let r = api.must(
        "POST",
        "/register",
        &[("content-type", "application/json")],
        registration_body().to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "POST /register: {}", r.text());
    Tracked::from_registration(&r)
}

/// Rotates a client (GET → 200 asserted) and adopts the new credentials.
pub fn rotate(api: &mut Api, c: &mut Tracked) {
    let r = api.manage("GET", &c.id, c.token()).unwrap();
    assert_eq!(r.status, 200, "GET /register/{}: {}", c.id, r.text());
    c.adopt(&r);
}

/// Asserts the client's newest token works (rotating it) and its previous one does not.
pub fn assert_current(api: &mut Api, c: &mut Tracked, g: &Gateway) {
    let r = api.manage("GET", &c.id, c.token()).unwrap();
    assert_eq!(
        r.status,
        200,
        "client {}: newest acknowledged token after the restart: {}\nlog:\n{}",
        c.id,
        r.text(),
        g.log_tail()
    );
    c.adopt(&r);
    let old = c.tokens[c.tokens.len() - 2].clone();
    let r = api.manage("GET", &c.id, &old).unwrap();
    assert_eq!(
        r.status,
        401,
        "client {}: replaced token: {}",
        c.id,
        r.text()
    );
}

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;
use common::*;

#[tokio::test]
async fn identity_over_tls_is_the_sha256_of_the_der() {
    let s = Server::start("").await;
    let r = s.tls(Some("client1")).get("/identity", &[]).await;
    assert_eq!(r.json()["certificate"]["x5t#S256"], thumbprint("client1"));
    s.stop().await;
}

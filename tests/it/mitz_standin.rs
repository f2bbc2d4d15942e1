//! The Mitz stand-in of the test kit, tested on its own: it must refuse what real Mitz
//! refuses (no client certificate, or one from another CA) before any other test relies
//! on it, and its answers must be what `sources::mitz` reads.

use std::time::Duration;

use sluis_core::sources::mitz::{
    MitzCode, MitzDecision, MitzError, MitzQuestion, MitzRequestSettings, build_request,
    parse_response,
};
use sluis_test_kit::mitz::{MitzReply, MitzStandIn};

const BSN: &str = "900186021";

fn question(bsn: &str) -> MitzQuestion {
    MitzQuestion {
        patient_bsn: bsn.into(),
        author_ura: "00000659".into(),
        author_facility_type: MitzCode::facility_type("Z3"),
        event_code: MitzCode::event_code("GGC002"),
        role: MitzCode::role("01.015"),
        requesting_practitioner: Some("000095254".into()),
        mandated: None,
        requesting_ura: "00000666".into(),
        requesting_facility_type: MitzCode::facility_type("Z3"),
        purpose_of_use: MitzCode::purpose_of_use("TREAT"),
    }
}

/// A client trusting the stand-in's CA, presenting `identity` (PEM certificate and key).
fn client(mitz: &MitzStandIn, identity: Option<Vec<u8>>) -> reqwest::Client {
    let roots = reqwest::Certificate::from_pem_bundle(&mitz.certs.ca_pem()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(roots)
        .timeout(Duration::from_secs(5));
    if let Some(pem) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

async fn ask(
    client: &reqwest::Client,
    mitz: &MitzStandIn,
    bsn: &str,
) -> reqwest::Result<(u16, Vec<u8>)> {
    let body = build_request(
        &question(bsn),
        &MitzRequestSettings {
            to: mitz.url.clone(),
        },
    )
    .unwrap();
    let response = client
        .post(&mitz.url)
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.bytes().await?.to_vec()))
}

#[tokio::test]
async fn the_right_client_certificate_gets_permit() {
    let mitz = MitzStandIn::start().await;
    let client = client(&mitz, Some(mitz.certs.client_identity_pem()));
    let (status, body) = ask(&client, &mitz, BSN).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(parse_response(&body), Ok(MitzDecision::Permit));
    assert_eq!(mitz.calls(), 1);
    // What was asked arrives intact: the question reads back as sent.
    let asked = mitz.last_request().unwrap();
    assert_eq!(asked.question, question(BSN));
    assert_eq!(asked.to, mitz.url);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let mitz = MitzStandIn::start().await;
    let client = client(&mitz, Some(mitz.certs.other_client_identity_pem()));
    let error = ask(&client, &mitz, BSN).await.unwrap_err();
    assert!(error.is_connect() || error.is_request(), "{error:?}");
    assert_eq!(mitz.calls(), 0);
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let mitz = MitzStandIn::start().await;
    let client = client(&mitz, None);
    assert!(ask(&client, &mitz, BSN).await.is_err());
    assert_eq!(mitz.calls(), 0);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_refuses_the_server() {
    let mitz = MitzStandIn::start().await;
    let roots =
        reqwest::Certificate::from_pem_bundle(&std::fs::read(&mitz.certs.other_ca).unwrap())
            .unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only(roots)
        .identity(reqwest::Identity::from_pem(&mitz.certs.client_identity_pem()).unwrap())
        .build()
        .unwrap();
    assert!(ask(&client, &mitz, BSN).await.is_err());
    assert_eq!(mitz.calls(), 0);
}

#[tokio::test]
async fn every_configured_reply_reads_as_expected() {
    let mitz = MitzStandIn::start().await;
    let client = client(&mitz, Some(mitz.certs.client_identity_pem()));
    for decision in [
        MitzDecision::Permit,
        MitzDecision::Deny,
        MitzDecision::NotApplicable,
        MitzDecision::Indeterminate,
    ] {
        mitz.set_reply(decision);
        let (status, body) = ask(&client, &mitz, BSN).await.unwrap();
        assert_eq!((status, parse_response(&body)), (200, Ok(decision)));
    }
    mitz.set_reply(MitzReply::Fault);
    let (status, body) = ask(&client, &mitz, BSN).await.unwrap();
    assert_eq!(status, 500);
    assert!(matches!(
        parse_response(&body),
        Err(MitzError::SoapFault { .. })
    ));
    mitz.set_reply(MitzReply::Garbage);
    let (status, body) = ask(&client, &mitz, BSN).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(parse_response(&body), Err(MitzError::NotSoap));
    mitz.set_reply(MitzReply::Status(503));
    assert_eq!(ask(&client, &mitz, BSN).await.unwrap().0, 503);
    assert_eq!(mitz.calls(), 7);

    // A BSN of its own, and a body that is no closed question (a Sender fault, 400).
    mitz.set_reply(MitzDecision::Permit);
    mitz.set_reply_for("111222333", MitzDecision::Deny);
    let (_, body) = ask(&client, &mitz, "111222333").await.unwrap();
    assert_eq!(parse_response(&body), Ok(MitzDecision::Deny));
    let (_, body) = ask(&client, &mitz, BSN).await.unwrap();
    assert_eq!(parse_response(&body), Ok(MitzDecision::Permit));
    let response = client.post(&mitz.url).body("<nope/>").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(mitz.last_request().is_none());
    assert_eq!(mitz.last_body().as_deref(), Some("<nope/>"));
}

#[tokio::test]
async fn a_slow_stand_in_trips_a_client_timeout() {
    let mitz = MitzStandIn::start().await;
    mitz.set_delay(Duration::from_secs(5));
    let roots = reqwest::Certificate::from_pem_bundle(&mitz.certs.ca_pem()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only(roots)
        .identity(reqwest::Identity::from_pem(&mitz.certs.client_identity_pem()).unwrap())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = ask(&client, &mitz, BSN).await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(mitz.calls(), 1);
}

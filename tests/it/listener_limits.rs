//! The HTTP listeners against slow and idle clients (slowloris): a connection that does not
//! send its headers in time is closed, an idle keep-alive connection is closed, connections
//! past `max_connections` are refused and counted, and the service answers while hundreds of
//! slow clients hold connections. Bounds are generous: a cut is asserted within 10 s of a
//! 1 s timeout.

use sluis_test_kit as kit;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server whose listeners have these `listeners.limits`.
async fn server_with(limits: &str) -> (Setup, Server) {
    let config = config_yaml("127.0.0.1:0", "127.0.0.1:0").replacen(
        "issuers:",
        &format!("  limits: {limits}\nissuers:"),
        1,
    );
    let setup = Setup::new(&config, &[("api.yaml", POLICY)]);
    let server = Server::start(&setup.config_path()).await;
    (setup, server)
}

/// Reads until the peer closes; `Err` when it is still open after `bound`.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return Err(seen),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

/// A plain HTTP/1.1 GET on a new connection; the status line's code.
async fn get_status(address: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("answered and closed");
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_headers_is_cut_off() {
    let (_setup, server) = server_with("{header_read_timeout: 1s}").await;
    for address in [server.http, server.admin] {
        let mut stream = TcpStream::connect(address).await.unwrap();
        // A request line and one header, then nothing more: the slowloris pattern.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n")
            .await
            .unwrap();
        let answer = closed_within(&mut stream, Duration::from_secs(10)).await;
        assert!(answer.is_ok(), "{address}: still open after 10 s");
        // A connection that sends nothing at all is cut off too.
        let mut silent = TcpStream::connect(address).await.unwrap();
        assert!(
            closed_within(&mut silent, Duration::from_secs(10))
                .await
                .is_ok(),
            "{address}: silent connection still open after 10 s"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (_setup, server) = server_with("{header_read_timeout: 1s}").await;
    let mut stream = TcpStream::connect(server.admin).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("closed while idle");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_maximum_are_refused_and_counted() {
    let (_setup, server) = server_with("{max_connections: 5, header_read_timeout: 60s}").await;
    let metrics = |admin: SocketAddr| async move {
        reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let refused = r#"sluis_connections_refused_total{listener="http"}"#;
    let before = sample(&metrics(server.admin).await, refused).unwrap_or(0.0);

    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(server.http).await.unwrap());
    }
    // Wait until the server counts all five open (accepting is asynchronous).
    let open = r#"sluis_connections_open{listener="http"}"#;
    wait_until_async(|| async { sample(&metrics(server.admin).await, open) >= Some(5.0) }).await;

    let mut sixth = TcpStream::connect(server.http).await.unwrap();
    let answer = closed_within(&mut sixth, Duration::from_secs(10)).await;
    assert_eq!(answer, Ok(Vec::new()), "closed without an answer");
    let after = sample(&metrics(server.admin).await, refused).unwrap();
    assert!(after >= before + 1.0, "{before} -> {after}");

    // Room again once they are gone.
    drop(held);
    let mut status = 0;
    for _ in 0..100 {
        status = get_status(server.http, "/healthz").await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn requests_are_answered_while_slow_clients_hold_connections() {
    let (_setup, server) = server_with("{header_read_timeout: 60s}").await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(server.http).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    assert_eq!(get_status(server.http, "/healthz").await, 200);
    assert_eq!(get_status(server.admin, "/healthz").await, 200);
    drop(slow);
    server.stop().await;
}

/// Polls `ready` every 50 ms for at most 10 s.
async fn wait_until_async<F, Fut>(mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not reached within 10 s");
}

//! A client that speaks HTTP/1.1 by hand, so a test can stop wherever an attacker would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn connect(address: SocketAddr) -> TcpStream {
    TcpStream::connect(address).await.unwrap()
}

/// Waits up to `within` for the server to close `stream`; how long it took, if it did.
/// Anything the server sends first (an error answer) is read and discarded.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    let read_until_closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(within, read_until_closed)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// The head of a POST with `content_length`, keeping the connection alive.
pub fn post_head(path: &str, content_length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {content_length}\r\n\r\n"
    )
}

/// Sends one request on `stream` and reads one answer: its status and body.
pub async fn exchange(stream: &mut TcpStream, path: &str, body: &[u8]) -> (u16, String) {
    stream
        .write_all(post_head(path, body.len()).as_bytes())
        .await
        .unwrap();
    stream.write_all(body).await.unwrap();
    read_response(stream).await
}

/// Reads one HTTP/1.1 answer with a Content-Length body.
pub async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        if let Some(end) = find(&received, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_string();
            let status = head[9..12].parse().unwrap();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while received.len() < end + 4 + length {
                let n = stream.read(&mut buffer).await.unwrap();
                assert!(n > 0, "the connection closed mid-answer");
                received.extend_from_slice(&buffer[..n]);
            }
            let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]).to_string();
            return (status, body);
        }
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the connection closed before an answer");
        received.extend_from_slice(&buffer[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

//! Protocol detection from a connection's first bytes.
//!
//! Detection reads rather than peeks: `peek` cannot wait for *more* bytes without spinning,
//! so the bytes read here are handed back to whoever serves the connection through
//! [`crate::io::prefixed::Prefixed`].

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The longest method name we wait for before deciding a connection is not HTTP/1.
const MAX_METHOD_LEN: usize = 24;

/// What a connection turned out to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2,
    /// Anything else: forward bytes unchanged.
    Opaque,
    /// Nothing conclusive arrived in time (server-speaks-first protocols): opaque.
    Timeout,
    /// The client closed before sending anything.
    Closed,
}

impl Detected {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Detected::Http1 => "http1",
            Detected::Http2 => "http2",
            Detected::Opaque => "opaque",
            Detected::Timeout => "timeout",
            Detected::Closed => "closed",
        }
    }
}

/// Classifies a prefix; `None` means more bytes are needed.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Detected::Http2);
    }
    for (i, &b) in buf.iter().enumerate() {
        if b == b' ' {
            return Some(if i > 0 {
                Detected::Http1
            } else {
                Detected::Opaque
            });
        }
        if !is_tchar(b) || i >= MAX_METHOD_LEN {
            return Some(Detected::Opaque);
        }
    }
    None
}

/// RFC 9110 token characters, which is what an HTTP method is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads until the protocol is known or `timeout` passes; returns the verdict and the bytes read.
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    timeout: Duration,
) -> io::Result<(Detected, Bytes)> {
    let mut buf = BytesMut::with_capacity(512);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) => return Ok((Detected::Timeout, buf.freeze())),
            Ok(Ok(0)) => {
                let verdict = if buf.is_empty() {
                    Detected::Closed
                } else {
                    Detected::Opaque
                };
                return Ok((verdict, buf.freeze()));
            }
            Ok(Ok(_)) => {
                if let Some(d) = classify(&buf) {
                    return Ok((d, buf.freeze()));
                }
            }
            Ok(Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::prefixed::Prefixed;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_prefixes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1"), Some(Detected::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Detected::Http2)
        );
        assert_eq!(classify(b"PRI * HT"), None, "h2 preface still arriving");
        assert_eq!(
            classify(b"\x16\x03\x01\x02\x00"),
            Some(Detected::Opaque),
            "TLS hello"
        );
        assert_eq!(classify(b"\x00\x01hello"), Some(Detected::Opaque));
        assert_eq!(classify(b" GET"), Some(Detected::Opaque));
        assert_eq!(
            classify(&[b'A'; 40]),
            Some(Detected::Opaque),
            "no space in sight"
        );
    }

    /// Arbitrary bytes never panic and a verdict, once given, never changes as more arrive.
    #[test]
    fn classify_is_total_and_stable_on_random_input() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"GETPOSTPRI *HTTP/2.0\r\nSM \x00\x16abc";
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 4 == 0 {
                        r as u8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            let mut first = None;
            for end in 0..=buf.len() {
                match (first, classify(&buf[..end])) {
                    (None, Some(v)) => first = Some(v),
                    (Some(f), v) => assert_eq!(Some(f), v, "verdict changed for {:?}", &buf[..end]),
                    (None, None) => {}
                }
            }
        }
    }

    #[tokio::test]
    async fn detect_waits_for_split_preface_and_replays_bytes() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            client.write_all(&H2_PREFACE[..5]).await.unwrap();
            tokio::task::yield_now().await;
            client.write_all(&H2_PREFACE[5..]).await.unwrap();
            client.write_all(b"rest").await.unwrap();
            client
        });
        let (d, prefix) = detect(&mut server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(d, Detected::Http2);
        let _client = writer.await.unwrap();
        let mut io = Prefixed::new(prefix, server);
        let mut got = vec![0u8; H2_PREFACE.len() + 4];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..H2_PREFACE.len()], H2_PREFACE);
        assert_eq!(&got[H2_PREFACE.len()..], b"rest");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_times_out_as_opaque() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (d, prefix) = detect(&mut server, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(d, Detected::Timeout);
        assert!(prefix.is_empty());
    }
}

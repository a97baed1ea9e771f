//! HTTP/1.1 over a raw `TcpStream`, for requests a real client would not send (limits,
//! malformed input, hop-by-hop headers, absolute-form targets) and for reading response
//! headers exactly as they came off the wire.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{within, STEP_TIMEOUT};

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers in wire order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body with any chunked framing removed.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a proxy-made error: `status`, the `tandem-proxy-error` header, and a
    /// one-line body.
    pub fn assert_proxy_error(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header(crate::client::ERROR_HEADER).is_some(),
            "no {} header: {self:?}",
            crate::client::ERROR_HEADER
        );
        let text = self.text();
        assert!(
            !text.trim().is_empty(),
            "error body names the reason: {self:?}"
        );
        assert_eq!(
            text.trim_end().lines().count(),
            1,
            "one-line body: {text:?}"
        );
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connects to `addr`, writes `request`, and reads one response (bounded by
/// [`STEP_TIMEOUT`]). `Ok(None)` means the peer closed or reset the connection without
/// sending a response.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<Option<RawResponse>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    within(STEP_TIMEOUT, "raw response", read_response(&mut stream)).await
}

/// Reads one response from `stream`, leaving the connection open after it.
/// `Ok(None)` means the peer closed or reset before sending a whole response head.
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> io::Result<Option<RawResponse>> {
    let mut buf = Vec::new();
    let (status, headers, head_len) = loop {
        let mut hdrs = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut hdrs);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let headers = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                if (100..200).contains(&status) && status != 101 {
                    buf.drain(..n);
                    continue;
                }
                break (status, headers, n);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad response head: {e}"),
                ))
            }
        }
        match read_more(stream, &mut buf).await {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if is_reset(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    buf.drain(..head_len);
    let mut resp = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = resp
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok());
    if status == 101 || status == 204 || status == 304 {
        return Ok(Some(resp));
    }
    if chunked {
        resp.body = read_chunked(stream, buf).await?;
    } else if let Some(len) = length {
        while buf.len() < len {
            if read_more(stream, &mut buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body shorter than content-length",
                ));
            }
        }
        buf.truncate(len);
        resp.body = buf;
    } else {
        while read_more(stream, &mut buf).await? != 0 {}
        resp.body = buf;
    }
    Ok(Some(resp))
}

async fn read_chunked<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if read_more(stream, &mut buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "eof in chunk size",
                ));
            }
        };
        let size_line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("chunk size {size_line:?}: {e}"),
            )
        })?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (if any) end with an empty line.
            loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    let empty = i == 0;
                    buf.drain(..i + 2);
                    if empty {
                        return Ok(body);
                    }
                } else if read_more(stream, &mut buf).await? == 0 {
                    return Ok(body);
                }
            }
        }
        while buf.len() < size + 2 {
            if read_more(stream, &mut buf).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in chunk"));
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Whether `e` means the peer reset or aborted the connection.
pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Reads until EOF (bounded by [`STEP_TIMEOUT`]); a reset counts as EOF.
pub async fn read_to_end<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    within(STEP_TIMEOUT, "read to EOF", async {
        let mut out = Vec::new();
        loop {
            match read_more(stream, &mut out).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_reset(&e) => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        out
    })
    .await
}

//! Trace context in headers: W3C `traceparent`/`tracestate` in and out (the
//! OpenTelemetry SDK's propagator), B3 accepted on input (single `b3` or the `X-B3-*`
//! set, as Zipkin, older Envoy and Linkerd 1 send it) and kept up to date on the way out
//! when the caller used it, so an app that reads only B3 still sees the proxy's span as
//! its parent.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

const B3: &str = "b3";
const B3_TRACE_ID: &str = "x-b3-traceid";
const B3_SPAN_ID: &str = "x-b3-spanid";
const B3_PARENT: &str = "x-b3-parentspanid";
const B3_SAMPLED: &str = "x-b3-sampled";
const B3_FLAGS: &str = "x-b3-flags";

/// Which form of B3 the caller sent, so the way out speaks it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3Form {
    /// No B3 headers.
    None,
    /// One `b3` header.
    Single,
    /// The `X-B3-*` set.
    Multi,
}

/// The caller's trace context: the parent of the proxy's span (an empty context when
/// the request starts a trace). `ratio` decides for a B3 caller that deferred the
/// sampling decision.
pub fn extract(headers: &HeaderMap, ratio: f64) -> (Context, B3Form) {
    let form = if headers.contains_key(B3) {
        B3Form::Single
    } else if headers.contains_key(B3_TRACE_ID) {
        B3Form::Multi
    } else {
        B3Form::None
    };
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    if cx.span().span_context().is_valid() {
        return (cx, form);
    }
    let b3 = match form {
        B3Form::Single => headers
            .get(B3)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| b3_single(v, ratio)),
        B3Form::Multi => b3_multi(headers, ratio),
        B3Form::None => None,
    };
    let cx = match b3 {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    };
    (cx, form)
}

/// Writes `span` as the parent for the next hop: `traceparent` (and `tracestate`), and
/// B3 in the caller's form.
pub fn inject(span: &SpanContext, form: B3Form, headers: &mut HeaderMap) {
    let cx = Context::new().with_remote_span_context(span.clone());
    TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(headers));
    if form == B3Form::None {
        return;
    }
    let sampled = if span.is_sampled() { "1" } else { "0" };
    let trace = format!("{:032x}", span.trace_id());
    let id = format!("{:016x}", span.span_id());
    match form {
        B3Form::None => {}
        B3Form::Single => set(headers, B3, &format!("{trace}-{id}-{sampled}")),
        B3Form::Multi => {
            set(headers, B3_TRACE_ID, &trace);
            set(headers, B3_SPAN_ID, &id);
            set(headers, B3_SAMPLED, sampled);
            // The parent id of the next hop's span is ours, which `X-B3-SpanId` now says.
            headers.remove(B3_PARENT);
            headers.remove(B3_FLAGS);
        }
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// `b3: {trace}-{span}[-{sampled}[-{parent}]]`; the bare sampling-only forms (`0`, `1`,
/// `d`) carry no ids to continue and start a new trace.
fn b3_single(v: &str, ratio: f64) -> Option<SpanContext> {
    let mut parts = v.trim().split('-');
    let trace = trace_id(parts.next()?)?;
    let span = span_id(parts.next()?)?;
    let sampled = match parts.next() {
        None => None,
        Some("1" | "d") => Some(true),
        Some("0") => Some(false),
        Some(_) => return None,
    };
    context(trace, span, sampled, ratio)
}

fn b3_multi(headers: &HeaderMap, ratio: f64) -> Option<SpanContext> {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let trace = trace_id(get(B3_TRACE_ID)?)?;
    let span = span_id(get(B3_SPAN_ID)?)?;
    let sampled = if get(B3_FLAGS) == Some("1") {
        Some(true)
    } else {
        match get(B3_SAMPLED) {
            Some("1" | "true") => Some(true),
            Some("0" | "false") => Some(false),
            _ => None,
        }
    };
    context(trace, span, sampled, ratio)
}

/// A remote parent. B3 lets a caller defer the sampling decision, which W3C cannot
/// express, so the proxy makes it here with the trace-id ratio rule the root sampler
/// uses: every proxy on the path then agrees.
fn context(trace: TraceId, span: SpanId, sampled: Option<bool>, ratio: f64) -> Option<SpanContext> {
    let sampled = sampled.unwrap_or_else(|| {
        let low = u64::from_be_bytes(trace.to_bytes()[8..].try_into().unwrap_or([0; 8]));
        ((low >> 1) as f64) < ratio * (1u64 << 63) as f64
    });
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::NOT_SAMPLED
    };
    let sc = SpanContext::new(trace, span, flags, true, TraceState::NONE);
    sc.is_valid().then_some(sc)
}

/// 32 hex digits, or 16 (a 64-bit id, left-padded as the B3 spec says).
fn trace_id(hex: &str) -> Option<TraceId> {
    if !(hex.len() == 32 || hex.len() == 16) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    TraceId::from_hex(hex).ok()
}

fn span_id(hex: &str) -> Option<SpanId> {
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    SpanId::from_hex(hex).ok()
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn parent(h: &HeaderMap) -> SpanContext {
        extract(h, 0.0).0.span().span_context().clone()
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn w3c_traceparent_and_tracestate_are_read() {
        let h = headers(&[
            ("traceparent", &format!("00-{TRACE}-00f067aa0ba902b7-01")),
            ("tracestate", "vendor=abc"),
        ]);
        let sc = parent(&h);
        assert_eq!(format!("{:032x}", sc.trace_id()), TRACE);
        assert_eq!(format!("{:016x}", sc.span_id()), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "vendor=abc");
    }

    #[test]
    fn b3_single_and_multi_are_accepted() {
        let single = parent(&headers(&[("b3", &format!("{TRACE}-00f067aa0ba902b7-1"))]));
        assert_eq!(format!("{:032x}", single.trace_id()), TRACE);
        assert!(single.is_sampled());
        let multi = parent(&headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]));
        assert_eq!(
            format!("{:032x}", multi.trace_id()),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert!(!multi.is_sampled());
        let debug = parent(&headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-flags", "1"),
        ]));
        assert!(debug.is_sampled());
        let deferred = |ratio| {
            let h = headers(&[("b3", &format!("{TRACE}-00f067aa0ba902b7"))]);
            extract(&h, ratio).0.span().span_context().is_sampled()
        };
        assert!(deferred(1.0) && !deferred(0.0));
    }

    #[test]
    fn malformed_context_starts_a_new_trace() {
        for h in [
            headers(&[("traceparent", "00-zz-00f067aa0ba902b7-01")]),
            headers(&[("b3", "1")]),
            headers(&[("b3", &format!("{TRACE}-short-1"))]),
            headers(&[("b3", &format!("{TRACE}-00f067aa0ba902b7-x"))]),
            headers(&[("x-b3-traceid", TRACE)]),
            headers(&[("b3", &format!("{}-00f067aa0ba902b7", "0".repeat(32)))]),
        ] {
            assert!(!parent(&h).is_valid(), "{h:?}");
        }
    }

    #[test]
    fn traceparent_wins_over_b3() {
        let h = headers(&[
            ("traceparent", &format!("00-{TRACE}-00f067aa0ba902b7-01")),
            ("b3", "a3ce929d0e0e4736a3ce929d0e0e4736-1111111111111111-1"),
        ]);
        assert_eq!(format!("{:032x}", parent(&h).trace_id()), TRACE);
    }

    #[test]
    fn inject_writes_w3c_and_the_callers_b3_form() {
        let sc = SpanContext::new(
            TraceId::from_hex(TRACE).unwrap(),
            SpanId::from_hex("1111111111111111").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        );
        let mut h = headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-parentspanid", "2222222222222222"),
        ]);
        inject(&sc, B3Form::Multi, &mut h);
        assert_eq!(h["traceparent"], format!("00-{TRACE}-1111111111111111-01"));
        assert_eq!(h["x-b3-spanid"], "1111111111111111");
        assert_eq!(h["x-b3-sampled"], "1");
        assert!(!h.contains_key("x-b3-parentspanid"));

        let mut h = HeaderMap::new();
        inject(&sc, B3Form::Single, &mut h);
        assert_eq!(h["b3"], format!("{TRACE}-1111111111111111-1"));
        let mut h = HeaderMap::new();
        inject(&sc, B3Form::None, &mut h);
        assert!(!h.contains_key("b3") && h.contains_key("traceparent"));
    }
}

//! Answers a request for a file of the site. It sends the brotli or gzip copy that
//! `cargo leptos build --precompress` made beside the file when the browser takes that
//! encoding and the copy is smaller (from an embedded site only: in a folder, the file
//! may have changed since its copies were made); gives each copy its own ETag and answers a matching
//! `If-None-Match` with 304; and says how long to keep it: a year, unchanged, for names
//! that carry their content's digest, and `no-cache` (ask again every time, 304 if
//! unchanged) for the rest, so a new service worker, manifest or icon is never missed.

use axum::{
    http::{
        header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY},
        HeaderMap, HeaderValue, StatusCode,
    },
    response::{IntoResponse, Response},
};

use crate::http::site::{bytes_of, Site};

/// For names that carry their content's digest.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// For everything else: kept, but asked for again before every use.
pub const REVALIDATE: &str = "no-cache";

/// The encodings a copy beside a file may have, best first: (token, file extension).
const ENCODINGS: [(&str, &str); 2] = [("br", "br"), ("gzip", "gz")];

/// The answer to a GET of `request_path`, if the site has that file.
pub async fn serve(site: &Site, request_path: &str, request: &HeaderMap) -> Option<Response> {
    let named = site.name(request_path)?;
    let plain = site.file(&named.path).await?;
    let mime = plain.metadata.mimetype().to_owned();
    let mut chosen = (None, plain);
    let accepted = header_text(request, axum::http::header::ACCEPT_ENCODING);
    // A folder's file may be changed after its copies were made (a test's new worker).
    let encodings = if site.is_embedded() {
        &ENCODINGS[..]
    } else {
        &[]
    };
    for &(token, extension) in encodings {
        if !accepts(accepted, token) {
            continue;
        }
        if let Some(copy) = site.file(&format!("{}.{extension}", named.path)).await {
            if copy.data.len() < chosen.1.data.len() {
                chosen = (Some(token), copy);
                break;
            }
        }
    }
    let (encoding, file) = chosen;
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));

    let mut headers = HeaderMap::new();
    let cache = if named.immutable {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(ETAG, HeaderValue::from_str(&etag).ok()?);
    if matches(header_text(request, IF_NONE_MATCH), &etag) {
        return Some((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_str(&mime).ok()?);
    if let Some(encoding) = encoding {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    Some((headers, bytes_of(file)).into_response())
}

fn header_text(headers: &HeaderMap, name: axum::http::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

/// Whether an `Accept-Encoding` value takes `token` (by name or `*`, with a q above 0).
fn accepts(accept_encoding: &str, token: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let refused = parts.any(|parameter| {
            parameter
                .strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (name.eq_ignore_ascii_case(token) || name == "*") && !refused
    })
}

/// Whether an `If-None-Match` value names `etag` (weakly compared, as RFC 9110 asks for
/// this header) or is `*`.
fn matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_accept_encoding_is_read_with_its_q_values() {
        assert!(accepts("gzip, deflate, br, zstd", "br"));
        assert!(accepts("gzip;q=1.0, BR;q=0.5", "br"));
        assert!(accepts("*", "gzip"));
        assert!(!accepts("gzip, br;q=0", "br"));
        assert!(!accepts("gzip, deflate", "br"));
        assert!(!accepts("", "gzip"));
    }

    #[test]
    fn test_if_none_match_names_the_etag_strong_weak_or_any() {
        assert!(matches("\"abc\"", "\"abc\""));
        assert!(matches("\"x\", W/\"abc\"", "\"abc\""));
        assert!(matches("*", "\"abc\""));
        assert!(!matches("\"abcd\"", "\"abc\""));
        assert!(!matches("", "\"abc\""));
    }
}

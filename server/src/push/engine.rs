//! One push: encrypted with the recipient's own keys (aes128gcm, RFC 8291, a fresh key and
//! salt per attempt, see `encryption`), signed with VAPID (one JWT per push-service origin, see `vapid`),
//! POSTed over the one shared HTTP client, retried, and ended under the status policy:
//! - any 2xx: delivered;
//! - 404 or 410: the subscription is gone (the fan-out reports it, see `delivery`);
//! - 429, 5xx, timeouts and connection errors: retried, at most `max_retries` times, after
//!   the service's `Retry-After` when it gives one (capped at `max_backoff`), else after a
//!   jittered exponential backoff; then failed;
//! - 413: a bug (payloads are checked against the budget before sending): logged as an
//!   error, not retried;
//! - 400, 401, 403: our request or our VAPID key is wrong: logged as an error, member kept;
//! - anything else: failed and logged, member kept.
//!
//! A push holds a permit of its push-service origin's share (`max_in_flight_per_origin`,
//! see `origins`), taken first, and then a slot of `max_in_flight` while it is encrypted
//! and sent: a hung origin holds at most its share of the global slots. A push waiting to
//! retry holds neither.

use std::time::{Duration, SystemTime};

use http::Uri;
use rand::Rng;
use reqwest::{
    header::{
        HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE,
        USER_AGENT,
    },
    StatusCode,
};
use url::Url;

use app::{budget, wire::PushMessage};

use super::{
    delivery::Delivery,
    encryption::{self, KeysError, ReceiverKeys},
    http2::{SendError, Sent},
    origins::OriginPush,
    report::Outcome,
};
use crate::{chat::STALE_GRACE, model::subscription::Subscription};

/// The engine's limits and retry policy.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// Pushes being encrypted or sent at once, across all fan-outs.
    pub max_in_flight: usize,
    /// Pushes being encrypted or sent at once to one push-service origin (scheme, host,
    /// port); an origin with this many pending has none of its queued batches taken.
    pub max_in_flight_per_origin: usize,
    /// Queued fan-outs this process delivers at once (on PostgreSQL, each holds a
    /// database connection while it does).
    pub max_fan_outs: usize,
    /// Retries of one push after a 429, a 5xx, a timeout or a connection error.
    pub max_retries: u32,
    /// The wait before the first retry; it doubles for each next one (with jitter).
    pub first_backoff: Duration,
    /// The longest wait before a retry, `Retry-After` included.
    pub max_backoff: Duration,
    /// The longest a push service may take to answer one push.
    pub request_timeout: Duration,
    /// Let push service names resolve to loopback addresses (local testing only).
    pub allow_loopback_endpoints: bool,
    /// Once stopped, send every fan-out still queued before returning: nobody else would
    /// (one process per store, as on sled). Where other instances take from the same
    /// queue (PostgreSQL), a stopping one leaves what is queued to them.
    pub finish_queue_on_stop: bool,
    /// Certificates (DER) the client trusts as roots besides the public ones: the local
    /// push service's, made at its start, for tests and `pushchat bench` only. No `serve`
    /// flag or config file key sets it (see `config`): a deployment trusts the public
    /// roots alone.
    pub extra_trusted_roots: Vec<Vec<u8>>,
    /// The chat's public URL, absolute: every push's notification opens it.
    pub chat_url: String,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            // Mostly pushes waiting on their push service's answer: cheap, and enough that
            // hundreds of slow endpoints leave room for everyone else.
            max_in_flight: 2048,
            // A quarter of the global slots: the push services in use are a handful (FCM,
            // Mozilla, Apple, Microsoft), so a hung one leaves three quarters to the
            // others. By Little's law 512 in flight carries 17k pushes/s (above one core's
            // encryption) at a 30 ms answer, 5k/s at 100 ms; and it is a few HTTP/2
            // connections' worth of streams.
            max_in_flight_per_origin: 512,
            // Cheap on sled, and enough that batches waiting on slow push services leave
            // room for the others (each batch may hold a few of them).
            max_fan_outs: 256,
            max_retries: 3,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            allow_loopback_endpoints: false,
            finish_queue_on_stop: true,
            extra_trusted_roots: Vec::new(),
            chat_url: "http://127.0.0.1:3000/".to_owned(),
        }
    }
}

impl DeliverySettings {
    /// The wait before retry number `retry` (1 for the first): the push service's
    /// `Retry-After` if it gave one, else `first_backoff` doubled per retry, ±50% at random
    /// so that many pushes refused together do not all come back together.
    fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let wait = retry_after.unwrap_or_else(|| {
            let exponential = self
                .first_backoff
                .saturating_mul(1 << retry.saturating_sub(1).min(16));
            exponential.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
        });
        wait.min(self.max_backoff)
    }
}

/// RFC 8030 §5.3: how eagerly a push service should wake the device for a push.
#[derive(Clone, Copy)]
enum Urgency {
    Normal,
    High,
}

impl Urgency {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Urgency::Normal => "normal",
            Urgency::High => "high",
        })
    }
}

/// How a message is pushed: its headers and its body's size.
struct Kind {
    ttl_secs: u32,
    urgency: Urgency,
    /// A newer push with the same topic replaces an undelivered older one.
    topic: Option<&'static str>,
}

impl Kind {
    fn of(message: &PushMessage) -> Self {
        match message {
            // People wait for chat lines; a day-old line is still worth showing.
            PushMessage::Line(_) => Kind {
                ttl_secs: 24 * 3600,
                urgency: Urgency::High,
                topic: None,
            },
            // An operator's notice is timely, but not urgent enough to wake a phone.
            // A removed member's browsers should hear of it even after a day away.
            PushMessage::Notice { .. } | PushMessage::Removed { .. } => Kind {
                ttl_secs: 24 * 3600,
                urgency: Urgency::Normal,
                topic: None,
            },
            // A silent browser's warning waits at its push service for as long as the
            // browser has to answer it; a later one replaces it.
            PushMessage::Stale { .. } => Kind {
                ttl_secs: STALE_GRACE.as_secs() as u32,
                urgency: Urgency::Normal,
                topic: Some("stale"),
            },
            // Only the newest member-list change matters to a browser that was away.
            PushMessage::Joined { .. } | PushMessage::Left { .. } => Kind {
                ttl_secs: 3600,
                urgency: Urgency::Normal,
                topic: Some("members"),
            },
        }
    }

    /// Every header of its pushes but the origin's `Authorization`.
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(HeaderName::from_static("ttl"), self.ttl_secs.into());
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("aes128gcm"));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(HeaderName::from_static("urgency"), self.urgency.header());
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("pushchat/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(topic) = self.topic {
            headers.insert(
                HeaderName::from_static("topic"),
                HeaderValue::from_static(topic),
            );
        }
        headers
    }
}

/// The headers a push carries besides its body and `Authorization` (made once per
/// fan-out), and the size its body is padded to.
pub(super) struct PushOptions {
    headers: HeaderMap,
    /// The body's size after padding (see `encryption::encrypt`); 0 pads nothing.
    pad_to: usize,
}

impl PushOptions {
    /// The options of `message`, whose payload is `payload_len` bytes.
    pub(super) fn for_message(message: &PushMessage, payload_len: usize) -> Self {
        // Every push is padded to one of a few sizes, so its size does not tell its length
        // (see `app::budget`). One over the budget (a bug) goes unpadded, to be refused.
        PushOptions {
            headers: Kind::of(message).headers(),
            pad_to: budget::padded_body_size(payload_len).unwrap_or(0),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error("the stored endpoint is not a URL")]
    Endpoint(#[from] url::ParseError),
    #[error("the stored endpoint is not a URI")]
    Uri(#[from] http::uri::InvalidUri),
    #[error("the stored subscription's keys are unusable")]
    Keys(#[from] KeysError),
}

/// Why a push service did not answer a push.
#[derive(Debug, thiserror::Error)]
enum Unanswered {
    #[error(transparent)]
    Http2(#[from] SendError),
    #[error(transparent)]
    Http1(#[from] reqwest::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Where a push goes, parsed once per push.
enum Endpoint {
    /// For the HTTP/2 client (and the general one, should the service not speak HTTP/2).
    Https(Uri),
    /// `http`: for the general client only.
    Http(Url),
}

impl Endpoint {
    fn parse(endpoint: &str) -> Result<Self, BuildError> {
        if !endpoint.starts_with("https://") {
            return Ok(Endpoint::Http(Url::parse(endpoint)?));
        }
        // Stored endpoints are plain ASCII URLs (see `subscription`): parsed as they are,
        // without the URL standard's normalisation unless they need it.
        match Uri::try_from(endpoint) {
            Ok(uri) => Ok(Endpoint::Https(uri)),
            Err(_) => Ok(Endpoint::Https(Uri::try_from(
                Url::parse(endpoint)?.as_str(),
            )?)),
        }
    }

    fn host(&self) -> &str {
        match self {
            Endpoint::Https(uri) => uri.host(),
            Endpoint::Http(url) => url.host_str(),
        }
        .unwrap_or_default()
    }
}

/// What every attempt at one push needs, parsed once per push.
struct Recipient {
    endpoint: Endpoint,
    keys: ReceiverKeys,
}

impl Recipient {
    fn parse(to: &Subscription) -> Result<Self, BuildError> {
        Ok(Recipient {
            endpoint: Endpoint::parse(&to.endpoint)?,
            keys: ReceiverKeys::from_subscription(to)?,
        })
    }
}

/// The result of one try at one push.
enum Attempt {
    Done(Outcome),
    /// Worth another try, after the push service's `Retry-After` if it gave one.
    Retry {
        retry_after: Option<Duration>,
    },
}

impl Delivery {
    /// One push, with its retries; returns how it ended and how many retries it took.
    pub(super) async fn push(
        &self,
        payload: &[u8],
        options: &PushOptions,
        to: &Subscription,
        origin: &OriginPush,
    ) -> (Outcome, u32) {
        let recipient = match Recipient::parse(to) {
            Ok(recipient) => recipient,
            Err(error) => {
                tracing::error!(host = %host_of(&to.endpoint), error = %error, "could not build a push");
                return (Outcome::Failed, 0);
            }
        };
        let mut retries = 0;
        loop {
            let attempt = {
                // The origin's permit first: a push waiting on a hung origin holds no
                // global slot. The semaphores are never closed.
                let Some(_origin_slot) = origin.permit().await else {
                    return (Outcome::Failed, retries);
                };
                let Ok(_slot) = self.in_flight.acquire().await else {
                    return (Outcome::Failed, retries);
                };
                self.attempt(payload, options, &recipient, origin.name())
                    .await
            };
            match attempt {
                Attempt::Done(outcome) => return (outcome, retries),
                Attempt::Retry { .. } if retries == self.settings.max_retries => {
                    tracing::warn!(host = %host_of(&to.endpoint), retries, "push failed after retries");
                    return (Outcome::Failed, retries);
                }
                Attempt::Retry { retry_after } => {
                    retries += 1;
                    tokio::time::sleep(self.settings.backoff(retries, retry_after)).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        payload: &[u8],
        options: &PushOptions,
        to: &Recipient,
        origin: &str,
    ) -> Attempt {
        let host = || to.endpoint.host().to_owned();
        let body = match encryption::encrypt(&to.keys, payload, options.pad_to) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(host = %host(), error = %error, "could not build a push");
                return Attempt::Done(Outcome::Failed);
            }
        };
        let mut headers = options.headers.clone();
        headers.insert(AUTHORIZATION, self.vapid.authorization_for(origin));
        let sent = tokio::time::timeout(
            self.settings.request_timeout,
            self.post(to, origin, headers, body),
        )
        .await
        .unwrap_or(Err(Unanswered::Timeout(self.settings.request_timeout)));
        let (status, headers) = match sent {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(host = %host(), error = %error, "push not answered; will retry");
                return Attempt::Retry { retry_after: None };
            }
        };
        match status {
            status if status.is_success() => Attempt::Done(Outcome::Delivered),
            StatusCode::NOT_FOUND | StatusCode::GONE => Attempt::Done(Outcome::Gone),
            status if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
                tracing::debug!(host = %host(), %status, "push service busy; will retry");
                Attempt::Retry {
                    retry_after: retry_after(&headers),
                }
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                tracing::error!(host = %host(), bytes = payload.len(), "push service refused the payload size: a bug, payloads are checked before sending");
                Attempt::Done(Outcome::Failed)
            }
            status @ (StatusCode::BAD_REQUEST
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN) => {
                tracing::error!(host = %host(), %status, "push service refused our request: check the VAPID key and subject");
                Attempt::Done(Outcome::Failed)
            }
            status => {
                tracing::warn!(host = %host(), %status, "push service did not accept the push");
                Attempt::Done(Outcome::Failed)
            }
        }
    }

    /// POSTs `body` with `headers` to `to`, an endpoint of `origin`: over the origin's
    /// HTTP/2 connection when it is `https` and the service speaks HTTP/2, else over the
    /// general client.
    async fn post(
        &self,
        to: &Recipient,
        origin: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<(StatusCode, HeaderMap), Unanswered> {
        if let Endpoint::Https(uri) = &to.endpoint {
            match self.http2.post(origin, uri, headers, body).await? {
                Sent::Answered(status, headers) => return Ok((status, headers)),
                Sent::NotHttp2 { headers, body } => {
                    return self.post_http1(to, headers, body).await
                }
            }
        }
        self.post_http1(to, headers, body).await
    }

    /// POSTs over the general client.
    async fn post_http1(
        &self,
        to: &Recipient,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<(StatusCode, HeaderMap), Unanswered> {
        let request = match &to.endpoint {
            Endpoint::Https(uri) => self.http.post(uri.to_string()),
            Endpoint::Http(url) => self.http.post(url.clone()),
        };
        let response = request.headers(headers).body(body).send().await?;
        Ok((response.status(), response.headers().clone()))
    }
}

/// `Retry-After` as a wait: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    match value.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            Some(at.duration_since(SystemTime::now()).unwrap_or_default())
        }
    }
}

/// The push service's host, for logs: the endpoint's path identifies the member.
fn host_of(endpoint: &str) -> String {
    Url::parse(endpoint)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(retry_after).unwrap());
        headers
    }

    #[test]
    fn test_backoff_doubles_with_jitter_and_honours_retry_after_up_to_the_cap() {
        let settings = DeliverySettings::default();
        for retry in 1..=3 {
            let nominal = settings.first_backoff * (1 << (retry - 1));
            let wait = settings.backoff(retry, None);
            assert!(
                wait >= nominal / 2 && wait <= nominal * 3 / 2,
                "retry {retry}: {wait:?}"
            );
        }
        assert_eq!(
            settings.backoff(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            settings.backoff(1, Some(Duration::from_secs(3600))),
            settings.max_backoff
        );
        assert_eq!(settings.backoff(40, None), settings.max_backoff);
    }

    #[test]
    fn test_retry_after_takes_seconds_and_dates() {
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        let soon = SystemTime::now() + Duration::from_secs(120);
        let wait = retry_after(&headers(&httpdate::fmt_http_date(soon))).unwrap();
        assert!(
            wait > Duration::from_secs(110) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}

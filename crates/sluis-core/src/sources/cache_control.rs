//! How long an answer may be kept, by its own headers (RFC 9111 §5.2.2, §5.3): never
//! longer than `s-maxage`/`max-age` (minus `Age`) or `Expires` − `Date` say, and not at
//! all with `no-store`, `no-cache` or an `Expires` that does not parse.

use std::time::{Duration, SystemTime};

/// The headers that bound an answer's lifetime, as received.
#[derive(Debug, Default, Clone)]
pub struct Freshness<'a> {
    pub cache_control: Option<&'a str>,
    pub age: Option<&'a str>,
    pub expires: Option<&'a str>,
    pub date: Option<&'a str>,
}

/// The time an answer may be cached: the configured `ttl`, capped by what the answer
/// says. `Duration::ZERO`: do not cache.
pub fn ttl(configured: Duration, headers: &Freshness<'_>, now: SystemTime) -> Duration {
    let mut max_age = None;
    let mut s_maxage = None;
    if let Some(value) = headers.cache_control {
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive, None),
            };
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                "no-store" | "no-cache" | "private" => return Duration::ZERO,
                "max-age" | "s-maxage" => {
                    // A malformed value makes the answer stale (RFC 9111 §4.2.1).
                    let Some(seconds) = argument.and_then(|a| a.parse::<u64>().ok()) else {
                        return Duration::ZERO;
                    };
                    if name == "max-age" {
                        max_age = Some(seconds);
                    } else {
                        s_maxage = Some(seconds);
                    }
                }
                _ => {}
            }
        }
    }
    let age = headers
        .age
        .and_then(|a| a.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let lifetime = match s_maxage.or(max_age) {
        Some(seconds) => Some(Duration::from_secs(seconds.saturating_sub(age))),
        None => match headers.expires {
            Some(expires) => {
                let Ok(expires) = httpdate::parse_http_date(expires.trim()) else {
                    return Duration::ZERO;
                };
                let date = headers
                    .date
                    .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
                    .unwrap_or(now);
                Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
            }
            None => None,
        },
    };
    match lifetime {
        Some(lifetime) => lifetime.min(configured),
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn cc(value: &str) -> Duration {
        ttl(
            HOUR,
            &Freshness {
                cache_control: Some(value),
                ..Freshness::default()
            },
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn directives_cap_the_configured_ttl() {
        assert_eq!(cc("max-age=60"), Duration::from_secs(60));
        assert_eq!(cc("public, max-age=7200"), HOUR);
        assert_eq!(cc("max-age=60, s-maxage=10"), Duration::from_secs(10));
        assert_eq!(cc("MAX-AGE=\"5\""), Duration::from_secs(5));
        assert_eq!(cc("max-age=0"), Duration::ZERO);
        assert_eq!(cc("no-store"), Duration::ZERO);
        assert_eq!(cc("max-age=60, no-cache"), Duration::ZERO);
        assert_eq!(cc("max-age=abc"), Duration::ZERO);
        assert_eq!(cc("max-age"), Duration::ZERO);
        assert_eq!(cc("must-revalidate"), HOUR);
    }

    #[test]
    fn age_is_subtracted() {
        let headers = Freshness {
            cache_control: Some("max-age=60"),
            age: Some("50"),
            ..Freshness::default()
        };
        assert_eq!(
            ttl(HOUR, &headers, SystemTime::UNIX_EPOCH),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn expires_counts_from_date() {
        let headers = Freshness {
            expires: Some("Sun, 06 Dec 2026 08:00:30 GMT"),
            date: Some("Sun, 06 Dec 2026 08:00:00 GMT"),
            ..Freshness::default()
        };
        assert_eq!(
            ttl(HOUR, &headers, SystemTime::UNIX_EPOCH),
            Duration::from_secs(30)
        );
        let malformed = Freshness {
            expires: Some("tomorrow"),
            ..Freshness::default()
        };
        assert_eq!(
            ttl(HOUR, &malformed, SystemTime::UNIX_EPOCH),
            Duration::ZERO
        );
        let past = Freshness {
            expires: Some("Thu, 01 Jan 1970 00:00:00 GMT"),
            date: Some("Sun, 06 Dec 2026 08:00:00 GMT"),
            ..Freshness::default()
        };
        assert_eq!(ttl(HOUR, &past, SystemTime::UNIX_EPOCH), Duration::ZERO);
    }

    proptest! {
        /// Whatever the headers say, an answer is never kept longer than configured,
        /// and parsing never panics.
        #[test]
        fn never_longer_than_configured(
            cache_control in proptest::option::of(".{0,64}"),
            age in proptest::option::of(".{0,12}"),
            expires in proptest::option::of(".{0,40}"),
            configured in 0u64..100_000,
        ) {
            let configured = Duration::from_secs(configured);
            let headers = Freshness {
                cache_control: cache_control.as_deref(),
                age: age.as_deref(),
                expires: expires.as_deref(),
                date: None,
            };
            prop_assert!(ttl(configured, &headers, SystemTime::now()) <= configured);
        }

        /// `max-age=N` alone gives min(N, configured).
        #[test]
        fn max_age_is_honoured(n in 0u64..1_000_000, configured in 0u64..1_000_000) {
            let got = ttl(
                Duration::from_secs(configured),
                &Freshness { cache_control: Some(&format!("max-age={n}")), ..Freshness::default() },
                SystemTime::now(),
            );
            prop_assert_eq!(got, Duration::from_secs(n.min(configured)));
        }
    }
}

//! DPoP server nonces (RFC 9449 §8, §9, as a resource server): a proof must carry a nonce
//! this server handed out recently, which bounds how long a proof made in advance (by a
//! client whose key was briefly in the wrong hands) stays usable.
//!
//! Stateless: a nonce is `base64url(window ‖ HMAC-SHA256(key, label ‖ window))`, where
//! `window` is the number of `lifetime`s since the epoch. A nonce of the current or the
//! previous window is accepted, so one lives between `lifetime` and twice that, and no store
//! is needed. Replicas that share the key (`dpop.nonce.key`) accept each other's; without
//! one the key is made at start, and a restart or another replica answers `use_dpop_nonce`
//! once, after which the client retries with the nonce it was given.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Domain separation: a MAC made for something else with the same key is not a nonce.
const LABEL: &[u8] = b"sluis dpop nonce v1";
/// `window` (8 bytes) and the SHA-256 tag (32 bytes).
const RAW_LEN: usize = 8 + 32;
/// The longest nonce looked at; anything longer is refused unread.
const MAX_LEN: usize = 64;

/// Makes and checks nonces.
pub struct Nonces {
    key: aws_lc_rs::hmac::Key,
    /// Seconds per window (at least 1).
    lifetime: i64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Nonces {
    /// Nonces under `secret`, each window `lifetime` seconds long.
    pub fn new(secret: &[u8], lifetime: i64) -> Nonces {
        Nonces {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
            lifetime: lifetime.max(1),
        }
    }

    /// Nonces under a key made now: valid in this process only.
    pub fn random(lifetime: i64) -> Nonces {
        Nonces::new(&crate::secret::random_key(), lifetime)
    }

    fn window(&self, now: i64) -> i64 {
        now.div_euclid(self.lifetime)
    }

    /// What a window's tag is made over.
    fn message(window: i64) -> Vec<u8> {
        [LABEL, &window.to_be_bytes()].concat()
    }

    fn tag(&self, window: i64) -> aws_lc_rs::hmac::Tag {
        aws_lc_rs::hmac::sign(&self.key, &Nonces::message(window))
    }

    /// The nonce to hand out at `now` (Unix seconds).
    pub fn issue(&self, now: i64) -> String {
        let window = self.window(now);
        let mut raw = Vec::with_capacity(RAW_LEN);
        raw.extend_from_slice(&window.to_be_bytes());
        raw.extend_from_slice(self.tag(window).as_ref());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` was made with this key in the window of `now` or the one before.
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        if nonce.len() > MAX_LEN {
            return false;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != RAW_LEN {
            return false;
        }
        let (window, tag) = raw.split_at(8);
        let Ok(window) = <[u8; 8]>::try_from(window).map(i64::from_be_bytes) else {
            return false;
        };
        let current = self.window(now);
        if window != current && Some(window) != current.checked_sub(1) {
            return false;
        }
        aws_lc_rs::hmac::verify(&self.key, &Nonces::message(window), tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIFETIME: i64 = 300;

    #[test]
    fn a_nonce_lives_for_its_window_and_the_next() {
        let nonces = Nonces::new(b"a key of at least thirty-two bytes!", LIFETIME);
        let start = 1_800_000_000 - 1_800_000_000 % LIFETIME;
        let nonce = nonces.issue(start + 10);
        assert!(nonces.accepts(&nonce, start + 10));
        assert!(nonces.accepts(&nonce, start + LIFETIME - 1));
        assert!(
            nonces.accepts(&nonce, start + 2 * LIFETIME - 1),
            "the previous window"
        );
        assert!(!nonces.accepts(&nonce, start + 2 * LIFETIME), "expired");
        assert!(!nonces.accepts(&nonce, start - 1), "from the future");
        assert_eq!(nonce, nonces.issue(start), "one nonce per window");
        assert!(!nonce.contains(['+', '/', '=', '"', '\\', ' ']), "{nonce}");
    }

    #[test]
    fn forged_or_mangled_nonces_are_refused() {
        let nonces = Nonces::new(b"key one", LIFETIME);
        let now = 1_800_000_123;
        let nonce = nonces.issue(now);
        assert!(!Nonces::new(b"key two", LIFETIME).accepts(&nonce, now));
        assert!(!Nonces::random(LIFETIME).accepts(&nonce, now));
        for bad in ["", "x", "not base64!", &"A".repeat(54), &"A".repeat(500)] {
            assert!(!nonces.accepts(bad, now), "{bad}");
        }
        // A window moved forward with the old tag: the tag covers the window.
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        raw[7] = raw[7].wrapping_add(1);
        assert!(!nonces.accepts(&URL_SAFE_NO_PAD.encode(&raw), now + LIFETIME));
        // Truncated or extended tags.
        assert!(!nonces.accepts(&URL_SAFE_NO_PAD.encode(&raw[..RAW_LEN - 1]), now));
        let mut longer = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        longer.push(0);
        assert!(!nonces.accepts(&URL_SAFE_NO_PAD.encode(&longer), now));
    }

    proptest! {
        /// Any string is refused unless this key made it for this or the previous window.
        #[test]
        fn any_string_is_refused(text in "\\PC{0,80}", now in 0i64..4_000_000_000) {
            let nonces = Nonces::new(b"the key", LIFETIME);
            prop_assert!(!nonces.accepts(&text, now) || text == nonces.issue(now)
                || text == nonces.issue(now - LIFETIME));
        }

        /// Issued at `issued`, checked at `checked`: accepted exactly when `checked` is in
        /// the same window or the next; never with another key.
        #[test]
        fn windows_decide(issued in 0i64..4_000_000_000, later in 0i64..(4 * LIFETIME),
                          other_key in proptest::collection::vec(any::<u8>(), 1..40)) {
            let nonces = Nonces::new(b"the key", LIFETIME);
            let checked = issued + later;
            let nonce = nonces.issue(issued);
            let windows_apart = checked / LIFETIME - issued / LIFETIME;
            prop_assert_eq!(nonces.accepts(&nonce, checked), windows_apart <= 1);
            prop_assume!(other_key != b"the key");
            prop_assert!(!Nonces::new(&other_key, LIFETIME).accepts(&nonce, issued));
        }

        /// A nonce with any one byte changed is refused.
        #[test]
        fn any_changed_byte_is_refused(now in 0i64..4_000_000_000, at in 0usize..RAW_LEN,
                                       flip in 1u8..=255) {
            let nonces = Nonces::new(b"the key", LIFETIME);
            let mut raw = URL_SAFE_NO_PAD.decode(nonces.issue(now)).unwrap();
            raw[at] ^= flip;
            prop_assert!(!nonces.accepts(&URL_SAFE_NO_PAD.encode(&raw), now));
        }
    }
}

//! Keys made at start, for what only this process has to recognise again: sealed response
//! grants and DPoP server nonces when no shared key is configured.

/// 32 random bytes. A failing system RNG would leave zeros, so uuid's RNG is mixed in as
/// well: a failure cannot yield a known key.
pub fn random_key() -> [u8; 32] {
    let mut secret = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut secret);
    for (byte, extra) in secret.iter_mut().zip(uuid::Uuid::new_v4().as_bytes()) {
        *byte ^= extra;
    }
    secret
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_keys_differ() {
        assert_ne!(super::random_key(), super::random_key());
    }
}

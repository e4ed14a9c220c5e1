//! Request signing for SIGNED (TRADE / USER_DATA) endpoints: hex HMAC-SHA256 of the
//! exact bytes sent, the raw query string directly followed by the raw body.

use ring::hmac;

/// The hex signature of `payload` under `secret`.
pub fn sign(secret: &[u8], payload: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hex(hmac::sign(&key, payload).as_ref())
}

/// Whether `signature` (hex, either case) is the HMAC of `payload`. Constant time.
pub fn verify(secret: &[u8], payload: &[u8], signature: &str) -> bool {
    let Some(raw) = unhex(signature) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, payload, &raw).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Splits a signed request's parameters into everything before `signature` and the
/// signature itself. Binance requires `signature` to be the last parameter, so the
/// signed bytes are exactly the ones before `&signature=`.
pub fn split_signature(total: &str) -> Option<(&str, &str)> {
    if let Some(sig) = total.strip_prefix("signature=") {
        return Some(("", sig));
    }
    let at = total.rfind("&signature=")?;
    let sig = &total[at + "&signature=".len()..];
    (!sig.contains('&')).then_some((&total[..at], sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Binance "General Info" page (recomputed with openssl).
    const SECRET: &str = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9";
    const MESSAGE: &str = "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943";
    const EXPECTED: &str = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9";

    #[test]
    fn matches_the_documented_vector() {
        assert_eq!(sign(SECRET.as_bytes(), MESSAGE.as_bytes()), EXPECTED);
        assert!(verify(SECRET.as_bytes(), MESSAGE.as_bytes(), EXPECTED));
        assert!(verify(
            SECRET.as_bytes(),
            MESSAGE.as_bytes(),
            &EXPECTED.to_uppercase()
        ));
    }

    #[test]
    fn rejects_tampering() {
        assert!(!verify(
            SECRET.as_bytes(),
            b"symbol=BTCUSDT&side=SELL",
            EXPECTED
        ));
        assert!(!verify(SECRET.as_bytes(), MESSAGE.as_bytes(), "zz"));
        assert!(!verify(SECRET.as_bytes(), MESSAGE.as_bytes(), "abc"));
        assert!(!verify(b"other", MESSAGE.as_bytes(), EXPECTED));
    }

    #[test]
    fn signature_must_be_last() {
        assert_eq!(
            split_signature("a=1&timestamp=2&signature=ff"),
            Some(("a=1&timestamp=2", "ff"))
        );
        assert_eq!(split_signature("signature=ff"), Some(("", "ff")));
        assert_eq!(split_signature("a=1&signature=ff&b=2"), None);
        assert_eq!(split_signature("a=1"), None);
    }
}

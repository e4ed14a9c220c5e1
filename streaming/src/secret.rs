//! A credential that never prints: `Debug` and `Display` show `***`, so a token
//! cannot reach a log line, an error or a metric label by accident.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it to the venue.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Query parameters whose values are credentials (compared without case, and
/// without `-` or `_`).
const SECRET_PARAMS: [&str; 14] = [
    "password",
    "passwd",
    "pwd",
    "pass",
    "sslpassword",
    "secret",
    "clientsecret",
    "token",
    "accesstoken",
    "refreshtoken",
    "apikey",
    "listenkey",
    "signature",
    "session",
];

/// `url` fit for a log line, an error or a `Debug`: the password in the user info
/// and the value of every credential-like query parameter become `***`.
///
/// The user info runs to the *last* `@`, so a password holding `/`, `?` or `@` is
/// masked whole; when that `@` belongs to the query instead, more is masked than
/// needed, never less.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let rest = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) if !user.contains(['/', '?']) => {
                    format!("{user}:***{}", &rest[at..])
                }
                _ => rest.to_owned(),
            }
        }
        None => rest.to_owned(),
    };
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest.as_str(), None),
    };
    let mut out = format!("{scheme}{base}");
    if let Some(query) = query {
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
    }
    out
}

fn is_secret_param(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    SECRET_PARAMS.contains(&k.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_secret_in_a_url_is_masked() {
        for (url, secret, shown) in [
            ("postgres://u:hunter2@h:5432/db", "hunter2", "postgres://u:***@h:5432/db"),
            ("postgres://u:hun/ter2@h/db", "ter2", "postgres://u:***@h/db"),
            ("postgres://u:hun?ter2@h/db", "ter2", "postgres://u:***@h/db"),
            ("postgres://u:hun@ter2@h/db", "ter2", "postgres://u:***@h/db"),
            ("redis://:pw@h:6379", "pw", "redis://:***@h:6379"),
            ("postgres://h/db?user=u&password=hunter2&sslmode=require", "hunter2",
             "postgres://h/db?user=u&password=***&sslmode=require"),
            ("postgres://h/db?sslpassword=hunter2", "hunter2", "postgres://h/db?sslpassword=***"),
            ("wss://fstream.binance.com/private/ws?listenKey=pqia91ma19a5s61cv6a81va65", "pqia91",
             "wss://fstream.binance.com/private/ws?listenKey=***"),
            ("https://fapi.binance.com/fapi/v1/order?symbol=BTCUSDT&timestamp=1&signature=c8db56825ae71d6d79447849e617115f",
             "c8db5682", "https://fapi.binance.com/fapi/v1/order?symbol=BTCUSDT&timestamp=1&signature=***"),
            ("https://api.example.com/x?access_token=abc123#frag", "abc123", "https://api.example.com/x?access_token=***#frag"),
            ("https://api.example.com/x?api-key=abc123", "abc123", "https://api.example.com/x?api-key=***"),
        ] {
            let r = redact_url(url);
            assert!(!r.contains(secret), "{url} -> {r}");
            assert_eq!(r, shown);
        }
        // Nothing secret: unchanged.
        for url in [
            "postgres://h/db",
            "https://localhost:5000",
            "https://h/p?email=a@b.c",
            "ws://127.0.0.1:1/v1/api/ws",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}

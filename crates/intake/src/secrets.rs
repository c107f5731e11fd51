//! Intake's secrets: integration keys and signing secrets as values that never print, the
//! webhook signature (`X-Firebreak-Signature`), and the sealing (AES-256-GCM) of the signing
//! secrets run-time integrations store.

use std::fmt;

use firebreak_domain::access::sha256_hex;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// A secret text (an integration key, a signing secret): `Debug` shows `***`, so a logged
/// value or configuration never carries it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text itself, for the few places that need it (comparing, hashing, signing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The header a signed webhook call carries.
pub const SIGNATURE_HEADER: &str = "X-Firebreak-Signature";

/// How far a signature's time may be from the server's, either way: a captured call
/// replays for at most this long.
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;

/// The longest signature header read; a longer one is malformed, not parsed.
const MAX_SIGNATURE_HEADER: usize = 1024;

/// Why a webhook call's signature was refused. The messages name the header and never
/// repeat what it held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "missing {SIGNATURE_HEADER} header: this integration accepts signed calls only (t=<unix seconds>,v1=<hex HMAC-SHA256>)"
    )]
    Missing,
    #[error(
        "malformed {SIGNATURE_HEADER} header: {0}; expected t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.\" and the body>"
    )]
    Malformed(&'static str),
    #[error(
        "{SIGNATURE_HEADER} is more than 5 minutes from the server's time: sign each call when it is sent"
    )]
    Stale,
    #[error("{SIGNATURE_HEADER} does not match the body: check the signing secret")]
    Mismatch,
}

/// The header value signing `body` with `secret` at `t` (unix seconds): what a sender puts
/// in [`SIGNATURE_HEADER`].
pub fn sign(secret: &Secret, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(format!("{t}.").as_bytes());
    ctx.update(body);
    format!("t={t},v1={}", hex(ctx.sign().as_ref()))
}

/// Checks a call's signature header (`None`: absent) over `body` against `secret`, at
/// `now` (unix seconds). Signatures are compared in constant time.
pub(crate) fn verify(
    secret: &Secret,
    header: Option<&[u8]>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > MAX_SIGNATURE_HEADER {
        return Err(SignatureError::Malformed("longer than 1024 bytes"));
    }
    let header =
        std::str::from_utf8(header).map_err(|_| SignatureError::Malformed("not ASCII text"))?;
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((name, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed("a part is not name=value"));
        };
        match name.trim() {
            "t" => {
                let digits = value.trim();
                // Twelve digits reach the year 33658: anything longer is not a time.
                if digits.is_empty()
                    || digits.len() > 12
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(SignatureError::Malformed("t is not a unix time in seconds"));
                }
                t = Some(digits);
            }
            "v1" => {
                let sig = unhex(value.trim())
                    .filter(|s| s.len() == 32)
                    .ok_or(SignatureError::Malformed("v1 is not 64 hex digits"))?;
                signatures.push(sig);
            }
            // Other schemes (a later version's) are skipped, as senders may send several.
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed("no t"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    let seconds: i64 = t
        .parse()
        .map_err(|_| SignatureError::Malformed("t is not a unix time in seconds"))?;
    if (now - seconds).abs() > SIGNATURE_TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
    let mut signed = Vec::with_capacity(t.len() + 1 + body.len());
    signed.extend_from_slice(t.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    // Each given signature is checked in full (ring compares in constant time).
    let matched = signatures.iter().fold(false, |ok, sig| {
        hmac::verify(&key, &signed, sig).is_ok() | ok
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "no secrets encryption key is configured: set secrets_encryption.key_file (or FIREBREAK_SECRETS_KEY) to store signing secrets"
    )]
    NoKey,
    #[error(
        "sealed under key {0}, which secrets_encryption does not hold (key_file or previous_key_files)"
    )]
    UnknownKey(String),
    #[error("not a sealed secret, or altered since it was sealed")]
    Corrupt,
}

/// One AES-256-GCM key, known by its id: the first 8 hex digits of its SHA-256.
struct SealingKey {
    id: String,
    key: LessSafeKey,
}

/// The keys secrets are sealed with: the current one seals, it and the previous ones open.
///
/// A sealed secret reads `v1:<key id>:<hex of nonce, ciphertext and tag>`; the
/// integration's name is the associated data, so a sealed secret moved to another row does
/// not open.
#[derive(Default)]
pub struct Keyring {
    current: Option<SealingKey>,
    previous: Vec<SealingKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    /// A keyring sealing with `current` (none: secrets cannot be sealed, only declared ones
    /// exist) and opening with it and `previous`.
    pub fn new(current: Option<[u8; 32]>, previous: &[[u8; 32]]) -> Self {
        let key = |bytes: &[u8; 32]| SealingKey {
            id: key_id(bytes),
            key: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256 takes 32 bytes"),
            ),
        };
        Self {
            current: current.as_ref().map(key),
            previous: previous.iter().map(key).collect(),
        }
    }

    /// Reads a key as configured: 64 hex digits (32 bytes), surrounding white space aside.
    pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
        unhex(text.trim())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| "a secrets key is 64 hex digits (32 bytes)".to_owned())
    }

    /// A new random key, as 64 hex digits.
    pub fn generate_key() -> Result<String, SealError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::NoKey)?;
        Ok(hex(&bytes))
    }

    /// Whether a key to seal with is configured.
    pub fn can_seal(&self) -> bool {
        self.current.is_some()
    }

    /// The id of the sealing key, if any.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    /// Seals `secret` for the integration `name` under the current key.
    pub fn seal(&self, name: &str, secret: &Secret) -> Result<String, SealError> {
        let key = self.current.as_ref().ok_or(SealError::NoKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Corrupt)?;
        let mut data = secret.expose().as_bytes().to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Corrupt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("v1:{}:{}", key.id, hex(&out)))
    }

    /// Opens what [`Keyring::seal`] sealed for `name`, with whichever key it names.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Secret, SealError> {
        let (id, data) = parse_sealed(sealed)?;
        let key = self
            .current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        if data.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let (nonce, rest) = data.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Corrupt)?;
        let mut rest = rest.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut rest)
            .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(plain.to_vec())
            .map(Secret)
            .map_err(|_| SealError::Corrupt)
    }

    /// Whether `sealed` is sealed under the current key (else it is to be sealed again).
    pub fn is_current(&self, sealed: &str) -> bool {
        match (parse_sealed(sealed), self.current_id()) {
            (Ok((id, _)), Some(current)) => id == current,
            _ => false,
        }
    }
}

fn parse_sealed(sealed: &str) -> Result<(&str, Vec<u8>), SealError> {
    let mut parts = sealed.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(id), Some(data)) => Ok((id, unhex(data).ok_or(SealError::Corrupt)?)),
        _ => Err(SealError::Corrupt),
    }
}

/// A key's id: the first 8 hex digits of its SHA-256, which says which key sealed a
/// secret without saying anything of the key.
fn key_id(key: &[u8; 32]) -> String {
    sha256_hex(key)[..8].to_owned()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn secret() -> Secret {
        Secret::new("whsec-0123456789abcdef")
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", secret()), "***");
        assert!(!format!("{:?}", Some(secret())).contains("whsec"));
    }

    /// RFC 4231 test case 2: the HMAC is HMAC-SHA256 of exactly "<t>." and the body.
    #[test]
    fn signatures_are_hmac_sha256_of_the_time_and_the_body() {
        let header = sign(&Secret::new("Jefe"), 1, b"what do ya want for nothing?");
        assert!(header.starts_with("t=1,v1="), "{header}");
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, b"Jefe"));
        ctx.update(b"1.what do ya want for nothing?");
        assert_eq!(header, format!("t=1,v1={}", hex(ctx.sign().as_ref())));
        let rfc = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"Jefe"),
            b"what do ya want for nothing?",
        );
        assert_eq!(
            hex(rfc.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_signature_is_accepted_only_over_its_body_within_five_minutes() {
        let body = br#"{"version":"4"}"#;
        let good = sign(&secret(), NOW, body);
        let check =
            |h: &str, body: &[u8], now: i64| verify(&secret(), Some(h.as_bytes()), body, now);
        assert_eq!(check(&good, body, NOW), Ok(()));
        assert_eq!(check(&good, body, NOW + 300), Ok(()));
        assert_eq!(check(&good, body, NOW + 301), Err(SignatureError::Stale));
        assert_eq!(check(&good, body, NOW - 301), Err(SignatureError::Stale));
        assert_eq!(check(&good, b"{}", NOW), Err(SignatureError::Mismatch));
        let other = sign(&Secret::new("another-secret-000000"), NOW, body);
        assert_eq!(check(&other, body, NOW), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(&secret(), None, body, NOW),
            Err(SignatureError::Missing)
        );
        // Several signatures (a sender rotating its secret): one matching is enough.
        let both = format!("{},v1={}", other, &good[good.find("v1=").unwrap() + 3..]);
        assert_eq!(check(&both, body, NOW), Ok(()));
        // Unknown schemes are skipped; order and spaces do not matter.
        let v1 = &good[good.find("v1=").unwrap()..];
        assert_eq!(check(&format!("v0=abc, {v1} , t={NOW}"), body, NOW), Ok(()));
    }

    /// Hostile headers are refused as malformed, whatever they hold, and the message never
    /// repeats them.
    #[test]
    fn hostile_headers_are_malformed() {
        let body = b"{}";
        let v1 = "0".repeat(64);
        let cases = [
            (
                "oversized",
                format!("t={NOW},v1={v1},x={}", "a".repeat(2000)),
            ),
            ("non-hex", format!("t={NOW},v1={}", "zz".repeat(32))),
            ("short", format!("t={NOW},v1=abcd")),
            ("huge t", format!("t={},v1={v1}", "9".repeat(40))),
            ("negative t", format!("t=-5,v1={v1}")),
            ("t not a number", format!("t=now,v1={v1}")),
            ("no t", format!("v1={v1}")),
            ("no v1", format!("t={NOW}")),
            ("empty", String::new()),
            ("no equals", "garbage".to_owned()),
        ];
        for (what, header) in cases {
            let e = verify(&secret(), Some(header.as_bytes()), body, NOW).unwrap_err();
            assert!(matches!(e, SignatureError::Malformed(_)), "{what}: {e:?}");
            let message = e.to_string();
            assert!(message.contains(SIGNATURE_HEADER), "{what}: {message}");
            assert!(
                !message.contains("zz") && !message.contains("aaaa"),
                "{message}"
            );
        }
        let not_utf8 = verify(&secret(), Some(&[b't', b'=', 0xff]), body, NOW);
        assert!(matches!(not_utf8, Err(SignatureError::Malformed(_))));
    }

    #[test]
    fn sealed_secrets_open_with_their_key_and_name_only() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let ring = Keyring::new(Some(k1), &[]);
        let sealed = ring.seal("prom", &secret()).unwrap();
        assert!(
            sealed.starts_with(&format!("v1:{}:", key_id(&k1))),
            "{sealed}"
        );
        assert!(!sealed.contains("whsec"));
        assert_ne!(
            sealed,
            ring.seal("prom", &secret()).unwrap(),
            "fresh nonces"
        );
        assert_eq!(ring.open("prom", &sealed), Ok(secret()));
        assert!(ring.is_current(&sealed));
        // Another row's name, an altered text, an unknown key: refused.
        assert_eq!(ring.open("other", &sealed), Err(SealError::Corrupt));
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(ring.open("prom", &altered), Err(SealError::Corrupt));
        assert_eq!(ring.open("prom", "v1:zz"), Err(SealError::Corrupt));
        let rotated = Keyring::new(Some(k2), &[k1]);
        assert_eq!(
            rotated.open("prom", &sealed),
            Ok(secret()),
            "a previous key reads"
        );
        assert!(!rotated.is_current(&sealed), "and is to be sealed again");
        let forgot = Keyring::new(Some(k2), &[]);
        assert_eq!(
            forgot.open("prom", &sealed),
            Err(SealError::UnknownKey(key_id(&k1)))
        );
        assert_eq!(
            Keyring::default().seal("prom", &secret()),
            Err(SealError::NoKey)
        );
    }

    #[test]
    fn keys_are_64_hex_digits() {
        let key = Keyring::generate_key().unwrap();
        assert_eq!(key.len(), 64);
        assert!(Keyring::parse_key(&format!(" {key}\n")).is_ok());
        assert!(Keyring::parse_key(&key[..62]).is_err());
        assert!(Keyring::parse_key(&"g".repeat(64)).is_err());
    }
}

//! Kraken's request signature, as it documents it: `API-Sign` is the
//! base64 of HMAC-SHA512, keyed with the base64-decoded private key, of the
//! URI path followed by SHA-256 of the nonce and the form-encoded body.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// A private key that is not base64, or is empty. Never shows the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Kraken private key is not valid base64 (as Kraken issues it)")]
pub struct BadSecret;

/// The decoded private key, ready to sign with. Shows as `[redacted]`.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// From the private key as Kraken shows it (base64).
    pub fn from_base64(text: &str) -> Result<SigningKey, BadSecret> {
        match STANDARD.decode(text.trim()) {
            Ok(bytes) if !bytes.is_empty() => Ok(SigningKey(bytes)),
            _ => Err(BadSecret),
        }
    }

    /// `API-Sign` for a request to `path` (from `/0/private/…`) whose
    /// form-encoded body is `body` and carries `nonce`.
    pub fn sign(&self, path: &str, nonce: u64, body: &str) -> String {
        let mut inner = Sha256::new();
        inner.update(nonce.to_string().as_bytes());
        inner.update(body.as_bytes());
        let digest = inner.finalize();
        // HMAC accepts a key of any length: this never fails.
        let mut mac = Hmac::<Sha512>::new_from_slice(&self.0).expect("any key length");
        mac.update(path.as_bytes());
        mac.update(&digest);
        STANDARD.encode(mac.finalize().into_bytes())
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kraken's own example (docs.kraken.com, "Spot REST Authentication"):
    /// a limit order to buy 1.25 XBTUSD at 37,500.
    #[test]
    fn signs_krakens_published_example() {
        let key = SigningKey::from_base64(
            "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==",
        )
        .expect("key");
        let body =
            "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25";
        assert_eq!(
            key.sign("/0/private/AddOrder", 1_616_492_376_594, body),
            "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
        );
        // Any change to what is signed changes the signature.
        assert_ne!(
            key.sign("/0/private/AddOrder", 1_616_492_376_595, body),
            key.sign("/0/private/AddOrder", 1_616_492_376_594, body)
        );
    }

    #[test]
    fn a_bad_secret_is_refused_and_a_key_never_shows() {
        assert_eq!(
            SigningKey::from_base64("not base64!").err(),
            Some(BadSecret)
        );
        assert_eq!(SigningKey::from_base64("").err(), Some(BadSecret));
        let key = SigningKey::from_base64("c2VjcmV0").expect("key");
        assert_eq!(format!("{key:?}"), "[redacted]");
        assert!(!BadSecret.to_string().contains("not base64!"));
    }
}

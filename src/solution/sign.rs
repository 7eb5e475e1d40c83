//! Signing packages (ed25519): the signing key comes from an environment variable (never
//! printed), the signature covers the manifest's bytes, which carry the sha256 of every
//! component file, so it covers the whole package. Which publishers must sign is the
//! project's `spec.trustedPublishers`; `import` decides, this file only signs and verifies.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("environment variable {var} is not set")]
    KeyMissing { var: String },
    #[error(
        "environment variable {var} does not hold an ed25519 signing key (64 hex digits: the 32-byte seed)"
    )]
    KeyInvalid { var: String },
    #[error(
        "the public key for publisher {publisher:?} in spec.trustedPublishers is not 64 hex digits"
    )]
    PublicKeyInvalid { publisher: String },
    #[error(
        "the package of publisher {publisher:?} is not signed, and dualwrite.yaml trusts only signed packages from it (spec.trustedPublishers)"
    )]
    Unsigned { publisher: String },
    #[error(
        "the signature does not match publisher {publisher:?}'s key in spec.trustedPublishers: the package was altered or signed by someone else"
    )]
    BadSignature { publisher: String },
}

/// A signing key read from the environment variable `var`.
pub fn key_from_env(var: &str) -> Result<SigningKey, SignError> {
    let text = std::env::var(var).map_err(|_| SignError::KeyMissing { var: var.into() })?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| SignError::KeyInvalid { var: var.into() })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The public key of a signing key, as `spec.trustedPublishers` takes it.
pub fn public_key_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

/// The signature of `message`, as the package's `solution.sig` holds it.
pub fn sign(key: &SigningKey, message: &[u8]) -> String {
    format!("{}\n", hex::encode(key.sign(message).to_bytes()))
}

/// Checks `signature` (the `solution.sig` text, if any) of `message` against `public_hex`.
pub fn verify(
    publisher: &str,
    public_hex: &str,
    message: &[u8],
    signature: Option<&str>,
) -> Result<(), SignError> {
    let key = hex::decode(public_hex.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| SignError::PublicKeyInvalid {
            publisher: publisher.into(),
        })?;
    let signature = signature.ok_or_else(|| SignError::Unsigned {
        publisher: publisher.into(),
    })?;
    let bad = || SignError::BadSignature {
        publisher: publisher.into(),
    };
    let bytes: [u8; 64] = hex::decode(signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    key.verify(message, &Signature::from_bytes(&bytes))
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_message_and_key() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let sig = sign(&key, b"manifest");
        let public = public_key_hex(&key);
        assert!(verify("p", &public, b"manifest", Some(&sig)).is_ok());
        assert!(verify("p", &public, b"manifest!", Some(&sig)).is_err());
        assert!(verify("p", &public_key_hex(&other), b"manifest", Some(&sig)).is_err());
        assert!(matches!(
            verify("p", &public, b"manifest", None),
            Err(SignError::Unsigned { .. })
        ));
    }
}

//! Keys and the authenticated cipher of encrypted backups.
//!
//! A key is 32 bytes from a key file, or is derived from a passphrase with
//! Argon2id (salt and cost stored in the header). Each frame is sealed with
//! ChaCha20-Poly1305 under the nonce `prefix(4) || frame number(8, BE)` and
//! the header bytes plus the frame kind as associated data, so a modified,
//! reordered, truncated or transplanted frame fails authentication. A key
//! check value in the header tells a wrong key apart from a modified file.
//! This file does no I/O other than reading the key file.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand::RngCore;

use super::format::{Encryption, Kdf};
use super::Error;

/// Argon2id memory cost (KiB) for passphrases: OWASP's recommended 64 MiB
/// makes each guess cost real memory while taking well under a second here.
pub const ARGON2_M_KIB: u32 = 64 * 1024;
/// Argon2id iterations.
pub const ARGON2_T: u32 = 3;
/// Argon2id lanes.
pub const ARGON2_P: u32 = 1;
/// Highest Argon2 memory cost accepted from a header, so a forged header
/// cannot make `verify` allocate without bound.
pub const ARGON2_M_KIB_MAX: u32 = 4 * 1024 * 1024;

/// Associated data of the key check value.
const KEY_CHECK_AAD: &[u8] = b"promraft-backup key check";
/// Frame number used for the key check value; no frame ever gets it.
const KEY_CHECK_FRAME: u64 = u64::MAX;

/// Where the key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// A 32-byte key.
    Raw([u8; 32]),
    /// A passphrase, stretched with Argon2id.
    Passphrase(String),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        match self {
            KeySource::Raw(_) => f.write_str("KeySource::Raw(..)"),
            KeySource::Passphrase(_) => f.write_str("KeySource::Passphrase(..)"),
        }
    }
}

impl KeySource {
    /// Reads a key file: exactly 32 bytes, or 64 hex digits (surrounding
    /// whitespace ignored).
    pub fn from_key_file(path: &Path) -> Result<KeySource, Error> {
        let b = std::fs::read(path).map_err(|e| Error::Key(format!("reading key file {}: {e}", path.display())))?;
        if b.len() == 32 {
            return Ok(KeySource::Raw(b.try_into().expect("32 bytes")));
        }
        let text = std::str::from_utf8(&b).unwrap_or("").trim();
        match decode_hex(text) {
            Some(k) if k.len() == 32 => Ok(KeySource::Raw(k.try_into().expect("32 bytes"))),
            _ => Err(Error::Key(format!(
                "key file {} must hold exactly 32 bytes or 64 hex digits (it has {} bytes)",
                path.display(),
                b.len()
            ))),
        }
    }

    /// Reads a passphrase from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<KeySource, Error> {
        match std::env::var(var) {
            Ok(p) if !p.is_empty() => Ok(KeySource::Passphrase(p)),
            Ok(_) => Err(Error::Key(format!("environment variable {var} is empty"))),
            Err(_) => Err(Error::Key(format!(
                "environment variable {var} is not set (or not UTF-8)"
            ))),
        }
    }
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes hex; `None` if it is not hex.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn argon2(pass: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Result<[u8; 32], Error> {
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| Error::Key(format!("argon2 parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    a.hash_password_into(pass.as_bytes(), salt, &mut key)
        .map_err(|e| Error::Key(format!("argon2: {e}")))?;
    Ok(key)
}

/// The cipher of one backup file.
pub struct Cipher {
    aead: ChaCha20Poly1305,
    prefix: [u8; 4],
}

impl Cipher {
    fn nonce(&self, frame: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.prefix);
        n[4..].copy_from_slice(&frame.to_be_bytes());
        Nonce::from(n)
    }

    fn key_check(&self) -> Result<Vec<u8>, Error> {
        self.aead
            .encrypt(
                &self.nonce(KEY_CHECK_FRAME),
                Payload {
                    msg: b"",
                    aad: KEY_CHECK_AAD,
                },
            )
            .map_err(|_| Error::Key("sealing the key check".into()))
    }

    /// A cipher with a fresh nonce prefix (and salt, for a passphrase), and
    /// the header's description of it.
    pub fn for_writing(key: &KeySource) -> Result<(Cipher, Encryption), Error> {
        let mut rng = rand::rngs::OsRng;
        let mut prefix = [0u8; 4];
        rng.fill_bytes(&mut prefix);
        let (k, kdf) = match key {
            KeySource::Raw(k) => (*k, Kdf::RawKey),
            KeySource::Passphrase(p) => {
                let mut salt = [0u8; 16];
                rng.fill_bytes(&mut salt);
                let k = argon2(p, &salt, ARGON2_M_KIB, ARGON2_T, ARGON2_P)?;
                (
                    k,
                    Kdf::Argon2id {
                        salt: hex(&salt),
                        m_kib: ARGON2_M_KIB,
                        t: ARGON2_T,
                        p: ARGON2_P,
                    },
                )
            }
        };
        let c = Cipher {
            aead: ChaCha20Poly1305::new(&k.into()),
            prefix,
        };
        let enc = Encryption {
            cipher: "chacha20poly1305".into(),
            kdf,
            nonce_prefix: hex(&prefix),
            key_check: hex(&c.key_check()?),
        };
        Ok((c, enc))
    }

    /// The cipher described by a header; [`Error::WrongKey`] when `key` is
    /// not the one the backup was written with.
    pub fn for_reading(key: &KeySource, enc: &Encryption) -> Result<Cipher, Error> {
        if enc.cipher != "chacha20poly1305" {
            return Err(Error::Header(format!("unknown cipher {:?}", enc.cipher)));
        }
        let prefix: [u8; 4] = decode_hex(&enc.nonce_prefix)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| Error::Header("bad nonce prefix".into()))?;
        let k = match (&enc.kdf, key) {
            (Kdf::RawKey, KeySource::Raw(k)) => *k,
            (Kdf::Argon2id { salt, m_kib, t, p }, KeySource::Passphrase(pass)) => {
                if *m_kib > ARGON2_M_KIB_MAX || *t > 100 || *p > 64 {
                    return Err(Error::Header(format!(
                        "argon2 cost m={m_kib} KiB t={t} p={p} is beyond the accepted limits"
                    )));
                }
                let salt = decode_hex(salt).ok_or_else(|| Error::Header("bad argon2 salt".into()))?;
                argon2(pass, &salt, *m_kib, *t, *p)?
            }
            (Kdf::RawKey, KeySource::Passphrase(_)) => {
                return Err(Error::Key(
                    "this backup was encrypted with a key file; give --key-file".into(),
                ))
            }
            (Kdf::Argon2id { .. }, KeySource::Raw(_)) => {
                return Err(Error::Key(
                    "this backup was encrypted with a passphrase; give --passphrase-env".into(),
                ))
            }
        };
        let c = Cipher {
            aead: ChaCha20Poly1305::new(&k.into()),
            prefix,
        };
        let want = decode_hex(&enc.key_check).ok_or_else(|| Error::Header("bad key check".into()))?;
        if c.key_check()? != want {
            return Err(Error::WrongKey);
        }
        Ok(c)
    }

    /// Seals frame number `frame`.
    pub fn seal(&self, frame: u64, kind: u8, header: &[u8], plain: &[u8]) -> Result<Vec<u8>, Error> {
        let mut aad = Vec::with_capacity(header.len() + 1);
        aad.extend_from_slice(header);
        aad.push(kind);
        self.aead
            .encrypt(&self.nonce(frame), Payload { msg: plain, aad: &aad })
            .map_err(|_| Error::Key(format!("sealing frame {frame}")))
    }

    /// Opens frame number `frame`; [`Error::Tampered`] if it does not
    /// authenticate (the key was already checked, so the bytes changed).
    pub fn open(&self, frame: u64, kind: u8, header: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let mut aad = Vec::with_capacity(header.len() + 1);
        aad.extend_from_slice(header);
        aad.push(kind);
        self.aead
            .decrypt(&self.nonce(frame), Payload { msg: sealed, aad: &aad })
            .map_err(|_| Error::Tampered { frame })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_round_trip_and_wrong_passphrase() {
        let k = KeySource::Passphrase("correct horse".into());
        let (c, enc) = Cipher::for_writing(&k).unwrap();
        let sealed = c.seal(0, 1, b"h", b"hello").unwrap();
        let r = Cipher::for_reading(&k, &enc).unwrap();
        assert_eq!(r.open(0, 1, b"h", &sealed).unwrap(), b"hello");
        assert!(matches!(r.open(1, 1, b"h", &sealed), Err(Error::Tampered { frame: 1 })));
        assert!(matches!(r.open(0, 1, b"H", &sealed), Err(Error::Tampered { .. })));
        assert!(matches!(
            Cipher::for_reading(&KeySource::Passphrase("wrong".into()), &enc),
            Err(Error::WrongKey)
        ));
    }

    #[test]
    fn key_file_formats() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, [1u8; 32]).unwrap();
        assert!(matches!(KeySource::from_key_file(&p), Ok(KeySource::Raw(k)) if k == [1u8; 32]));
        std::fs::write(&p, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(matches!(KeySource::from_key_file(&p), Ok(KeySource::Raw(k)) if k == [0xab; 32]));
        std::fs::write(&p, "short").unwrap();
        assert!(KeySource::from_key_file(&p).is_err());
    }
}

//! Keys and the authenticated cipher of encrypted backups.
//!
//! A key is 32 bytes from a key file, or is derived from a passphrase with
//! Argon2id (salt and cost stored in the header). A key file that group or
//! others may read is refused: the key decrypts every backup made with it.
//!
//! Backups of format version 2 seal each frame with XChaCha20-Poly1305
//! under the 24-byte nonce `nonce_prefix(16 random bytes) || frame
//! number(8, BE)`; format version 1 used ChaCha20-Poly1305 with a 4-byte
//! random prefix, and is still read (never written).
//!
//! Why XChaCha20-Poly1305 with a 16-byte random prefix: one key (a key file)
//! seals every backup an operator ever makes, so what must never repeat is
//! the (key, nonce) pair across all of them. Inside one file the frame
//! number makes nonces distinct; across files only the random prefix does.
//! With 4 random bytes two of n backups share a prefix with probability
//! about 1 - exp(-n^2 / 2^33): 7.6 % at n = 26,000, and a shared prefix
//! reuses the keystream of every frame number the two files have in
//! common. With 16 random bytes (128 bits) the bound is n^2 / 2^129: below
//! 2^-65 after 2^32 backups with one key, far below any other risk. The
//! alternative, a per-backup subkey from HKDF over a random salt, gives the
//! same bound with a 12-byte nonce but needs two more crates; XChaCha20 is
//! in the `chacha20poly1305` crate promraft already uses, and its nonce is
//! long enough to be drawn at random.
//!
//! The header bytes plus the frame kind are the associated data, so a
//! modified, reordered, truncated or transplanted frame fails
//! authentication. A key check value in the header tells a wrong key apart
//! from a modified file. This file does no I/O other than reading the key
//! file.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
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

/// Cipher name in the header of format version 2 (the one written).
pub const CIPHER_XCHACHA: &str = "xchacha20poly1305";
/// Cipher name in the header of format version 1 (read only).
pub const CIPHER_CHACHA_V1: &str = "chacha20poly1305";
/// Random bytes of the nonce per backup (format version 2): 128 bits, so
/// that n backups under one key collide with probability about
/// n^2 / 2^129 (see the module doc).
pub const NONCE_PREFIX_BYTES: usize = 16;
/// Random bytes of the nonce per backup in format version 1.
pub const NONCE_PREFIX_BYTES_V1: usize = 4;
/// Permission bits a key file must not have: any access by group or others.
pub const KEY_FILE_MODE_FORBIDDEN: u32 = 0o077;

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
    /// A key file that group or others may access (mode & 0o077) is refused
    /// before it is read, with the fix in the message.
    pub fn from_key_file(path: &Path) -> Result<KeySource, Error> {
        check_key_file_mode(path)?;
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

/// Refuses a key file whose mode lets group or others access it.
#[cfg(unix)]
fn check_key_file_mode(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::Key(format!("reading key file {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & KEY_FILE_MODE_FORBIDDEN != 0 {
        return Err(Error::Key(format!(
            "key file {} has mode {mode:04o}: group or others may read it, and it decrypts every backup made with it; \
             make it private with `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Elsewhere there are no Unix permission bits to check.
#[cfg(not(unix))]
fn check_key_file_mode(_path: &Path) -> Result<(), Error> {
    Ok(())
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

/// The AEAD of one backup file, by format version.
enum Aead2 {
    /// Format version 2: XChaCha20-Poly1305, 16-byte random prefix.
    X(XChaCha20Poly1305, [u8; NONCE_PREFIX_BYTES]),
    /// Format version 1: ChaCha20-Poly1305, 4-byte random prefix (read only).
    V1(ChaCha20Poly1305, [u8; NONCE_PREFIX_BYTES_V1]),
}

/// The cipher of one backup file.
pub struct Cipher {
    aead: Aead2,
}

/// The nonce of frame `frame`: the file's random prefix, then the frame
/// number big-endian.
fn nonce<const N: usize, const P: usize>(prefix: &[u8; P], frame: u64) -> [u8; N] {
    const { assert!(P + 8 == N) };
    let mut n = [0u8; N];
    n[..P].copy_from_slice(prefix);
    n[P..].copy_from_slice(&frame.to_be_bytes());
    n
}

impl Cipher {
    fn encrypt(&self, frame: u64, p: Payload<'_, '_>) -> Result<Vec<u8>, chacha20poly1305::aead::Error> {
        match &self.aead {
            Aead2::X(a, prefix) => a.encrypt(&nonce::<24, 16>(prefix, frame).into(), p),
            Aead2::V1(a, prefix) => a.encrypt(&nonce::<12, 4>(prefix, frame).into(), p),
        }
    }

    fn decrypt(&self, frame: u64, p: Payload<'_, '_>) -> Result<Vec<u8>, chacha20poly1305::aead::Error> {
        match &self.aead {
            Aead2::X(a, prefix) => a.decrypt(&nonce::<24, 16>(prefix, frame).into(), p),
            Aead2::V1(a, prefix) => a.decrypt(&nonce::<12, 4>(prefix, frame).into(), p),
        }
    }

    fn key_check(&self) -> Result<Vec<u8>, Error> {
        self.encrypt(
            KEY_CHECK_FRAME,
            Payload {
                msg: b"",
                aad: KEY_CHECK_AAD,
            },
        )
        .map_err(|_| Error::Key("sealing the key check".into()))
    }

    /// A cipher with a fresh 16-byte nonce prefix (and salt, for a
    /// passphrase), and the header's description of it: always format
    /// version 2 (XChaCha20-Poly1305).
    pub fn for_writing(key: &KeySource) -> Result<(Cipher, Encryption), Error> {
        let mut rng = rand::rngs::OsRng;
        let mut prefix = [0u8; NONCE_PREFIX_BYTES];
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
            aead: Aead2::X(XChaCha20Poly1305::new(&k.into()), prefix),
        };
        let enc = Encryption {
            cipher: CIPHER_XCHACHA.into(),
            kdf,
            nonce_prefix: hex(&prefix),
            key_check: hex(&c.key_check()?),
        };
        Ok((c, enc))
    }

    /// The cipher described by the header of a file of format `version`;
    /// [`Error::WrongKey`] when `key` is not the one the backup was written
    /// with. Version 1 files use ChaCha20-Poly1305 with a 4-byte prefix,
    /// version 2 files XChaCha20-Poly1305 with a 16-byte prefix; any other
    /// pairing is refused.
    pub fn for_reading(key: &KeySource, enc: &Encryption, version: u32) -> Result<Cipher, Error> {
        let want_cipher = if version == 1 { CIPHER_CHACHA_V1 } else { CIPHER_XCHACHA };
        if enc.cipher != want_cipher {
            return Err(Error::Header(format!(
                "cipher {:?} in a backup of format version {version} (expected {want_cipher:?})",
                enc.cipher
            )));
        }
        let prefix = decode_hex(&enc.nonce_prefix).ok_or_else(|| Error::Header("nonce prefix is not hex".into()))?;
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
        let bad_prefix = |want: usize| {
            Error::Header(format!(
                "nonce prefix has {} bytes, format version {version} needs {want}",
                prefix.len()
            ))
        };
        let aead = if version == 1 {
            let p: [u8; NONCE_PREFIX_BYTES_V1] = prefix
                .as_slice()
                .try_into()
                .map_err(|_| bad_prefix(NONCE_PREFIX_BYTES_V1))?;
            Aead2::V1(ChaCha20Poly1305::new(&k.into()), p)
        } else {
            let p: [u8; NONCE_PREFIX_BYTES] = prefix
                .as_slice()
                .try_into()
                .map_err(|_| bad_prefix(NONCE_PREFIX_BYTES))?;
            Aead2::X(XChaCha20Poly1305::new(&k.into()), p)
        };
        let c = Cipher { aead };
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
        self.encrypt(frame, Payload { msg: plain, aad: &aad })
            .map_err(|_| Error::Key(format!("sealing frame {frame}")))
    }

    /// Opens frame number `frame`; [`Error::Tampered`] if it does not
    /// authenticate (the key was already checked, so the bytes changed).
    pub fn open(&self, frame: u64, kind: u8, header: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let mut aad = Vec::with_capacity(header.len() + 1);
        aad.extend_from_slice(header);
        aad.push(kind);
        self.decrypt(frame, Payload { msg: sealed, aad: &aad })
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
        assert_eq!(enc.cipher, CIPHER_XCHACHA);
        assert_eq!(decode_hex(&enc.nonce_prefix).unwrap().len(), NONCE_PREFIX_BYTES);
        let r = Cipher::for_reading(&k, &enc, 2).unwrap();
        assert_eq!(r.open(0, 1, b"h", &sealed).unwrap(), b"hello");
        assert!(matches!(r.open(1, 1, b"h", &sealed), Err(Error::Tampered { frame: 1 })));
        assert!(matches!(r.open(0, 1, b"H", &sealed), Err(Error::Tampered { .. })));
        assert!(matches!(
            Cipher::for_reading(&KeySource::Passphrase("wrong".into()), &enc, 2),
            Err(Error::WrongKey)
        ));
    }

    #[test]
    fn key_file_formats() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, [1u8; 32]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(KeySource::from_key_file(&p), Ok(KeySource::Raw(k)) if k == [1u8; 32]));
        std::fs::write(&p, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(matches!(KeySource::from_key_file(&p), Ok(KeySource::Raw(k)) if k == [0xab; 32]));
        std::fs::write(&p, "short").unwrap();
        assert!(KeySource::from_key_file(&p).is_err());
    }

    #[test]
    fn key_file_readable_by_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, "ab".repeat(32)).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o601] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = KeySource::from_key_file(&p).unwrap_err().to_string();
            assert!(
                err.contains(&p.display().to_string())
                    && err.contains(&format!("{mode:04o}"))
                    && err.contains("chmod 600"),
                "mode {mode:o}: {err}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(KeySource::from_key_file(&p).is_ok(), "mode {mode:o} must be accepted");
        }
    }

    #[test]
    fn prefixes_of_different_backups_differ_and_ciphers_bind_to_the_version() {
        let k = KeySource::Raw([9u8; 32]);
        let (_, a) = Cipher::for_writing(&k).unwrap();
        let (_, b) = Cipher::for_writing(&k).unwrap();
        assert_ne!(a.nonce_prefix, b.nonce_prefix);
        // A version 2 description read as version 1 (or the reverse) is refused.
        assert!(matches!(Cipher::for_reading(&k, &a, 1), Err(Error::Header(_))));
        let mut v1 = a.clone();
        v1.cipher = CIPHER_CHACHA_V1.into();
        assert!(matches!(Cipher::for_reading(&k, &v1, 2), Err(Error::Header(_))));
        // A version 1 description with a 16-byte prefix is refused by length.
        assert!(matches!(Cipher::for_reading(&k, &v1, 1), Err(Error::Header(m)) if m.contains("needs 4")));
    }
}

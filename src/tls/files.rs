//! Reading certificates and keys from PEM files, and noticing that they changed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Every certificate of a PEM file, in order (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::NoCertificate {
            path: path.to_owned(),
            detail: format!(": {error}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
            detail: String::new(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| TlsError::NoKey {
        path: path.to_owned(),
        detail: format!(": {error}"),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// What a set of files looked like: modification time and length of each (`None` for a file
/// that could not be examined). Two stamps differ when a file was replaced or rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stamps(Vec<(PathBuf, Option<(SystemTime, u64)>)>);

impl Stamps {
    /// The stamps of `paths` now.
    pub fn of<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Self {
        Self(
            paths
                .into_iter()
                .map(|path| {
                    let stamp = std::fs::metadata(path)
                        .ok()
                        .and_then(|meta| Some((meta.modified().ok()?, meta.len())));
                    (path.clone(), stamp)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_pem_blocks_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = load_certs(&path).unwrap_err().to_string();
        assert!(
            error.contains("empty.pem holds no PEM certificate"),
            "{error}"
        );
        let error = load_key(&path).unwrap_err().to_string();
        assert!(
            error.contains("empty.pem holds no PEM private key"),
            "{error}"
        );
        let error = load_key(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("cannot read"), "{error}");
    }

    #[test]
    fn a_rewritten_file_changes_the_stamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "one").unwrap();
        let before = Stamps::of([&path]);
        assert_eq!(before, Stamps::of([&path]));
        std::fs::write(&path, "a longer one").unwrap();
        assert_ne!(before, Stamps::of([&path]));
    }
}

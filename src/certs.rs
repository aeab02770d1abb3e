//! `tern certs`: a development CA and the certificates it signs, so TLS can be turned on with
//! one command. The CA (`ca.crt`, `ca.key`) is made once per directory and reused: running the
//! command again adds node certificates signed by the same CA. Each node certificate serves
//! both as the client and media ports' certificate and as the node's mesh certificate (it is
//! valid for servers and clients), and names the hosts and addresses given (plus `localhost`
//! and 127.0.0.1). `ca.crt` is also the trust file phones and tools are given.
//!
//! Real deployments use certificates from a public CA on the client and media ports and a
//! CA of their own for the mesh (docs/operations.md, "TLS").

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The common name of the development CA (also how a stored CA is recognised as ours).
const CA_NAME: &str = "tern development CA";

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// rcgen refused the parameters or a stored key.
    #[error("{what}: {source}")]
    Generate {
        /// What was being made.
        what: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// A node name that cannot be a file name.
    #[error("node name {0:?}: use 1-64 letters, digits, '-', '_' or '.' (not starting with '.')")]
    BadName(String),
}

/// What to make: the directory, the node certificates and their validity.
#[derive(Debug, Clone)]
pub struct CertsRequest {
    /// Where the files go (created if missing).
    pub dir: PathBuf,
    /// One certificate per node name (`<name>.crt`, `<name>.key`).
    pub nodes: Vec<String>,
    /// Host names and IP addresses every node certificate names besides the defaults.
    pub hosts: Vec<String>,
    /// Validity of new certificates, from the start of their validity.
    pub valid_for: Duration,
    /// How long before now their validity starts (slack for clocks behind; a certificate
    /// that has already expired has a `valid_for` shorter than this).
    pub backdate: Duration,
}

/// The files made or reused.
#[derive(Debug, Clone)]
pub struct CertsMade {
    /// The CA certificate: the trust file for phones, tools and `tls.ca_file`.
    pub ca_cert: PathBuf,
    /// True when the CA was made now (false: the directory had one).
    pub ca_created: bool,
    /// Per node: certificate and key.
    pub nodes: Vec<(String, PathBuf, PathBuf)>,
}

/// Makes (or reuses) the CA in `request.dir` and a certificate per node.
pub fn make(request: &CertsRequest) -> Result<CertsMade, CertsError> {
    for name in &request.nodes {
        if !valid_name(name) {
            return Err(CertsError::BadName(name.clone()));
        }
    }
    std::fs::create_dir_all(&request.dir).map_err(|source| CertsError::Io {
        path: request.dir.clone(),
        source,
    })?;
    let ca_cert = request.dir.join("ca.crt");
    let ca_key_path = request.dir.join("ca.key");
    let (ca_key, ca_created) = if ca_key_path.exists() && ca_cert.exists() {
        let pem = read(&ca_key_path)?;
        let key = KeyPair::from_pem(&pem).map_err(|source| CertsError::Generate {
            what: format!("the CA key in {}", ca_key_path.display()),
            source,
        })?;
        (key, false)
    } else {
        let key = generate_key("the CA key")?;
        let cert =
            ca_params(request)?
                .self_signed(&key)
                .map_err(|source| CertsError::Generate {
                    what: "the CA certificate".to_owned(),
                    source,
                })?;
        write(&ca_key_path, &key.serialize_pem(), true)?;
        write(&ca_cert, &cert.pem(), false)?;
        (key, true)
    };
    let issuer = Issuer::new(ca_params(request)?, ca_key);
    let mut nodes = Vec::new();
    for name in &request.nodes {
        let key = generate_key("a node key")?;
        let cert = node_params(name, request)?
            .signed_by(&key, &issuer)
            .map_err(|source| CertsError::Generate {
                what: format!("the certificate of {name}"),
                source,
            })?;
        let cert_path = request.dir.join(format!("{name}.crt"));
        let key_path = request.dir.join(format!("{name}.key"));
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
        nodes.push((name.clone(), cert_path, key_path));
    }
    Ok(CertsMade {
        ca_cert,
        ca_created,
        nodes,
    })
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn generate_key(what: &str) -> Result<KeyPair, CertsError> {
    KeyPair::generate().map_err(|source| CertsError::Generate {
        what: what.to_owned(),
        source,
    })
}

/// The CA's parameters: the same every time, so a stored CA key signs as the stored CA.
fn ca_params(request: &CertsRequest) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(Vec::new()).map_err(|source| CertsError::Generate {
        what: "the CA parameters".to_owned(),
        source,
    })?;
    params.distinguished_name = name(CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // The CA outlives the node certificates it signs: ten times their validity.
    validity(&mut params, request.valid_for * 10, request.backdate);
    Ok(params)
}

fn node_params(node: &str, request: &CertsRequest) -> Result<CertificateParams, CertsError> {
    let mut hosts = vec![
        node.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    for host in &request.hosts {
        if !hosts.contains(host) {
            hosts.push(host.clone());
        }
    }
    let mut params = CertificateParams::new(hosts).map_err(|source| CertsError::Generate {
        what: format!("the names of {node}"),
        source,
    })?;
    params.distinguished_name = name(node);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, request.valid_for, request.backdate);
    Ok(params)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn validity(params: &mut CertificateParams, valid_for: Duration, backdate: Duration) {
    let start = SystemTime::now() - backdate;
    params.not_before = start.into();
    params.not_after = (start + valid_for.max(Duration::from_secs(1))).into();
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes a file; a private key is readable by its owner only.
fn write(path: &Path, text: &str, private: bool) -> Result<(), CertsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    let io = |source| CertsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{load_certs, load_key};

    fn request(dir: &Path, nodes: &[&str]) -> CertsRequest {
        CertsRequest {
            dir: dir.to_owned(),
            nodes: nodes.iter().map(|node| (*node).to_owned()).collect(),
            hosts: vec!["10.0.0.1".into(), "chat.example".into()],
            valid_for: Duration::from_secs(86_400),
            backdate: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_second_run_reuses_the_ca_and_its_certificates_chain_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = make(&request(dir.path(), &["tern-1"])).unwrap();
        assert!(first.ca_created);
        let ca_before = std::fs::read(&first.ca_cert).unwrap();
        let second = make(&request(dir.path(), &["tern-2"])).unwrap();
        assert!(!second.ca_created);
        assert_eq!(std::fs::read(&second.ca_cert).unwrap(), ca_before);
        // Both node certificates verify against the one CA: a mesh configuration of each
        // loads, and rustls accepts the pair as client and server identities.
        for (_, cert, key) in first.nodes.iter().chain(&second.nodes) {
            assert_eq!(load_certs(cert).unwrap().len(), 1);
            load_key(key).unwrap();
            crate::tls::mesh_configs(&first.ca_cert, cert, key).unwrap();
        }
        let mode = std::fs::metadata(&second.nodes[0].2).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn node_names_become_file_names_only_when_safe() {
        let dir = tempfile::tempdir().unwrap();
        let error = make(&request(dir.path(), &["../escape"])).unwrap_err();
        assert!(matches!(error, CertsError::BadName(_)), "{error}");
    }
}

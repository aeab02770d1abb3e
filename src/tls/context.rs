//! Every TLS configuration of a node behind a swappable pointer: a connection takes the one
//! current at its accept or dial, and [`TlsContext::reload`] builds them all anew from the
//! files and swaps them in together, or changes nothing when any file is bad.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::{ClientConfig, ServerConfig};

use super::files::Stamps;
use super::mesh::MeshConfigs;
use super::{RELOADS, TlsError, phone_config};
use crate::config::TlsConfig;

/// The configurations a node's listeners use, as loaded from `[tls]`.
#[derive(Debug, Default)]
struct Loaded {
    client: Option<Arc<ServerConfig>>,
    media: Option<Arc<ServerConfig>>,
    mesh: Option<MeshConfigs>,
}

/// A node's TLS: which listeners encrypt, and their current configurations.
#[derive(Debug)]
pub struct TlsContext {
    config: TlsConfig,
    loaded: RwLock<Loaded>,
    stamps: Mutex<Stamps>,
}

impl TlsContext {
    /// Loads the files `config` names for the listeners that encrypt.
    pub fn load(config: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let stamps = Stamps::of(files(config));
        let loaded = build(config)?;
        Ok(Arc::new(Self {
            config: config.clone(),
            loaded: RwLock::new(loaded),
            stamps: Mutex::new(stamps),
        }))
    }

    /// A context where every listener speaks plain text.
    pub fn plain() -> Arc<Self> {
        Arc::new(Self {
            config: TlsConfig::default(),
            loaded: RwLock::new(Loaded::default()),
            stamps: Mutex::new(Stamps::default()),
        })
    }

    /// The configuration of the client port, when it speaks TLS.
    pub fn client(&self) -> Option<Arc<ServerConfig>> {
        self.read().client.clone()
    }

    /// The configuration of the media port, when it speaks TLS.
    pub fn media(&self) -> Option<Arc<ServerConfig>> {
        self.read().media.clone()
    }

    /// The acceptor's and dialer's configurations for `listener` ("mesh" or "wan"), when it
    /// speaks TLS.
    pub fn mesh(&self, listener: &str) -> Option<(Arc<ServerConfig>, Arc<ClientConfig>)> {
        if !self.config.encrypts(listener) {
            return None;
        }
        let loaded = self.read();
        let mesh = loaded.mesh.as_ref()?;
        Some((mesh.server.clone(), mesh.client.clone()))
    }

    /// True when `listener` speaks TLS.
    pub fn encrypts(&self, listener: &str) -> bool {
        self.config.encrypts(listener)
    }

    /// True when a file changed since the last load (or reload).
    pub fn files_changed(&self) -> bool {
        let now = Stamps::of(files(&self.config));
        *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) != now
    }

    /// True when there is anything to reload.
    pub fn has_files(&self) -> bool {
        files(&self.config).next().is_some()
    }

    /// Seconds between checks for changed files (0: only on SIGHUP).
    pub fn check_secs(&self) -> u64 {
        self.config.reload_check_secs
    }

    /// Loads every file again and swaps the new configurations in; on an error nothing
    /// changes (the node goes on with what it had). Counted in `tern_tls_reloads_total`.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = Stamps::of(files(&self.config));
        // Whatever the outcome, these stamps were tried: a bad file is not retried until it
        // changes again (or SIGHUP asks).
        *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        match build(&self.config) {
            Ok(loaded) => {
                *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = loaded;
                metrics::counter!(RELOADS, "outcome" => "ok").increment(1);
                Ok(())
            }
            Err(error) => {
                metrics::counter!(RELOADS, "outcome" => "failed").increment(1);
                Err(error)
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The files the configurations are built from.
fn files(config: &TlsConfig) -> impl Iterator<Item = &PathBuf> {
    let (mesh_cert, mesh_key) = config.mesh_identity();
    [
        config.cert_file.as_ref(),
        config.key_file.as_ref(),
        config.ca_file.as_ref(),
        mesh_cert,
        mesh_key,
    ]
    .into_iter()
    .flatten()
}

fn build(config: &TlsConfig) -> Result<Loaded, TlsError> {
    let mut loaded = Loaded::default();
    let wants = |listener| config.encrypts(listener);
    if wants("client") || wants("media") {
        let cert = config
            .cert_file
            .as_deref()
            .ok_or(TlsError::Missing("tls.cert_file"))?;
        let key = config
            .key_file
            .as_deref()
            .ok_or(TlsError::Missing("tls.key_file"))?;
        if wants("client") {
            loaded.client = Some(Arc::new(phone_config(cert, key, &[])?));
        }
        if wants("media") {
            loaded.media = Some(Arc::new(phone_config(cert, key, &[b"http/1.1"])?));
        }
    }
    if wants("mesh") || wants("wan") {
        let ca = config
            .ca_file
            .as_deref()
            .ok_or(TlsError::Missing("tls.ca_file"))?;
        let (cert, key) = config.mesh_identity();
        let cert = cert.ok_or(TlsError::Missing("tls.mesh_cert_file"))?;
        let key = key.ok_or(TlsError::Missing("tls.mesh_key_file"))?;
        loaded.mesh = Some(MeshConfigs::load(ca, cert, key)?);
    }
    Ok(loaded)
}

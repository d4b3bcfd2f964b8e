//! What the in-process workloads (memory, snapshot, micro) share.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use certgate::config::RegistrationAuth;
use certgate::identity::{CertSource, ClientCertificate};
use certgate::registry::Registry;
use certgate::Config;

use crate::body::registration_body;
use crate::Error;

/// The registration inputs the in-process workloads use: the config (memory-only unless
/// `data_dir` is given), and client1's certificate as the TLS listener would see it.
pub fn registry_inputs(
    path: &Path,
    data_dir: Option<&Path>,
) -> Result<(Config, Arc<ClientCertificate>), Error> {
    let mut config = Config::load(path)?;
    config.registration.authentication = vec![RegistrationAuth::MutualTls];
    config.store.data_dir = data_dir.map(Path::to_path_buf).unwrap_or_default();
    let tls = certgate::tls::Tls::load(&config.tls)?;
    let der = CertificateDer::from_pem_file("certs/client1.pem")?;
    let cert = ClientCertificate::from_chain(
        &[der],
        tls.current().chain_verifier.as_ref(),
        CertSource::Tls,
    )?;
    Ok((config, cert))
}

/// Registers `n` clients; returns the seconds it took and the stored metadata's JSON size.
pub fn register_many(
    registry: &Registry,
    cert: &ClientCertificate,
    n: usize,
) -> Result<(f64, usize), Error> {
    let template = registration_body();
    let mut metadata_json = 0;
    let started = Instant::now();
    for i in 0..n {
        let resp = registry
            .register(template.clone(), Some(cert))
            .map_err(|e| format!("registration {i} failed: {e:?}"))?;
        if i == 0 {
            metadata_json = resp.metadata.json.len();
        }
        if i > 0 && i % 250_000 == 0 {
            eprintln!("  {i} clients registered");
        }
    }
    Ok((started.elapsed().as_secs_f64(), metadata_json))
}

/// `perf record` of this process around one phase (flat profile).
pub struct SelfProfile(Option<Child>);

impl SelfProfile {
    pub fn start(prefix: Option<&Path>, phase: &str) -> Self {
        let Some(prefix) = prefix else {
            return Self(None);
        };
        let mut out = prefix.as_os_str().to_owned();
        out.push(format!(".{phase}.perf"));
        let child = Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                "999",
                "-p",
                &std::process::id().to_string(),
            ])
            .arg("-o")
            .arg(out)
            .stdout(Stdio::null())
            .spawn()
            .ok();
        // perf needs a moment to attach.
        std::thread::sleep(Duration::from_millis(300));
        Self(child)
    }

    pub fn stop(self) {
        if let Some(mut child) = self.0 {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

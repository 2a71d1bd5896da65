//! Starts the real `policy-server` binary and talks to it over HTTPS.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

/// How long a server may take to start (policies are compiled at start-up).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A certificate authority and a server certificate for localhost, made for one test.
pub struct TestCerts {
    pub ca_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCerts {
    pub fn generate(dir: &Path) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "policy-server test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let cert_file = dir.join("tls.crt");
        let key_file = dir.join("tls.key");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Self {
            ca_pem: ca.pem(),
            cert_file,
            key_file,
        }
    }
}

/// Configures a server: its policies.yml and extra flags.
pub struct ServerBuilder {
    binary: PathBuf,
    policies_yml: String,
    args: Vec<String>,
    tls: bool,
    text_log: bool,
    kubeconfig: Option<String>,
}

impl ServerBuilder {
    /// `binary` is the server to run: `env!("CARGO_BIN_EXE_policy-server")` in a test.
    pub fn new(binary: impl Into<PathBuf>, policies_yml: impl Into<String>) -> Self {
        Self {
            binary: binary.into(),
            policies_yml: policies_yml.into(),
            args: Vec::new(),
            tls: true,
            text_log: false,
            kubeconfig: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Reads the cluster through this kubeconfig (written next to policies.yml).
    pub fn kubeconfig(mut self, kubeconfig: String) -> Self {
        self.kubeconfig = Some(kubeconfig);
        self
    }

    pub fn plain_http(mut self) -> Self {
        self.tls = false;
        self
    }

    /// Logs in the text format (as a person reads it) instead of JSON; `wait_for_log`
    /// then finds nothing, `log()` has the lines.
    pub fn text_log(mut self) -> Self {
        self.text_log = true;
        self
    }

    /// Starts the server and waits until it listens.
    pub fn start(self) -> Server {
        let (mut launched, address_rx, dir, certs) = self.launch();
        let address = launched.wait_for_address(address_rx);
        let mut client = crate::http_client().timeout(Duration::from_secs(60));
        let scheme = match &certs {
            Some(certs) => {
                let ca = reqwest::Certificate::from_pem(certs.ca_pem.as_bytes()).unwrap();
                client = client.tls_certs_only([ca]);
                "https"
            }
            None => "http",
        };
        Server {
            base_url: format!("{scheme}://localhost:{}", address.port()),
            client: client.build().unwrap(),
            launched,
            certs,
            dir,
        }
    }

    /// Runs the server expecting it to refuse to start; returns its status and output.
    pub fn start_expecting_failure(self) -> (ExitStatus, String) {
        let (mut launched, _, _dir, _) = self.launch();
        let status = launched.child.wait().unwrap();
        launched.reader.take().map(|r| r.join());
        let output = launched.output.lock().unwrap().join("\n");
        (status, output)
    }

    fn launch(
        self,
    ) -> (
        Launched,
        mpsc::Receiver<SocketAddr>,
        tempfile::TempDir,
        Option<TestCerts>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies.yml");
        std::fs::write(&policies, &self.policies_yml).unwrap();
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .args(["--addr", "127.0.0.1", "--port", "0", "--log-fmt"])
            .arg(if self.text_log { "text" } else { "json" })
            .arg("--policies")
            .arg(&policies)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(kubeconfig) = &self.kubeconfig {
            let path = dir.path().join("kubeconfig");
            std::fs::write(&path, kubeconfig).unwrap();
            command.arg("--kubeconfig").arg(path);
        }
        let certs = self.tls.then(|| TestCerts::generate(dir.path()));
        if let Some(certs) = &certs {
            command.arg("--cert-file").arg(&certs.cert_file);
            command.arg("--key-file").arg(&certs.key_file);
        }
        let mut child = command.spawn().expect("starting policy-server");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        // stdout carries the JSON log; stderr the final error of a failed start.
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn({
            let output = output.clone();
            move || {
                let err_output = output.clone();
                let err_reader = std::thread::spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        err_output.lock().unwrap().push(line);
                    }
                });
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(address) = listening_address(&line) {
                        let _ = address_tx.send(address);
                    }
                    output.lock().unwrap().push(line);
                }
                let _ = err_reader.join();
            }
        });
        (
            Launched {
                child,
                output,
                reader: Some(reader),
            },
            address_rx,
            dir,
            certs,
        )
    }
}

/// The address in the server's "listening" line, in either log format.
fn listening_address(line: &str) -> Option<SocketAddr> {
    if let Ok(event) = serde_json::from_str::<Value>(line) {
        return (event["message"] == "listening")
            .then(|| event["address"].as_str()?.parse().ok())
            .flatten();
    }
    if !line.contains("listening") {
        return None;
    }
    let address = line.split_once("address=")?.1;
    address.split_whitespace().next()?.parse().ok()
}

struct Launched {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Launched {
    fn wait_for_address(&mut self, address_rx: mpsc::Receiver<SocketAddr>) -> SocketAddr {
        match address_rx.recv_timeout(START_TIMEOUT) {
            Ok(address) => address,
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "policy-server did not start:\n{}",
                    self.output.lock().unwrap().join("\n")
                );
            }
        }
    }
}

/// A running server; killed when dropped.
pub struct Server {
    pub base_url: String,
    pub client: reqwest::Client,
    launched: Launched,
    certs: Option<TestCerts>,
    dir: tempfile::TempDir,
}

impl Server {
    /// The certificate and key files the server was started with (TLS only).
    pub fn certs(&self) -> Option<&TestCerts> {
        self.certs.as_ref()
    }

    /// Replaces the server's policies.yml as a ConfigMap update does: the new file is
    /// written beside it and renamed over it, so the server never reads half a file.
    pub fn rewrite_policies(&self, policies_yml: &str) {
        let path = self.dir.path().join("policies.yml");
        let next = self.dir.path().join(".policies.yml.next");
        std::fs::write(&next, policies_yml).unwrap();
        std::fs::rename(&next, &path).unwrap();
    }

    /// Sends SIGHUP: reload policies.yml.
    pub fn signal_hangup(&self) {
        let pid = self.launched.child.id().to_string();
        Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// POSTs JSON and returns the HTTP status and the JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_bytes(path, serde_json::to_vec(body).unwrap())
            .await
    }

    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "POST {path}: answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, json)
    }

    /// POSTs an AdmissionReview to `/validate/{policy}` and returns `response`.
    pub async fn validate(&self, policy: &str, review: &Value) -> Value {
        let (status, body) = self.post_json(&format!("/validate/{policy}"), review).await;
        assert_eq!(status, 200, "validate {policy}: {body}");
        assert_eq!(body["kind"], "AdmissionReview", "{body}");
        assert_eq!(body["response"]["uid"], review["request"]["uid"], "{body}");
        body["response"].clone()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Waits until `/readiness` answers 200, polling every 5 ms; panics with the log if it
    /// does not within `within`.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.get("/readiness").await.0 != 200 {
            if tokio::time::Instant::now() > deadline {
                panic!("not ready after {within:?}; the log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (up to 10 s) for a log event that satisfies `matches`, and returns it.
    pub async fn wait_for_log(&self, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_log_within(Duration::from_secs(10), matches)
            .await
    }

    /// Waits up to `limit` for a log event that satisfies `matches`, and returns it.
    pub async fn wait_for_log_within(
        &self,
        limit: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let found = self
                .launched
                .output
                .lock()
                .unwrap()
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|event| matches(event));
            if let Some(event) = found {
                return event;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("no such log event; the log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's log so far, one JSON event per line.
    pub fn log(&self) -> String {
        self.launched.output.lock().unwrap().join("\n")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.launched.child.id()
    }

    /// The server's URL for `path` by IP address, for clients that do not resolve
    /// `localhost` to the address it listens on.
    pub fn ip_url(&self, path: &str) -> String {
        self.url(path).replacen("://localhost:", "://127.0.0.1:", 1)
    }

    /// The server's resident memory, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib << 10
    }

    /// The loopback address the server listens on.
    pub fn address(&self) -> SocketAddr {
        let port = self.base_url.rsplit(':').next().unwrap().parse().unwrap();
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_terminate(&self) {
        let pid = self.launched.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.launched.child.wait().unwrap()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.launched.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.launched.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.launched.child.kill();
        let _ = self.launched.child.wait();
    }
}

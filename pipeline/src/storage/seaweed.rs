//! A real S3 store for tests: SeaweedFS `weed mini` started on free ports with SigV4
//! credentials enforced, and stopped with its whole process group when dropped. Built only
//! with the `test-support` feature; the storage, registry and prepare tests all use it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::StorageOptions;

/// The credentials every test store enforces (set in this process's environment too, where
/// the AWS SDK and child processes read them).
pub const ACCESS_KEY_ID: &str = "facepipe-test-key";
pub const SECRET_ACCESS_KEY: &str = "facepipe-test-secret-0123456789";
pub const REGION: &str = "us-east-1";

/// A running `weed mini` serving one bucket.
pub struct SeaweedFs {
    child: Child,
    s3_port: u16,
    bucket: String,
    _dir: tempfile::TempDir,
}

impl SeaweedFs {
    /// Whether `weed` is on PATH (`. scripts/env.sh`; `scripts/setup.sh` installs it).
    pub fn available() -> bool {
        Command::new("weed")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// Start `weed mini` with `bucket` and wait (up to 90 s) until the bucket answers S3
    /// requests. Blocking; callable from inside an async runtime.
    pub fn start(bucket: &str) -> std::io::Result<SeaweedFs> {
        use std::os::unix::process::CommandExt;
        set_credentials();
        let dir = tempfile::tempdir()?;
        let s3_port = free_port()?;
        let mut cmd = Command::new("weed");
        cmd.arg("mini")
            .arg(format!("-dir={}", dir.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false"])
            .arg(format!("-bucket={bucket}"))
            .arg(format!("-s3.port={s3_port}"));
        // Every other listener on a free port too, so tests running in parallel (and any
        // other weed on the machine) never collide.
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "debug.port",
            "s3.debug.port",
            "metricsPort",
            "s3.metricsPort",
            "s3.port.iceberg",
            "s3.port.lance",
        ] {
            cmd.arg(format!("-{flag}={}", free_port()?));
        }
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let store = SeaweedFs {
            child: cmd.spawn()?,
            s3_port,
            bucket: bucket.to_string(),
            _dir: dir,
        };
        store.wait_for_bucket(Duration::from_secs(90))?;
        Ok(store)
    }

    /// The S3 port opens before the bucket exists: poll the bucket itself, from a thread
    /// with its own runtime so the caller may be sync or async.
    fn wait_for_bucket(&self, timeout: Duration) -> std::io::Result<()> {
        let location = format!("s3://{}", self.bucket);
        let options = self.options();
        let probe = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let deadline = Instant::now() + timeout;
            loop {
                let ready = rt.block_on(async {
                    let store = super::open_str(&location, &options).await?;
                    store.check().await?;
                    // HEAD on the bucket can succeed before the gateway serves objects in it
                    // (seen under load: a GET right after said NoSuchBucket). Ready means a
                    // GET of a missing key is a plain miss.
                    match store.get(".facepipe-ready-probe").await {
                        Ok(_) | Err(crate::Error::NotFound(_)) => Ok(()),
                        Err(e) => Err(e),
                    }
                });
                match ready {
                    Ok(()) => return Ok(()),
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("weed never served {location}: {e}"))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(300)),
                }
            }
        });
        match probe.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::Error::other("the readiness probe panicked")),
        }
    }

    /// `http://127.0.0.1:PORT`, the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn port(&self) -> u16 {
        self.s3_port
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://BUCKET/prefix`.
    pub fn location(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix.trim_start_matches('/'))
    }

    /// Storage options that reach this store (credentials come from the environment, which
    /// [`SeaweedFs::start`] set).
    pub fn options(&self) -> StorageOptions {
        StorageOptions {
            s3_endpoint: Some(self.endpoint()),
            region: Some(REGION.into()),
            ..StorageOptions::default()
        }
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// The test credentials in this process's environment: the AWS SDK reads them, and child
/// processes (publishers, workers, the Lambda emulator) inherit them.
pub fn set_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY);
    std::env::set_var("AWS_REGION", REGION);
}

fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|a| a.port())
}

//! Storage in an S3 bucket (AWS or any S3-compatible store) with aws-sdk-s3: path-style
//! addressing, paginated listing, multipart upload for large objects. A single PUT is atomic
//! on S3, and a multipart upload only becomes visible when it is completed.
//!
//! Every call runs under the connect, read and operation timeouts of [`S3Timeouts`] with a
//! bounded number of attempts, so a stalled endpoint fails the call instead of hanging it.
//! Conditional writes use `If-None-Match: *` (create) and `If-Match: <ETag>` (replace);
//! `pipeline/tests/storage_s3_conditional.rs` checks that the store honours both under
//! concurrent writers (SeaweedFS 4.48 does: one winner, every other writer gets 412).

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::{
    join_key, BoxFuture, Location, ObjectInfo, S3Timeouts, Storage, StorageOptions, Version,
};
use crate::error::{Error, Result};

/// Objects above this size are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// Size of each part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

pub struct S3Storage {
    location: Location,
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    timeouts: S3Timeouts,
}

/// The shared AWS configuration: standard environment and profile, region defaulting to
/// us-east-1, explicit region override.
pub async fn aws_config(options: &StorageOptions) -> aws_config::SdkConfig {
    use aws_config::meta::region::RegionProviderChain;
    use aws_config::Region;
    let region = match &options.region {
        Some(r) => RegionProviderChain::first_try(Region::new(r.clone())),
        None => RegionProviderChain::default_provider(),
    }
    .or_else(Region::from_static("us-east-1"));
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .load()
        .await
}

impl S3Storage {
    /// A client for `location` (must be [`Location::S3`]).
    pub async fn connect(location: Location, options: &StorageOptions) -> Result<Self> {
        let Location::S3 { bucket, prefix } = &location else {
            return Err(Error::Invalid(format!(
                "{location} is not an s3:// location"
            )));
        };
        let shared = aws_config(options).await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            // S3-compatible stores differ in which optional checksums they accept.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
        if let Some(endpoint) = &options.s3_endpoint {
            config = config.endpoint_url(endpoint);
        }
        let t = options.timeouts;
        config = config
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(t.connect)
                    .read_timeout(t.read)
                    .operation_timeout(t.operation)
                    .build(),
            )
            .retry_config(
                aws_sdk_s3::config::retry::RetryConfig::standard()
                    .with_max_attempts(t.max_attempts.max(1)),
            );
        Ok(S3Storage {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            timeouts: t,
            location,
        })
    }

    /// Read a whole object body under the operation timeout (the SDK's timeouts end when
    /// the answer's headers arrive; a body can still stall after them).
    async fn read_body(&self, key: &str, body: ByteStream) -> Result<Bytes> {
        match tokio::time::timeout(self.timeouts.operation, body.collect()).await {
            Ok(Ok(data)) => Ok(data.into_bytes()),
            Ok(Err(e)) => Err(Error::Storage {
                location: self.location.display_key(key),
                reason: format!("reading the object body: {e}"),
            }),
            Err(_) => Err(Error::Storage {
                location: self.location.display_key(key),
                reason: format!(
                    "the object body did not arrive within {:?}: check the S3 endpoint and the network",
                    self.timeouts.operation
                ),
            }),
        }
    }

    fn full_key(&self, key: &str) -> String {
        join_key(&self.prefix, key)
    }

    /// Turn an SDK error into one message a person can act on.
    fn error<E>(&self, key: &str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let at = self.location.display_key(key);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        match (code.as_deref(), status) {
            (Some("NoSuchBucket"), _) => Error::Storage {
                location: at,
                reason: format!(
                    "bucket {:?} does not exist: create it first (e.g. `aws s3 mb s3://{}`) or fix the location",
                    self.bucket, self.bucket
                ),
            },
            (Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied"), _)
            | (_, Some(401 | 403)) => Error::Storage {
                location: at,
                reason: format!(
                    "S3 refused the request ({}): check the credentials (AWS_ACCESS_KEY_ID / \
                     AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and that they may read and write \
                     bucket {:?}",
                    code.as_deref().unwrap_or("HTTP 403"),
                    self.bucket
                ),
            },
            (Some("NoSuchKey" | "NotFound"), _) | (_, Some(404)) => Error::NotFound(at),
            _ => match &err {
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Error::Storage {
                    location: at,
                    reason: format!(
                        "cannot reach S3 ({}): check the endpoint (AWS_ENDPOINT_URL or the S3 endpoint option) and the network",
                        DisplayErrorContext(&err)
                    ),
                },
                _ => Error::Storage {
                    location: at,
                    reason: DisplayErrorContext(&err).to_string(),
                },
            },
        }
    }

    /// A conditional PUT's answer: written, refused because the condition failed (412, or
    /// 409 while a concurrent conditional write of the key is in flight), or a real error.
    fn conditional_outcome<T, E>(
        &self,
        key: &str,
        sent: std::result::Result<T, SdkError<E, HttpResponse>>,
    ) -> Result<bool>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match sent {
            Ok(_) => Ok(true),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                match (e.code(), status) {
                    // NoSuchKey: an `If-Match` object removed meanwhile (AWS answers 404).
                    (
                        Some("PreconditionFailed" | "ConditionalRequestConflict" | "NoSuchKey"),
                        _,
                    )
                    | (_, Some(409 | 412)) => Ok(false),
                    _ => Err(self.error(key, e)),
                }
            }
        }
    }

    async fn put_multipart(&self, key: &str, data: Bytes) -> Result<()> {
        let full = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(Error::Storage {
                location: self.location.display_key(key),
                reason: "S3 returned no upload id for a multipart upload".into(),
            });
        };
        let result = async {
            let mut parts = Vec::new();
            for (i, start) in (0..data.len()).step_by(PART_SIZE).enumerate() {
                let end = (start + PART_SIZE).min(data.len());
                let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(data.slice(start..end)))
                    .send()
                    .await
                    .map_err(|e| self.error(key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.error(key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            // Leave no orphaned parts behind; the object was never visible.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(upload_id)
                .send()
                .await;
        }
        result
    }
}

impl S3Storage {
    /// One GET of `key`, shared by the plain and the versioned read.
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error(key, e))
    }
}

impl Storage for S3Storage {
    fn location(&self) -> &Location {
        &self.location
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Bytes> {
        Box::pin(async move {
            let out = self.get_object(key).await?;
            self.read_body(key, out.body).await
        })
    }

    fn get_versioned<'a>(&'a self, key: &'a str) -> BoxFuture<'a, (Bytes, Version)> {
        Box::pin(async move {
            let out = self.get_object(key).await?;
            let Some(etag) = out.e_tag().map(str::to_string) else {
                return Err(Error::Storage {
                    location: self.location.display_key(key),
                    reason: "the store returned no ETag, so the object cannot be replaced \
                             conditionally: use an S3 store with conditional writes"
                        .into(),
                });
            };
            let data = self.read_body(key, out.body).await?;
            Ok((data, Version::new(etag)))
        })
    }

    fn put_if_version<'a>(
        &'a self,
        key: &'a str,
        data: Bytes,
        expected: Option<&'a Version>,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .body(ByteStream::from(data));
            let put = match expected {
                Some(v) => put.if_match(v.as_str()),
                None => put.if_none_match("*"),
            };
            self.conditional_outcome(key, put.send().await)
        })
    }

    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if data.len() > MULTIPART_THRESHOLD {
                return self.put_multipart(key, data).await;
            }
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| self.error(key, e))?;
            Ok(())
        })
    }

    fn put_if_absent<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            // A conditional PUT (`If-None-Match: *`): the store refuses it with 412 when the
            // key exists, or 409 while a concurrent conditional write of the key is in flight.
            // Small objects only: claims and markers, never multipart.
            let sent = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .if_none_match("*")
                .body(ByteStream::from(data))
                .send()
                .await;
            self.conditional_outcome(key, sent)
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Vec<ObjectInfo>> {
        Box::pin(async move {
            // Keys are listed under "<location prefix>/<prefix>"; strip the location part.
            let strip = if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix)
            };
            let full_prefix = format!("{strip}{prefix}");
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.error(prefix, e))?;
                for obj in page.contents() {
                    let Some(key) = obj.key() else { continue };
                    let Some(rel) = key.strip_prefix(&strip) else {
                        continue;
                    };
                    out.push(ObjectInfo {
                        key: rel.to_string(),
                        size: obj.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    });
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e) => match self.error(key, e) {
                    Error::NotFound(_) => Ok(false),
                    other => Err(other),
                },
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .send()
                .await
                .map_err(|e| self.error(key, e))?;
            Ok(())
        })
    }

    fn check(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match self.client.head_bucket().bucket(&self.bucket).send().await {
                Ok(_) => Ok(()),
                Err(e) => Err(match self.error("", e) {
                    // HEAD has no body, so a missing bucket is a bare 404.
                    Error::NotFound(_) => Error::Storage {
                        location: self.location.to_string(),
                        reason: format!(
                            "bucket {:?} does not exist: create it first (e.g. `aws s3 mb s3://{}`) or fix the location",
                            self.bucket, self.bucket
                        ),
                    },
                    other => other,
                }),
            }
        })
    }
}

//! The S3 destination (`--delivery-s3 s3`): batches written to Amazon S3 or any
//! S3-compatible server with the official `aws-sdk-s3` client (the Amazon S3 API
//! reference: PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
//! AbortMultipartUpload; GetObject, DeleteObject and ListObjectsV2 for the cluster's
//! object store).
//!
//! The client is configured from the standard AWS environment variables, without the
//! `aws-config` crate (its credential chain brings SSO, STS and IMDS clients along):
//! `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL` (an explicit endpoint means path-style
//! addressing, which S3-compatible servers expect), `AWS_REGION`, else
//! `AWS_DEFAULT_REGION`, else the server's own region, and static credentials from
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` (required).
//!
//! Bodies up to [`PART_SIZE`] are one PutObject; larger bodies are a multipart upload of
//! [`PART_SIZE`] parts, aborted when any step fails (so no orphaned parts are billed).
//! Every request carries Content-MD5. The SDK's default trailing CRC checksums
//! (`aws-chunked` bodies) are turned off, since several S3-compatible servers reject
//! them; Content-MD5 gives the same integrity check. The SDK's own retries are off:
//! the worker retries with its own backoff, and a retried batch rewrites the same key.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest as _, Md5};

use super::destination::{Destination, DestinationError, PutFuture};

/// Bodies above this size go up as a multipart upload of parts of this size (S3's
/// minimum part size is 5 MiB; 8 MiB is the AWS CLI's default).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// The S3 client's settings, read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `None`: AWS's own endpoints, virtual-hosted-style addressing.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Only for temporary credentials.
    pub session_token: Option<String>,
}

impl S3Settings {
    /// Reads the settings through `var` (the process environment in production),
    /// falling back to `default_region` when no region variable is set. Fails, with a
    /// message naming the variables, when credentials are missing.
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
        default_region: &str,
    ) -> Result<S3Settings, String> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let endpoint = set("AWS_ENDPOINT_URL_S3").or_else(|| set("AWS_ENDPOINT_URL"));
        if let Some(url) = &endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "the S3 endpoint {url:?} (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL) is not an \
                 http:// or https:// URL"
            ));
        }
        let region = set("AWS_REGION")
            .or_else(|| set("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| default_region.to_string());
        let (Some(access_key_id), Some(secret_access_key)) =
            (set("AWS_ACCESS_KEY_ID"), set("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(
                "--delivery-s3 s3 needs credentials: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials)"
                    .to_string(),
            );
        };
        Ok(S3Settings {
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token: set("AWS_SESSION_TOKEN"),
        })
    }
}

/// S3 through `aws-sdk-s3`.
#[derive(Debug, Clone)]
pub struct S3 {
    client: Client,
}

impl S3 {
    /// A client for `settings`. Needs a Tokio runtime (the connection pool's timers).
    pub fn new(settings: &S3Settings) -> S3 {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let credentials = Credentials::new(
            settings.access_key_id.clone(),
            settings.secret_access_key.clone(),
            settings.session_token.clone(),
            None,
            "environment",
        );
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(300))
                    .build(),
            );
        if let Some(url) = &settings.endpoint {
            config = config.endpoint_url(url.clone()).force_path_style(true);
        }
        S3 {
            client: Client::from_conf(config.build()),
        }
    }

    /// Reads a whole object (GetObject).
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Bytes, DestinationError> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("GetObject", bucket, key, &e))?;
        let body = out.body.collect().await.map_err(|e| {
            DestinationError(format!(
                "GetObject of s3://{bucket}/{key}: reading the body: {e}"
            ))
        })?;
        Ok(body.into_bytes())
    }

    /// One page (at most 1,000) of the keys under `prefix` after `start_after`, in
    /// key order, each with its last-modified time in Unix ms (ListObjectsV2).
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<(String, i64)>, DestinationError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_string))
            .max_keys(1000)
            .send()
            .await
            .map_err(|e| failed("ListObjectsV2", bucket, prefix, &e))?;
        Ok(out
            .contents()
            .iter()
            .filter_map(|o| {
                let modified = o.last_modified().and_then(|t| t.to_millis().ok())?;
                Some((o.key()?.to_string(), modified))
            })
            .collect())
    }

    /// Deletes an object (DeleteObject; deleting a missing key succeeds, as in S3).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), DestinationError> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("DeleteObject", bucket, key, &e))?;
        Ok(())
    }

    /// Writes an object (one PutObject, or a multipart upload for large bodies).
    pub async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), DestinationError> {
        if body.len() <= PART_SIZE {
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_md5(content_md5(&body))
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| failed("PutObject", bucket, key, &e))?;
            return Ok(());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("CreateMultipartUpload", bucket, key, &e))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(DestinationError(format!(
                "CreateMultipartUpload of s3://{bucket}/{key} returned no upload id"
            )));
        };
        match self.upload_parts(bucket, key, upload_id, &body).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Best effort: an upload left behind is cleaned up by the bucket's
                // lifecycle rules, and the retry starts a new one.
                if let Err(abort) = self
                    .client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await
                {
                    tracing::warn!(bucket, key, error = %failed("AbortMultipartUpload", bucket, key, &abort), "cannot abort a multipart upload");
                }
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        body: &Bytes,
    ) -> Result<(), DestinationError> {
        let mut parts = Vec::new();
        for (index, start) in (0..body.len()).step_by(PART_SIZE).enumerate() {
            let chunk = body.slice(start..body.len().min(start + PART_SIZE));
            // At most 10,000 parts by S3's rules; bodies are capped far below that.
            let number = i32::try_from(index + 1)
                .map_err(|_| DestinationError("too many multipart parts".into()))?;
            let out = self
                .client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_md5(content_md5(&chunk))
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| failed("UploadPart", bucket, key, &e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| failed("CompleteMultipartUpload", bucket, key, &e))?;
        Ok(())
    }
}

impl Destination for S3 {
    fn put_object<'a>(&'a self, bucket: &'a str, key: &'a str, body: Bytes) -> PutFuture<'a> {
        Box::pin(self.put(bucket, key, body))
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}

/// The Content-MD5 header of a body: base64 of its MD5 digest (RFC 1864).
pub fn content_md5(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(body))
}

/// A failed S3 call as the worker records it (and DescribeDeliveryStream shows it):
/// the operation, the object, and S3's error code and message when it sent one.
fn failed<E, R>(
    op: &str,
    bucket: &str,
    key: &str,
    e: &aws_sdk_s3::error::SdkError<E, R>,
) -> DestinationError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = match e.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("error"),
            service.message().unwrap_or("no message")
        ),
        None => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    };
    DestinationError(format!("{op} s3://{bucket}/{key} failed: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn settings_follow_the_aws_environment() {
        let s = S3Settings::from_env(
            env(&[
                ("AWS_ENDPOINT_URL", "http://generic:1"),
                ("AWS_ENDPOINT_URL_S3", "http://s3only:2"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("AWS_REGION", "eu-central-1"),
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
            ]),
            "us-east-1",
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://s3only:2"));
        assert_eq!(s.region, "eu-central-1");
        assert_eq!(s.session_token, None);

        let s = S3Settings::from_env(
            env(&[
                ("AWS_ENDPOINT_URL", "http://generic:1"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_SESSION_TOKEN", "token"),
            ]),
            "us-east-1",
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://generic:1"));
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.session_token.as_deref(), Some("token"));

        let s = S3Settings::from_env(
            env(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")]),
            "ap-south-1",
        )
        .unwrap();
        assert_eq!((s.endpoint, s.region.as_str()), (None, "ap-south-1"));
    }

    #[test]
    fn missing_credentials_or_a_bad_endpoint_are_refused() {
        let err =
            S3Settings::from_env(env(&[("AWS_ACCESS_KEY_ID", "A")]), "us-east-1").unwrap_err();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
        let err = S3Settings::from_env(
            env(&[
                ("AWS_ENDPOINT_URL", "localhost:9000"),
                ("AWS_ACCESS_KEY_ID", "A"),
                ("AWS_SECRET_ACCESS_KEY", "S"),
            ]),
            "us-east-1",
        )
        .unwrap_err();
        assert!(err.contains("not an http"), "{err}");
    }

    #[test]
    fn content_md5_is_base64_of_the_digest() {
        // RFC 1321's test vector for "abc": 900150983cd24fb0d6963f7d28e17f72.
        assert_eq!(content_md5(b"abc"), "kAFQmDzST7DWlj99KOF/cg==");
    }
}

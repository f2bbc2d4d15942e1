//! `tracing:` in the config: where decision spans are exported (OTLP) and how many.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

/// `tracing:` in the config. Without the block, nothing is traced or exported.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Where spans are sent.
    pub otlp: OtlpConfig,
    /// The share of new traces Sluis samples, from 0 to 1. A request that arrives with a
    /// `traceparent` follows its caller's choice (the `sampled` flag) instead, so a trace
    /// is kept or dropped whole.
    #[serde(default = "default_sampling_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling_ratio: f64,
    /// `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

/// An OpenTelemetry collector (or anything speaking OTLP).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's URL, `http://` or `https://`: e.g. `http://otel-collector:4317`
    /// for gRPC, `http://otel-collector:4318` for HTTP (where `/v1/traces` is added when
    /// the URL has no path).
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// How long one export may take, retries included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String", example = "10s")]
    pub timeout: Duration,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318 by convention).
    Http,
}

fn default_sampling_ratio() -> f64 {
    1.0
}

fn default_service_name() -> String {
    "sluis".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl TracingConfig {
    /// Checks what serde cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(format!(
                "`sampling_ratio` must be between 0 and 1, not `{}`",
                self.sampling_ratio
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err("`service_name` is empty".into());
        }
        let endpoint = &self.otlp.endpoint;
        let url = url::Url::parse(endpoint)
            .map_err(|e| format!("`otlp.endpoint` `{endpoint}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!(
                "`otlp.endpoint` `{endpoint}` must be an http:// or https:// URL with a host"
            ));
        }
        if self.otlp.timeout.is_zero() {
            return Err("`otlp.timeout` must be longer than 0s".into());
        }
        Ok(())
    }

    /// The URL the exporter posts to: for HTTP, `/v1/traces` below a bare endpoint.
    pub fn export_url(&self) -> String {
        let endpoint = self.otlp.endpoint.trim_end_matches('/');
        let bare = url::Url::parse(endpoint).is_ok_and(|url| url.path() == "/");
        match self.otlp.protocol {
            OtlpProtocol::Http if bare => format!("{endpoint}/v1/traces"),
            _ => endpoint.to_owned(),
        }
    }
}

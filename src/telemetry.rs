//! Traces: one span per decision, exported over OTLP, joined to the caller's trace.
//!
//! Off unless the config has a `tracing:` block. Then [`Telemetry::start`] builds an OTLP
//! exporter (gRPC or HTTP/protobuf) behind OpenTelemetry's batch span processor, and
//! [`Telemetry::layer`] hands `tracing` a layer that turns the decision span into an
//! OpenTelemetry span. [`sluis_core::engine::Engine::decide`], where every front door meets,
//! opens that span with [`decision_span`]: its parent is the W3C `traceparent` (and
//! `tracestate`) of the checked request, so Sluis's span sits inside the caller's trace,
//! whichever door asked.
//!
//! What a span carries is chosen here, not inherited from the log: door, policy, rule,
//! outcome and status. Never a token, a subject, a path or a query, which may hold
//! personal data (a BSN in a FHIR path). Only spans of [`SPAN_TARGET`] reach the
//! exporter; the service's own log events do not.
//!
//! Exporting never slows a decision: a finished span goes into a bounded queue, a
//! background thread sends batches, and when the queue is full spans are dropped. A
//! collector that cannot be reached is logged (once when it starts failing, once when it
//! recovers) and otherwise ignored. At shutdown, [`Telemetry::shutdown`] sends what is
//! left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use sluis_config::telemetry::{OtlpProtocol, TracingConfig};
use sluis_config::{LogFormat, LoggingConfig};
use sluis_core::engine::TraceContext;
use sluis_core::request::AccessRequest;

/// The `tracing` target of the spans that are exported. The service's log leaves it out
/// ([`init_subscriber`]); the exporter takes nothing else.
pub use sluis_core::engine::span::SPAN_TARGET;

/// A filter directive that keeps decision spans out of the service's own log, where they
/// would only cost time.
fn log_directive() -> String {
    format!("{SPAN_TARGET}=off")
}

/// The running exporter. Keep it until the server has drained, then call
/// [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
    timeout: Duration,
}

impl Telemetry {
    /// Builds the exporter and its batch processor. For gRPC this must run inside the
    /// Tokio runtime the server runs on: the connection lives there.
    pub fn start(config: &TracingConfig) -> Result<Telemetry, String> {
        config.check().map_err(|e| format!("tracing: {e}"))?;
        let url = config.export_url();
        let timeout = config.otlp.timeout;
        let built = match config.otlp.protocol {
            OtlpProtocol::Grpc => {
                let builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(url.clone())
                    .with_timeout(timeout);
                // tonic's TLS trusts no root unless told: the system's, as for HTTP.
                let builder = if url.starts_with("https://") {
                    builder.with_tls_config(
                        tonic::transport::ClientTlsConfig::new().with_native_roots(),
                    )
                } else {
                    builder
                };
                builder.build()
            }
            OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url.clone())
                .with_timeout(timeout)
                .build(),
        };
        let exporter = built.map_err(|e| format!("tracing: cannot build the exporter: {e}"))?;
        let exporter = Logged {
            inner: exporter,
            endpoint: url,
            failing: AtomicBool::new(false),
        };
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        Ok(Telemetry { provider, timeout })
    }

    /// The `tracing` layer that exports decision spans, and nothing else.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let tracer = self.provider.tracer("sluis");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // The span says what it means to say; no source locations, thread names or
            // busy/idle timings.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target(SPAN_TARGET, LevelFilter::INFO))
    }

    /// Exports the spans still queued and stops the exporter. Blocks for up to the export
    /// timeout: call it off the async workers (`spawn_blocking`), after the listeners
    /// have drained, so the last decisions' spans are sent too.
    pub fn shutdown(self) {
        // One export's timeout plus a moment to hand over the batch.
        let wait = self.timeout + Duration::from_secs(1);
        if let Err(e) = self.provider.shutdown_with_timeout(wait) {
            tracing::warn!("tracing: the last spans may not have been exported: {e}");
        }
    }
}

/// Installs the global subscriber of `sluis serve` ([`subscriber`]).
pub fn init_subscriber(logging: &LoggingConfig, telemetry: Option<&Telemetry>) {
    use tracing_subscriber::util::SubscriberInitExt;
    subscriber(logging, telemetry).init();
}

/// The subscriber of `sluis serve`: the service's log, and the exporter of decision spans
/// when tracing is on. Each has its own filter: `logging.level` (or `RUST_LOG`) never
/// turns spans on or off, and decision spans never reach the log, where they would cost
/// every decision.
pub fn subscriber(
    logging: &LoggingConfig,
    telemetry: Option<&Telemetry>,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&logging.level));
    let filter = match log_directive().parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let log = match logging.format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
        // Colours only for a person at a terminal: escape codes in a file, a pipe or a
        // container's log would only garble it for grep and log collectors.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(log.with_filter(filter));
    // Not an `Option` layer: a `None` one is "interested" in every callsite, which would
    // make the registry build each decision span only for nobody to use it (measured:
    // 3.3k instructions per decision, see BENCHMARKS.md).
    match telemetry {
        Some(telemetry) => Box::new(subscriber.with(telemetry.layer())),
        None => Box::new(subscriber),
    }
}

/// An exporter that says when exporting starts failing and when it works again, rather
/// than once per batch or never.
#[derive(Debug)]
struct Logged<E> {
    inner: E,
    endpoint: String,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Logged<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        spans,
                        "tracing: cannot export spans, dropping them until the collector answers: {e}"
                    );
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "tracing: exporting spans again");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// A request's headers as OpenTelemetry's propagators read them.
struct Carrier<'h>(&'h sluis_core::request::Headers);

impl opentelemetry::propagation::Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().collect()
    }
}

/// Joins decision spans to the caller's W3C trace context (`traceparent`, `tracestate`)
/// and reads their OpenTelemetry trace ids: what the engine's
/// [`sluis_core::engine::TraceContext`] asks of the server.
pub struct W3cTraceContext;

impl TraceContext for W3cTraceContext {
    fn adopt(&self, span: &tracing::Span, request: &AccessRequest) {
        let parent = TraceContextPropagator::new().extract(&Carrier(&request.headers));
        // Fails only without the OpenTelemetry layer, and then nothing is exported.
        let _ = span.set_parent(parent);
    }

    /// The caller's trace id when the request carried a valid `traceparent`, else the id
    /// of the new trace.
    fn trace_id(&self, span: &tracing::Span) -> Option<String> {
        if span.is_disabled() {
            return None;
        }
        let context = span.context();
        let span_context = context.span().span_context().clone();
        span_context
            .is_valid()
            .then(|| span_context.trace_id().to_string())
    }
}

/// The span of one decision, as the engine opens it, with this server's trace context.
pub fn decision_span(request: &AccessRequest) -> tracing::Span {
    sluis_core::engine::span::decision_span(request, Some(&W3cTraceContext))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Result<TracingConfig, String> {
        let config: TracingConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        config.check().map(|()| config)
    }

    #[test]
    fn defaults_are_grpc_full_sampling_and_sluis() {
        let config = config("otlp: {endpoint: 'http://127.0.0.1:4317'}").unwrap();
        assert_eq!(config.otlp.protocol, OtlpProtocol::Grpc);
        assert_eq!(config.sampling_ratio, 1.0);
        assert_eq!(config.service_name, "sluis");
        assert_eq!(config.otlp.timeout, Duration::from_secs(10));
        assert_eq!(config.export_url(), "http://127.0.0.1:4317");
    }

    #[test]
    fn http_endpoints_get_the_traces_path_when_bare() {
        let bare = config("otlp: {endpoint: 'http://c:4318/', protocol: http}").unwrap();
        assert_eq!(bare.export_url(), "http://c:4318/v1/traces");
        let full = config("otlp: {endpoint: 'https://c/otlp/v1/traces', protocol: http}").unwrap();
        assert_eq!(full.export_url(), "https://c/otlp/v1/traces");
    }

    #[test]
    fn bad_values_are_named() {
        let err = config("otlp: {endpoint: 'http://c:4317'}\nsampling_ratio: 1.5").unwrap_err();
        assert!(
            err.contains("`sampling_ratio`") && err.contains("1.5"),
            "{err}"
        );
        let err = config("otlp: {endpoint: 'c:4317'}").unwrap_err();
        assert!(err.contains("`otlp.endpoint` `c:4317`"), "{err}");
        let err = config("otlp: {endpoint: 'ftp://c'}").unwrap_err();
        assert!(err.contains("http:// or https://"), "{err}");
        let err = config("otlp: {endpoint: 'http://c', protocol: thrift}").unwrap_err();
        assert!(err.contains("thrift"), "{err}");
        let err = config("otlp: {endpoint: 'http://c', endpoints: []}").unwrap_err();
        assert!(err.contains("unknown field `endpoints`"), "{err}");
        let err = config("otlp: {endpoint: 'http://c'}\nservice_name: ' '").unwrap_err();
        assert!(err.contains("`service_name`"), "{err}");
    }

    #[test]
    fn with_tracing_off_the_servers_subscriber_never_builds_a_decision_span() {
        let mut request = AccessRequest::default();
        request.headers.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        let logging = LoggingConfig {
            level: "trace".into(),
            ..LoggingConfig::default()
        };
        tracing::subscriber::with_default(subscriber(&logging, None), || {
            let span = decision_span(&request);
            assert!(span.is_disabled(), "{span:?}");
            assert_eq!(W3cTraceContext.trace_id(&span), None);
        });
    }

    #[test]
    fn without_the_layer_a_decision_span_is_free() {
        let mut request = AccessRequest::default();
        request.headers.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        let span = decision_span(&request);
        assert!(span.is_disabled());
        assert_eq!(W3cTraceContext.trace_id(&span), None);
    }
}

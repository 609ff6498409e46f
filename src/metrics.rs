//! Prometheus metrics, registered once per server in its own registry (so tests can run several
//! servers in one process). Handles are cloned into the code that updates them; the hot path only
//! touches pre-resolved atomic counters.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub timestamps_issued: IntCounter,
    pub bound_writes: IntCounterVec,
    pub bound_write_latency: Histogram,
    pub namespaces: IntGauge,
    pub fail_stopped: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "timelock_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("metric");
        let http_latency = HistogramVec::new(
            HistogramOpts::new(
                "timelock_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0, 5.0,
            ]),
            &["route"],
        )
        .expect("metric");
        let timestamps_issued = IntCounter::new(
            "timelock_timestamps_issued_total",
            "Timestamps handed out, all namespaces",
        )
        .expect("metric");
        let bound_writes = IntCounterVec::new(
            Opts::new(
                "timelock_bound_writes_total",
                "Durable bound writes by result",
            ),
            &["result"],
        )
        .expect("metric");
        let bound_write_latency = Histogram::with_opts(
            HistogramOpts::new(
                "timelock_bound_write_duration_seconds",
                "Latency of synced bound writes",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0,
            ]),
        )
        .expect("metric");
        let namespaces = IntGauge::new("timelock_namespaces", "Namespaces known to this server")
            .expect("metric");
        let fail_stopped = IntGauge::new(
            "timelock_fail_stopped_services",
            "Timestamp services stopped because their bound could not be made durable",
        )
        .expect("metric");
        for m in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_latency.clone()),
            Box::new(timestamps_issued.clone()),
            Box::new(bound_writes.clone()),
            Box::new(bound_write_latency.clone()),
            Box::new(namespaces.clone()),
            Box::new(fail_stopped.clone()),
        ] {
            registry.register(m).expect("register metric");
        }
        Self {
            registry,
            http_requests,
            http_latency,
            timestamps_issued,
            bound_writes,
            bound_write_latency,
            namespaces,
            fail_stopped,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode metrics");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

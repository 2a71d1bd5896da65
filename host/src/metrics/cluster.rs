//! The cluster cache's metrics, read off the cache at scrape time.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::cache::{ClusterState, KindReport, KindStatus};

/// Per cached kind: objects, bytes, resourceVersion, age of the last change, the watch's
/// state, its lists and errors.
#[derive(Clone)]
pub struct ClusterCollector(pub Arc<ClusterState>);

impl std::fmt::Debug for ClusterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCollector")
    }
}

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reports = self.0.report();
        let kind = |report: &KindReport| [("kind", report.kind.to_string())];
        let gauge = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     value: &dyn Fn(&KindReport) -> Option<f64>|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for report in &reports {
                if let Some(value) = value(report) {
                    let labels = kind(report);
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
            Ok(())
        };
        gauge(
            &mut encoder,
            "cache_objects",
            "Objects cached, per kind.",
            &|r| Some(r.objects as f64),
        )?;
        gauge(
            &mut encoder,
            "cache_bytes",
            "Bytes the cache holds, per kind.",
            &|r| Some(r.bytes as f64),
        )?;
        gauge(
            &mut encoder,
            "cache_resource_version",
            "Newest resourceVersion cached, per kind (as the API server numbers it).",
            &|r| Some(r.resource_version as f64),
        )?;
        gauge(
            &mut encoder,
            "cache_last_change_age_seconds",
            "Seconds since the kind's snapshot last changed.",
            &|r| r.since_change.map(|age| age.as_secs_f64()),
        )?;
        // One series per state, 1 for the current one: the usual shape of a state metric.
        let mut family = encoder.encode_descriptor(
            "cache_kind_state",
            "State of each kind: pending (first list), ready, stale (served while the watch retries), unserved.",
            None,
            MetricType::Gauge,
        )?;
        for report in &reports {
            for status in KindStatus::ALL {
                let labels = [
                    ("kind", report.kind.to_string()),
                    ("state", status.as_str().to_owned()),
                ];
                ConstGauge::new(i64::from(report.status == status))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let counter = |encoder: &mut DescriptorEncoder,
                       name: &str,
                       help: &str,
                       value: &dyn Fn(&KindReport) -> u64|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for report in &reports {
                let labels = kind(report);
                ConstCounter::new(value(report)).encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        };
        counter(
            &mut encoder,
            "cache_lists",
            "Whole lists of a kind (the first, then re-lists after 410 Gone or an outage).",
            &|r| r.watch.lists,
        )?;
        counter(
            &mut encoder,
            "cache_watch_errors",
            "Failed list or watch calls of a kind, each retried with backoff.",
            &|r| r.watch.errors,
        )
    }
}

//! The client's side of a test: a [`metrics`] recorder that keeps every
//! value a client records, for a test to read back beside what the
//! simulator saw.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// A recorder that keeps counters, gauges and histograms as recorded, and
/// reads them by name and labels without resetting them (tests running
/// side by side read the same recorder; give each its own shard ids).
#[derive(Clone)]
pub struct MetricsRecorder {
    registry: Arc<Registry<Key, AtomicStorage>>,
}

impl std::fmt::Debug for MetricsRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRecorder").finish_non_exhaustive()
    }
}

impl MetricsRecorder {
    /// The process's recorder, installed as the global one on first use.
    ///
    /// # Panics
    ///
    /// If another global recorder was installed first.
    pub fn global() -> &'static Self {
        static GLOBAL: OnceLock<MetricsRecorder> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let recorder = Self {
                registry: Arc::new(Registry::atomic()),
            };
            metrics::set_global_recorder(recorder.clone())
                .expect("no other global metrics recorder is installed");
            recorder
        })
    }

    /// The sum of the counters named `name` whose labels include `labels`
    /// (0 when there is none).
    #[must_use]
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut sum = 0;
        self.registry.visit_counters(|key, counter| {
            if matches(key, name, labels) {
                sum += counter.load(std::sync::atomic::Ordering::Relaxed);
            }
        });
        sum
    }

    /// The gauge named `name` with labels including `labels`, if one was
    /// registered.
    #[must_use]
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut value = None;
        self.registry.visit_gauges(|key, gauge| {
            if matches(key, name, labels) {
                value = Some(f64::from_bits(
                    gauge.load(std::sync::atomic::Ordering::Relaxed),
                ));
            }
        });
        value
    }

    /// Every value recorded in the histograms named `name` whose labels
    /// include `labels`.
    #[must_use]
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let mut values = Vec::new();
        self.registry.visit_histograms(|key, histogram| {
            if matches(key, name, labels) {
                values.extend(histogram.data());
            }
        });
        values
    }

    /// The values a label takes on the series named `name` whose labels
    /// include `labels`, sorted.
    #[must_use]
    pub fn label_values(&self, name: &str, label: &str, labels: &[(&str, &str)]) -> Vec<String> {
        let mut values = Vec::new();
        let mut collect = |key: &Key| {
            if matches(key, name, labels)
                && let Some(value) = key.labels().find(|l| l.key() == label)
            {
                values.push(value.value().to_owned());
            }
        };
        self.registry.visit_counters(|key, _| collect(key));
        self.registry.visit_gauges(|key, _| collect(key));
        self.registry.visit_histograms(|key, _| collect(key));
        values.sort();
        values.dedup();
        values
    }
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

impl Recorder for MetricsRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

//! [`FnFamily`]: a metric family read from a closure at every scrape (the counters other rooms
//! keep as plain atomics).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::Labels;

pub(super) type ReadFamily<T> = Box<dyn Fn() -> Vec<(Labels, T)> + Send + Sync>;

pub(super) enum FnKind {
    Counter(ReadFamily<u64>),
    CounterF64(ReadFamily<f64>),
    Gauge(ReadFamily<i64>),
}

/// A family read from a closure at every scrape.
pub(super) struct FnFamily {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) kind: FnKind,
}

impl std::fmt::Debug for FnFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnFamily")
            .field("name", &self.name)
            .finish()
    }
}

impl FnFamily {
    /// Writes the family's descriptor (even without series) and one `make(value)` per series.
    fn encode_series<T: Copy, M: EncodeMetric>(
        &self,
        encoder: &mut DescriptorEncoder,
        kind: MetricType,
        series: &[(Labels, T)],
        make: fn(T) -> M,
    ) -> Result<(), std::fmt::Error> {
        let mut fam = encoder.encode_descriptor(self.name, self.help, None, kind)?;
        for (labels, v) in series {
            make(*v).encode(fam.encode_family(labels)?)?;
        }
        Ok(())
    }
}

impl Collector for FnFamily {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match &self.kind {
            FnKind::Counter(read) => self.encode_series(
                &mut encoder,
                MetricType::Counter,
                &read(),
                ConstCounter::new,
            ),
            FnKind::CounterF64(read) => self.encode_series(
                &mut encoder,
                MetricType::Counter,
                &read(),
                ConstCounter::new,
            ),
            FnKind::Gauge(read) => {
                self.encode_series(&mut encoder, MetricType::Gauge, &read(), ConstGauge::new)
            }
        }
    }
}

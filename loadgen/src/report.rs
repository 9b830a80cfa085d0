//! What `mirror bench viewers` reports: counts, rates, server CPU, and percentiles of
//! the delays it measured, as a table for people and JSON for scripts.

use std::collections::BTreeMap;

use serde::Serialize;

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Number of values.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// The percentiles of `values` (nearest rank). Sorted by hand rather than recorded in
    /// an `hdrhistogram`: announce delays can be negative (a part listed before its
    /// media ends), and that histogram holds non-negative integers at a relative
    /// precision, so the offset negative values would need would cost the precision.
    pub(crate) fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
        Self {
            n: values.len(),
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
        }
    }
}

/// The result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ViewersReport {
    /// Viewers that ran.
    pub viewers: usize,
    /// Seconds they ran.
    pub seconds: f64,
    /// Requests answered (any status).
    pub requests: u64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Body bytes received.
    pub bytes: u64,
    /// Egress, bits per second.
    pub egress_bits_per_s: f64,
    /// Server CPU seconds during the run (from /proc, when the pid was given).
    pub server_cpu_s: Option<f64>,
    /// Server CPU seconds per GB sent.
    pub server_cpu_s_per_gb: Option<f64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Announce delay, ms (see the module docs).
    pub announce_delay_ms: Percentiles,
    /// How long blocking reloads were held, ms.
    pub reload_wait_ms: Percentiles,
    /// Rendition switches made.
    pub switches: u64,
    /// From deciding to switch to holding the new rendition's first part, ms.
    pub switch_ms: Percentiles,
}

impl ViewersReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let cpu = self
            .server_cpu_s
            .map_or("n/a (no --server-pid)".into(), |c| format!("{c:.2}"));
        let per_gb = self
            .server_cpu_s_per_gb
            .map_or("n/a".into(), |c| format!("{c:.1}"));
        format!(
            "viewers              {}\nseconds              {:.1}\nrequests             {} ({:.0}/s)\n\
             egress               {:.2} Mbit/s ({} bytes)\nserver CPU           {cpu} s ({per_gb} s/GB)\n\
             errors               {errors}\nannounce delay (ms)  p50 {:.1}  p95 {:.1}  p99 {:.1}  (n={})\n\
             reload held (ms)     p50 {:.1}  p95 {:.1}  p99 {:.1}  (n={})\n\
             switches             {} (to the new rendition's first part, ms: p50 {:.1}  p99 {:.1})\n",
            self.viewers,
            self.seconds,
            self.requests,
            self.requests_per_s,
            self.egress_bits_per_s / 1e6,
            self.bytes,
            self.announce_delay_ms.p50,
            self.announce_delay_ms.p95,
            self.announce_delay_ms.p99,
            self.announce_delay_ms.n,
            self.reload_wait_ms.p50,
            self.reload_wait_ms.p95,
            self.reload_wait_ms.p99,
            self.reload_wait_ms.n,
            self.switches,
            self.switch_ms.p50,
            self.switch_ms.p99,
        )
    }
}

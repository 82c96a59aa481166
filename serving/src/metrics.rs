//! Service metrics in the Prometheus text format (written by hand: a few counters and
//! histograms do not need a metrics framework).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds (seconds) of the request latency histogram.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the faces-per-request histogram.
const FACE_BUCKETS: [f64; 8] = [0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0];

#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// (route, status) → count.
    requests: BTreeMap<(String, u16), u64>,
    /// route → latency histogram.
    latency: BTreeMap<String, Histogram>,
    faces: Option<Histogram>,
    faces_known: u64,
    faces_unknown: u64,
    deployment_version: u32,
    people: usize,
    embeddings: usize,
    swaps: u64,
}

/// Counters shared by every request.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A panic while holding the lock leaves counters that are still good to read.
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    pub fn record_request(&self, route: &str, status: u16, seconds: f64) {
        self.with(|m| {
            *m.requests.entry((route.to_string(), status)).or_insert(0) += 1;
            m.latency
                .entry(route.to_string())
                .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
                .observe(seconds);
        });
    }

    /// One identify answer: how many faces, how many of them unknown.
    pub fn record_faces(&self, known: usize, unknown: usize) {
        self.with(|m| {
            m.faces
                .get_or_insert_with(|| Histogram::new(&FACE_BUCKETS))
                .observe((known + unknown) as f64);
            m.faces_known += known as u64;
            m.faces_unknown += unknown as u64;
        });
    }

    pub fn set_deployment(&self, version: u32, people: usize, embeddings: usize, swapped: bool) {
        self.with(|m| {
            m.deployment_version = version;
            m.people = people;
            m.embeddings = embeddings;
            if swapped {
                m.swaps += 1;
            }
        });
    }

    /// The Prometheus exposition text.
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            out.push_str(
                "# HELP facepipe_http_requests_total HTTP requests by route and status.\n",
            );
            out.push_str("# TYPE facepipe_http_requests_total counter\n");
            for ((route, status), n) in &m.requests {
                let _ = writeln!(
                    out,
                    "facepipe_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
            out.push_str(
                "# HELP facepipe_http_request_duration_seconds Request latency by route.\n",
            );
            out.push_str("# TYPE facepipe_http_request_duration_seconds histogram\n");
            for (route, h) in &m.latency {
                h.write(
                    &mut out,
                    "facepipe_http_request_duration_seconds",
                    &format!("route=\"{route}\""),
                );
            }
            out.push_str("# HELP facepipe_faces_per_request Faces found per identify request.\n");
            out.push_str("# TYPE facepipe_faces_per_request histogram\n");
            m.faces
                .clone()
                .unwrap_or_else(|| Histogram::new(&FACE_BUCKETS))
                .write(&mut out, "facepipe_faces_per_request", "");
            out.push_str(
                "# HELP facepipe_faces_total Faces answered, by whether a person matched.\n",
            );
            out.push_str("# TYPE facepipe_faces_total counter\n");
            let _ = writeln!(
                out,
                "facepipe_faces_total{{result=\"known\"}} {}",
                m.faces_known
            );
            let _ = writeln!(
                out,
                "facepipe_faces_total{{result=\"unknown\"}} {}",
                m.faces_unknown
            );
            let total = m.faces_known + m.faces_unknown;
            let rate = if total == 0 {
                0.0
            } else {
                m.faces_unknown as f64 / total as f64
            };
            out.push_str(
                "# HELP facepipe_unknown_rate Share of faces matched to nobody since start.\n",
            );
            out.push_str("# TYPE facepipe_unknown_rate gauge\n");
            let _ = writeln!(out, "facepipe_unknown_rate {rate}");
            out.push_str(
                "# HELP facepipe_deployment_version The deployment version being served.\n",
            );
            out.push_str("# TYPE facepipe_deployment_version gauge\n");
            let _ = writeln!(out, "facepipe_deployment_version {}", m.deployment_version);
            out.push_str("# HELP facepipe_gallery_people People in the served gallery.\n");
            out.push_str("# TYPE facepipe_gallery_people gauge\n");
            let _ = writeln!(out, "facepipe_gallery_people {}", m.people);
            out.push_str("# HELP facepipe_gallery_embeddings Embeddings in the served gallery.\n");
            out.push_str("# TYPE facepipe_gallery_embeddings gauge\n");
            let _ = writeln!(out, "facepipe_gallery_embeddings {}", m.embeddings);
            out.push_str(
                "# HELP facepipe_deployment_swaps_total Deployments swapped in since start.\n",
            );
            out.push_str("# TYPE facepipe_deployment_swaps_total counter\n");
            let _ = writeln!(out, "facepipe_deployment_swaps_total {}", m.swaps);
            out
        })
    }
}

/// Admission gauges and the shed counter (read from the admission state at scrape time).
pub fn write_admission(out: &mut String, stats: &crate::admission::AdmissionStats) {
    out.push_str("# HELP facepipe_inference_slots Requests that may run inference at once.\n");
    out.push_str("# TYPE facepipe_inference_slots gauge\n");
    let _ = writeln!(out, "facepipe_inference_slots {}", stats.slots);
    out.push_str("# HELP facepipe_inference_in_flight Requests holding an inference slot.\n");
    out.push_str("# TYPE facepipe_inference_in_flight gauge\n");
    let _ = writeln!(out, "facepipe_inference_in_flight {}", stats.in_flight);
    out.push_str("# HELP facepipe_inference_waiting Requests waiting for a slot.\n");
    out.push_str("# TYPE facepipe_inference_waiting gauge\n");
    let _ = writeln!(out, "facepipe_inference_waiting {}", stats.waiting);
    out.push_str(
        "# HELP facepipe_requests_shed_total Requests answered 503 because no slot was free.\n",
    );
    out.push_str("# TYPE facepipe_requests_shed_total counter\n");
    let _ = writeln!(out, "facepipe_requests_shed_total {}", stats.shed_total);
}

/// Upload budget gauges and its shed counter (read at scrape time).
pub fn write_uploads(out: &mut String, stats: &crate::admission::UploadStats) {
    out.push_str(
        "# HELP facepipe_upload_budget_bytes Bytes of request bodies that may be held at once.\n",
    );
    out.push_str("# TYPE facepipe_upload_budget_bytes gauge\n");
    let _ = writeln!(out, "facepipe_upload_budget_bytes {}", stats.capacity_bytes);
    out.push_str(
        "# HELP facepipe_upload_reserved_bytes Bytes reserved by bodies being received or held.\n",
    );
    out.push_str("# TYPE facepipe_upload_reserved_bytes gauge\n");
    let _ = writeln!(
        out,
        "facepipe_upload_reserved_bytes {}",
        stats.reserved_bytes
    );
    out.push_str(
        "# HELP facepipe_uploads_shed_total Requests answered 503 because the upload budget was spent.\n",
    );
    out.push_str("# TYPE facepipe_uploads_shed_total counter\n");
    let _ = writeln!(out, "facepipe_uploads_shed_total {}", stats.shed_total);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record_request("/v1/identify", 200, 0.02);
        m.record_request("/v1/identify", 200, 0.2);
        m.record_faces(1, 1);
        m.set_deployment(7, 3, 9, true);
        let text = m.render();
        assert!(
            text.contains("facepipe_http_requests_total{route=\"/v1/identify\",status=\"200\"} 2")
        );
        assert!(text.contains(
            "facepipe_http_request_duration_seconds_bucket{route=\"/v1/identify\",le=\"0.025\"} 1"
        ));
        assert!(text.contains(
            "facepipe_http_request_duration_seconds_bucket{route=\"/v1/identify\",le=\"0.25\"} 2"
        ));
        assert!(text.contains("facepipe_faces_per_request_bucket{le=\"2\"} 1"));
        assert!(text.contains("facepipe_unknown_rate 0.5"));
        assert!(text.contains("facepipe_deployment_version 7"));
    }
}

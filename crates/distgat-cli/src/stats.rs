//! Process statistics for reports and benchmarks.

pub use distgat_partition::peak_rss_bytes;

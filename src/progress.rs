//! How far a running initial sync is, as `status` files, the API, `/metrics` and the terminal
//! show it: rows done, the source's estimated total, the rate and the ETA (computed from the
//! run the state store keeps, at a given time), and counts with thousands separators.

use serde::Serialize;

/// How far a running initial sync is. The total is the source tables' own estimate (their
/// statistics), so the percentage is approximate and capped at 99.9 until the run ends.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Source rows read so far, all directions.
    pub rows_done: u64,
    /// The sum of the directions' estimates; absent when an engine could not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Rows per second since the run started, rounded.
    pub rows_per_second: u64,
    /// When the run should end at this rate (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<String>,
}

impl Progress {
    /// The progress of `run` at `now`, while it is Running.
    pub fn of(
        run: &crate::state::InitialSyncRun,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<Self> {
        if run.status != crate::state::InitialSyncStatus::Running {
            return None;
        }
        let rows_done: u64 = run.directions.values().map(|c| c.read).sum();
        let estimated_total = run
            .directions
            .keys()
            .chain(run.estimated_rows.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|way| run.estimated_rows.get(way).copied())
            .sum::<Option<u64>>()
            // An estimate below what is done already is stale statistics.
            .map(|total| total.max(rows_done));
        let elapsed = run
            .started_at
            .as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|start| (now - start.with_timezone(&chrono::Utc)).as_seconds_f64())
            .filter(|secs| *secs > 0.0);
        let rate = elapsed.map_or(0.0, |secs| rows_done as f64 / secs);
        let percent = estimated_total
            .filter(|total| *total > 0)
            .map(|total| ((rows_done as f64 * 1000.0 / total as f64).round() / 10.0).min(99.9));
        let eta = estimated_total.filter(|_| rate > 0.0).map(|total| {
            let left = total.saturating_sub(rows_done) as f64 / rate;
            (now + chrono::Duration::seconds(left.round() as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        Some(Progress {
            rows_done,
            estimated_total,
            percent,
            rows_per_second: rate.round() as u64,
            eta,
        })
    }
}

impl std::fmt::Display for Progress {
    /// `30% of ~400,000 rows, 117,210 rows/s, ETA 2026-12-07T01:02:03Z`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.percent, self.estimated_total) {
            (Some(percent), Some(total)) => {
                write!(f, "{percent}% of ~{} rows", thousands(total))?;
            }
            _ => write!(f, "{} rows", thousands(self.rows_done))?,
        }
        write!(f, ", {} rows/s", thousands(self.rows_per_second))?;
        if let Some(eta) = &self.eta {
            write!(f, ", ETA {eta}")?;
        }
        Ok(())
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{DirectionCounts, InitialSyncRun, InitialSyncStatus as RunStatus};

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(117209), "117,209");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn progress_has_a_percentage_a_rounded_rate_and_an_eta_while_running() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T01:00:10Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut run = InitialSyncRun {
            status: RunStatus::Running,
            started_at: Some("2026-12-07T01:00:00Z".into()),
            ..Default::default()
        };
        run.directions.insert(
            "SourceToDestination".into(),
            DirectionCounts {
                read: 100_001,
                written: 100_000,
                errors: 1,
            },
        );
        run.estimated_rows
            .insert("SourceToDestination".into(), 400_000);
        let p = Progress::of(&run, now).unwrap();
        assert_eq!(p.rows_done, 100_001);
        assert_eq!(p.estimated_total, Some(400_000));
        assert_eq!(p.percent, Some(25.0));
        assert_eq!(p.rows_per_second, 10_000);
        assert_eq!(p.eta.as_deref(), Some("2026-12-07T01:00:40Z"));
        assert_eq!(
            p.to_string(),
            "25% of ~400,000 rows, 10,000 rows/s, ETA 2026-12-07T01:00:40Z"
        );
        // A direction without an estimate: no total, no percentage, no ETA.
        run.directions
            .insert("DestinationToSource".into(), DirectionCounts::default());
        let p = Progress::of(&run, now).unwrap();
        assert_eq!((p.estimated_total, p.percent, p.eta), (None, None, None));
        // Stale statistics never give more than 99.9 % or a total below what is done.
        run.directions.remove("DestinationToSource");
        run.estimated_rows
            .insert("SourceToDestination".into(), 50_000);
        let p = Progress::of(&run, now).unwrap();
        assert_eq!((p.estimated_total, p.percent), (Some(100_001), Some(99.9)));
        run.status = RunStatus::Completed;
        assert_eq!(Progress::of(&run, now), None);
    }
}

//! `dualwrite run` on the command line: its clap options, the duration syntax they take, and
//! turning them into [`crate::service::Options`]. The service itself knows nothing of clap.

use std::time::Duration;

use crate::service;

/// Options of `dualwrite run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Full reconcile at least this often (e.g. 30s, 5m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How often endpoints without change notifications (SQLite, MySQL) are polled for new
    /// captured changes (e.g. 500ms, 1s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Run `git pull --ff-only` in the config repository on every timer tick.
    #[arg(long)]
    pub pull: bool,
    /// Address of the HTTP endpoint (metrics, health, JSON API). Loopback unless told.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Lease time-to-live of the maps this process drives (other processes on the same state
    /// store share them): a map whose owner stops renewing moves to another after this.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// This process's name among those sharing the state store (default: host:pid).
    #[arg(long)]
    pub holder_id: Option<String>,
    #[command(flatten)]
    pub commit: super::StatusCommitArgs,
    #[command(flatten)]
    pub dashboard: DashboardArgs,
}

/// Options of the web dashboard, for `run` and `dashboard`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DashboardArgs {
    /// Allow Retry and Dismiss from the dashboard for whoever signs in with the token held
    /// in this environment variable (`user:secret`, or the secret with --dashboard-user).
    /// Without it the dashboard is read-only.
    #[arg(long, value_name = "VAR")]
    pub dashboard_token_from_env: Option<String>,
    /// The dashboard user (the author of the request commits), when the token does not
    /// name it.
    #[arg(long, value_name = "NAME", requires = "dashboard_token_from_env")]
    pub dashboard_user: Option<String>,
}

impl DashboardArgs {
    /// The dashboard's options; the token's variable must be set.
    pub fn options(&self) -> Result<crate::dashboard::Options, String> {
        let token = match &self.dashboard_token_from_env {
            None => None,
            Some(var) => {
                let value = std::env::var(var)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("--dashboard-token-from-env: ${var} is not set"))?;
                Some(
                    crate::dashboard::Token::parse(&value, self.dashboard_user.as_deref())
                        .map_err(|e| format!("--dashboard-token-from-env {var}: {e}"))?,
                )
            }
        };
        Ok(crate::dashboard::Options { token })
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl RunArgs {
    /// The service's options.
    pub fn options(&self) -> Result<service::Options, String> {
        Ok(service::Options {
            interval: self.interval,
            poll_interval: self.poll_interval,
            pull: self.pull,
            listen: self.listen,
            log_format: match self.log_format {
                LogFormat::Text => service::LogFormat::Text,
                LogFormat::Json => service::LogFormat::Json,
            },
            lease_ttl: self.lease_ttl,
            holder_id: self.holder_id.clone(),
            commit: self.commit.options(),
            dashboard: self.dashboard.options()?,
        })
    }
}

/// `500ms`, `2s`, `15m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (e.g. 500ms, 30s, 5m, 1h)");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "s", "10", "0s", "1x", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

//! How old each provider's table is: the gauge `netmeter_attributor_cloud_ranges_age_seconds`
//! `{cloud}`, kept current every minute whether or not refresh is on, and one warning per
//! provider table once it is older than [`MAX_AGE`]. Providers add and move prefixes every
//! week; a table months old labels new cloud addresses as internet.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Cloud, ProviderRanges, SharedCloudRanges};

/// A provider's table older than this is reported as stale.
pub const MAX_AGE: Duration = Duration::from_secs(90 * 86_400);
/// How often the age gauge is updated.
const UPDATE_EVERY: Duration = Duration::from_secs(60);

/// Until `shutdown`, every minute (the first time right away), sets each provider's age gauge
/// from the table in use, and warns once per provider table past [`MAX_AGE`].
pub async fn age_loop(ranges: SharedCloudRanges, shutdown: CancellationToken) {
    let mut watch = AgeWatch::default();
    let mut ticks = tokio::time::interval(UPDATE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        watch.update(&ranges.providers(), SystemTime::now());
    }
}

/// The tables already warned about: (provider, publication time), so a refresh that brings a
/// file that is still old warns again, and an unchanged table does not.
#[derive(Debug, Default)]
struct AgeWatch {
    warned: Vec<(Cloud, SystemTime)>,
}

impl AgeWatch {
    /// Sets the gauges; returns the providers warned about now.
    fn update(&mut self, providers: &[ProviderRanges], now: SystemTime) -> Vec<Cloud> {
        let mut warned_now = Vec::new();
        for provider in providers {
            let age = provider.age(now);
            metrics::gauge!(crate::metric_list::CLOUD_RANGES_AGE.name, "cloud" => provider.cloud.name())
                .set(age.as_secs_f64());
            let table = (provider.cloud, provider.published);
            if age > MAX_AGE && !self.warned.contains(&table) {
                self.warned.push(table);
                RangesStale { provider, age }.emit();
                warned_now.push(provider.cloud);
            }
        }
        warned_now
    }
}

/// A provider's table is older than [`MAX_AGE`].
struct RangesStale<'a> {
    provider: &'a ProviderRanges,
    age: Duration,
}

impl RangesStale<'_> {
    fn emit(&self) {
        let cloud = self.provider.cloud;
        tracing::warn!(
            cloud = cloud.name(),
            from = %self.provider.source,
            published = %humantime::format_rfc3339_seconds(self.provider.published),
            age_days = self.age.as_secs() / 86_400,
            max_age_days = MAX_AGE.as_secs() / 86_400,
            "cloud ranges are stale: new {} addresses are labelled as internet. Refresh them: \
             --cloud-ranges-refresh 24h with a writable --cloud-ranges-dir, or put a current \
             {} there ({})",
            cloud.title(),
            cloud.file_name(),
            cloud.download_hint(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::RangeSource;

    const DAY: Duration = Duration::from_secs(86_400);

    fn provider(cloud: Cloud, published: SystemTime) -> ProviderRanges {
        ProviderRanges {
            cloud,
            source: RangeSource::Embedded,
            published,
            prefixes: 1,
        }
    }

    #[test]
    fn ages_count_from_publication_and_never_go_negative() {
        let published = SystemTime::UNIX_EPOCH + 20_000 * DAY;
        let p = provider(Cloud::Aws, published);
        assert_eq!(p.age(published + 3 * DAY), 3 * DAY);
        assert_eq!(p.age(published - DAY), Duration::ZERO);
    }

    #[test]
    fn a_stale_table_is_warned_about_once_and_again_after_a_refresh_that_is_still_stale() {
        let now = SystemTime::UNIX_EPOCH + 20_000 * DAY;
        let mut watch = AgeWatch::default();
        let fresh = provider(Cloud::Gcp, now - 10 * DAY);
        let at_limit = provider(Cloud::Azure, now - MAX_AGE + DAY / 2);
        let stale = provider(Cloud::Aws, now - MAX_AGE - DAY);
        let tables = [stale.clone(), fresh.clone(), at_limit.clone()];
        assert_eq!(watch.update(&tables, now), [Cloud::Aws]);
        assert_eq!(watch.update(&tables, now + UPDATE_EVERY), []);
        // Azure crosses the limit while running.
        assert_eq!(watch.update(&tables, now + DAY), [Cloud::Azure]);
        // A refresh brings a newer AWS file that is still too old, then a current one.
        let newer_but_stale = provider(Cloud::Aws, now - MAX_AGE + 10 * DAY);
        let tables = [newer_but_stale, fresh.clone(), at_limit.clone()];
        assert_eq!(watch.update(&tables, now + 20 * DAY), [Cloud::Aws]);
        let current = provider(Cloud::Aws, now + 20 * DAY);
        assert_eq!(
            watch.update(&[current, fresh, at_limit], now + 21 * DAY),
            []
        );
    }
}

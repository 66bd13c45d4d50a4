//! The reconcile schedule: sleeps until the next fire time of the cron expression (UTC),
//! then sends [`Control::CronTick`]. The next fire time is published for `status`; a new
//! schedule (SIGHUP) takes effect immediately.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::daemon::config::Schedule;
use crate::daemon::control::Control;

/// The next fire time strictly after both `now` and the previous fire time (so a timer
/// that wakes a little early never fires the same slot twice).
pub fn next_fire(
    schedule: Option<&Schedule>,
    now: DateTime<Utc>,
    last_fired: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let from = last_fired.map_or(now, |l| l.max(now));
    schedule?.next_after(from)
}

/// Run the schedule until `shutdown`.
pub async fn run(
    mut schedule: watch::Receiver<Option<Schedule>>,
    next_tx: watch::Sender<Option<DateTime<Utc>>>,
    control: mpsc::Sender<Control>,
    shutdown: CancellationToken,
) {
    let mut last_fired = None;
    loop {
        let current = schedule.borrow_and_update().clone();
        let next = next_fire(current.as_ref(), Utc::now(), last_fired);
        next_tx.send_replace(next);
        let wait = next.map(|t| (t - Utc::now()).to_std().unwrap_or_default());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = schedule.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    None => std::future::pending().await,
                }
            } => {
                last_fired = next;
                if control.send(Control::CronTick).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_five_minutes_fires_on_the_next_multiple_of_five() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 10, 7, 30).unwrap();
        let want = Utc.with_ymd_and_hms(2026, 1, 1, 10, 10, 0).unwrap();
        assert_eq!(next_fire(Some(&s), now, None), Some(want));
    }

    #[test]
    fn early_wake_does_not_fire_the_same_slot_twice() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let fired = Utc.with_ymd_and_hms(2026, 1, 1, 10, 10, 0).unwrap();
        let early = fired - chrono::Duration::milliseconds(3);
        let want = Utc.with_ymd_and_hms(2026, 1, 1, 10, 15, 0).unwrap();
        assert_eq!(next_fire(Some(&s), early, Some(fired)), Some(want));
    }

    #[test]
    fn disabled_schedule_never_fires() {
        assert_eq!(next_fire(None, Utc::now(), None), None);
    }

    #[tokio::test]
    async fn seconds_schedule_sends_ticks_and_publishes_next_time() {
        let s = Schedule::parse("* * * * * *").unwrap();
        let (_stx, srx) = watch::channel(Some(s));
        let (ntx, nrx) = watch::channel(None);
        let (ctx, mut crx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(srx, ntx, ctx, stop.clone()));
        let tick = tokio::time::timeout(std::time::Duration::from_secs(3), crx.recv()).await;
        assert!(matches!(tick, Ok(Some(Control::CronTick))));
        assert!(nrx.borrow().is_some());
        stop.cancel();
        task.await.unwrap();
    }
}

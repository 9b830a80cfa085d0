//! The capture wall clock of RTP media: RTCP sender reports map RTP time to NTP time
//! per stream, when their clock is within a day of ours; otherwise arrival time.

use std::time::{Duration, SystemTime};

/// Sender-report clocks further than this from ours are not wall clocks.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(24 * 3600);

/// Maps RTP time to wall-clock time per stream, from sender reports.
#[derive(Default)]
pub(super) struct Timing {
    pub(super) last_video: Option<i64>,
    /// Per stream: (RTP elapsed, wall time) of the last usable sender report.
    reports: Vec<(usize, i64, SystemTime)>,
    warned_clock: bool,
}

impl Timing {
    pub(super) fn wall(
        &self,
        stream: usize,
        elapsed: i64,
        clock_rate: u32,
        now: SystemTime,
    ) -> SystemTime {
        let Some(&(_, at, wall)) = self.reports.iter().find(|(s, ..)| *s == stream) else {
            return now;
        };
        let delta_ticks = elapsed - at;
        let delta = Duration::from_nanos(
            delta_ticks.unsigned_abs() * 1_000_000_000 / u64::from(clock_rate.max(1)),
        );
        if delta_ticks >= 0 {
            wall + delta
        } else {
            wall - delta
        }
    }

    pub(super) fn sender_report(
        &mut self,
        name: &str,
        rtcp: &retina::rtcp::ReceivedCompoundPacket,
        now: SystemTime,
    ) {
        let Some(rtp) = rtcp.rtp_timestamp() else {
            return;
        };
        let Some(Ok(Some(report))) = rtcp.pkts().next().map(|p| p.as_sender_report()) else {
            return;
        };
        let wall = ntp_to_system_time(report.ntp_timestamp().0);
        let skew = wall.duration_since(now).unwrap_or_else(|e| e.duration());
        if skew > MAX_CLOCK_SKEW {
            if !self.warned_clock {
                tracing::info!(
                    source = %name,
                    skew_s = skew.as_secs(),
                    "RTCP sender reports do not carry a wall clock; using arrival times"
                );
                self.warned_clock = true;
            }
            return;
        }
        let stream = rtcp.stream_id();
        self.reports.retain(|(s, ..)| *s != stream);
        self.reports.push((stream, rtp.elapsed(), wall));
    }
}

/// NTP (seconds since 1900 in the high 32 bits, fraction in the low) to system time.
fn ntp_to_system_time(ntp: u64) -> SystemTime {
    const NTP_TO_UNIX_SECS: u64 = 2_208_988_800;
    let secs = (ntp >> 32).saturating_sub(NTP_TO_UNIX_SECS);
    let nanos = ((ntp & 0xffff_ffff) * 1_000_000_000) >> 32;
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_maps_to_unix_time() {
        // 2024-01-01T00:00:00Z is 1704067200 s after the Unix epoch.
        let ntp = (1_704_067_200u64 + 2_208_988_800) << 32 | (1u64 << 31);
        let at = ntp_to_system_time(ntp);
        assert_eq!(
            at.duration_since(SystemTime::UNIX_EPOCH).ok(),
            Some(Duration::from_millis(1_704_067_200_500))
        );
    }
}

//! When to mint a fresh token.

use std::time::{Duration, Instant};

/// How long one token is advertised before it is replaced (R2: tokens must
/// not become long-lived identifiers).
pub const TOKEN_ROTATION: Duration = Duration::from_secs(15 * 60);

/// Shortest rotation period [`Rotation`] accepts; shorter periods are raised
/// to it. mDNS probing and announcing take about a second, so a token that
/// lives less than that is never seen.
pub const MIN_TOKEN_ROTATION: Duration = Duration::from_secs(1);

/// What the driver must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum RotationOutput {
    /// Mint a token with a fresh nonce, advertise it and withdraw the old one.
    Rotate,
    /// Nothing to do before this instant; then call
    /// [`Rotation::handle_timeout`].
    Timeout(Instant),
}

/// The token rotation schedule, in the str0m shape.
///
/// Feed inputs with `handle_*`, then drain [`poll_output`](Self::poll_output)
/// until it returns [`RotationOutput::Timeout`]; at that instant call
/// [`handle_timeout`](Self::handle_timeout) and drain again. The first poll
/// always yields [`RotationOutput::Rotate`]. A rotation is due when the
/// period has elapsed since the last one, or after a network change, so that
/// a device joining a new network never shows it the token it used on the
/// last one (R2).
#[derive(Debug, Clone)]
pub struct Rotation {
    period: Duration,
    last_rotation: Option<Instant>,
    due: bool,
}

impl Rotation {
    /// A schedule rotating every `period` (at least [`MIN_TOKEN_ROTATION`]).
    pub fn new(period: Duration) -> Self {
        Self {
            period: period.max(MIN_TOKEN_ROTATION),
            last_rotation: None,
            due: true,
        }
    }

    /// The rotation period in use.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Time has advanced to `now`; a rotation becomes due if the period has
    /// elapsed since the last one.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.last_rotation {
            Some(last) if now.saturating_duration_since(last) < self.period => {}
            _ => self.due = true,
        }
    }

    /// The device's network changed (new Wi-Fi, new address): rotate at once.
    pub fn handle_network_change(&mut self) {
        self.due = true;
    }

    /// The next thing to do. `now` stamps a rotation returned here as the
    /// start of the new period.
    pub fn poll_output(&mut self, now: Instant) -> RotationOutput {
        if self.due {
            self.due = false;
            self.last_rotation = Some(now);
            return RotationOutput::Rotate;
        }
        match self.last_rotation {
            Some(last) => RotationOutput::Timeout(last + self.period),
            // Unreachable in practice: `due` starts true and the first poll
            // sets `last_rotation`. Answering `Rotate` keeps it total.
            None => {
                self.last_rotation = Some(now);
                RotationOutput::Rotate
            }
        }
    }
}

impl Default for Rotation {
    fn default() -> Self {
        Self::new(TOKEN_ROTATION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(60);

    #[test]
    fn first_poll_rotates_then_waits_a_period() {
        let t0 = Instant::now();
        let mut rotation = Rotation::new(PERIOD);
        assert_eq!(rotation.poll_output(t0), RotationOutput::Rotate);
        assert_eq!(
            rotation.poll_output(t0),
            RotationOutput::Timeout(t0 + PERIOD)
        );
    }

    #[test]
    fn rotates_when_the_period_elapses() {
        let t0 = Instant::now();
        let mut rotation = Rotation::new(PERIOD);
        let _ = rotation.poll_output(t0);

        // Too early: nothing due.
        rotation.handle_timeout(t0 + PERIOD / 2);
        assert_eq!(
            rotation.poll_output(t0 + PERIOD / 2),
            RotationOutput::Timeout(t0 + PERIOD)
        );

        let t1 = t0 + PERIOD;
        rotation.handle_timeout(t1);
        assert_eq!(rotation.poll_output(t1), RotationOutput::Rotate);
        assert_eq!(
            rotation.poll_output(t1),
            RotationOutput::Timeout(t1 + PERIOD)
        );
    }

    #[test]
    fn late_timeout_restarts_the_period_from_the_rotation() {
        let t0 = Instant::now();
        let mut rotation = Rotation::new(PERIOD);
        let _ = rotation.poll_output(t0);
        let late = t0 + 3 * PERIOD + Duration::from_secs(7);
        rotation.handle_timeout(late);
        assert_eq!(rotation.poll_output(late), RotationOutput::Rotate);
        assert_eq!(
            rotation.poll_output(late),
            RotationOutput::Timeout(late + PERIOD)
        );
    }

    #[test]
    fn network_change_rotates_at_once() {
        let t0 = Instant::now();
        let mut rotation = Rotation::new(PERIOD);
        let _ = rotation.poll_output(t0);
        let t1 = t0 + Duration::from_secs(5);
        rotation.handle_network_change();
        rotation.handle_network_change(); // coalesces
        assert_eq!(rotation.poll_output(t1), RotationOutput::Rotate);
        assert_eq!(
            rotation.poll_output(t1),
            RotationOutput::Timeout(t1 + PERIOD)
        );
    }

    #[test]
    fn zero_period_is_raised_to_the_minimum() {
        let t0 = Instant::now();
        let mut rotation = Rotation::new(Duration::ZERO);
        assert_eq!(rotation.period(), MIN_TOKEN_ROTATION);
        let _ = rotation.poll_output(t0);
        rotation.handle_timeout(t0);
        assert_eq!(
            rotation.poll_output(t0),
            RotationOutput::Timeout(t0 + MIN_TOKEN_ROTATION)
        );
    }

    #[test]
    fn default_period_is_fifteen_minutes() {
        assert_eq!(Rotation::default().period(), Duration::from_secs(900));
    }
}

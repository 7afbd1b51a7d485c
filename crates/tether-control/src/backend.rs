//! The vehicle behind the service: signal reads and actuations.

use tether_proto::v1::{CommandReason, WindowPosition, signal_value::Value, vehicle_command};

use crate::signals::Signal;

/// One physical action the car can take. The service builds it from a
/// `VehicleCommand` with [`Actuation::from_command`], after the role check and
/// the idempotency check, so a backend sees each accepted command at most once.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Actuation {
    /// Central locking: lock every door.
    Lock,
    /// Central locking: unlock every door.
    Unlock,
    /// Switch climate control; `target_celsius: None` keeps the current target.
    Climate {
        /// Run climate control.
        on: bool,
        /// New target cabin temperature, °C.
        target_celsius: Option<f32>,
    },
    /// Move every window to `percent_open` (0 closed, 100 fully open).
    Window {
        /// 0..=100.
        percent_open: u8,
    },
    /// Flash the lights and/or sound the horn once, to find the car.
    FlashHonk {
        /// Flash the lights.
        flash: bool,
        /// Sound the horn.
        honk: bool,
    },
}

impl Actuation {
    /// Translates a wire command. An argument the car cannot act on is
    /// `Err(INVALID_ARGUMENT)`; the service turns that into a signed
    /// REJECTED receipt rather than a protocol error, because the request
    /// itself was well formed.
    pub fn from_command(command: &vehicle_command::Command) -> Result<Self, CommandReason> {
        use vehicle_command::Command as C;
        Ok(match command {
            C::Lock(_) => Actuation::Lock,
            C::Unlock(_) => Actuation::Unlock,
            C::Climate(c) => {
                if !c.target_celsius.is_finite() {
                    return Err(CommandReason::InvalidArgument);
                }
                // Proto: a target of 0 leaves it unchanged.
                let target_celsius = (c.target_celsius != 0.0).then_some(c.target_celsius);
                Actuation::Climate {
                    on: c.on,
                    target_celsius,
                }
            }
            C::Window(w) => {
                let percent_open = match WindowPosition::try_from(w.position) {
                    Ok(WindowPosition::Closed) => 0,
                    Ok(WindowPosition::Open) => 100,
                    // Clamped rather than refused: 150 % open means fully open.
                    Ok(WindowPosition::Percent) => w.percent_open.min(100) as u8,
                    Ok(WindowPosition::Unspecified) | Err(_) => {
                        return Err(CommandReason::InvalidArgument);
                    }
                };
                Actuation::Window { percent_open }
            }
            C::FlashHonk(f) => {
                if !f.flash && !f.honk {
                    return Err(CommandReason::InvalidArgument);
                }
                Actuation::FlashHonk {
                    flash: f.flash,
                    honk: f.honk,
                }
            }
        })
    }
}

/// Why the car did not carry out an actuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActuationError {
    /// The car refused before changing anything (e.g. locking while a door is
    /// open: `IN_USE`). Reported as `COMMAND_STATE_REJECTED`.
    #[error("rejected by the vehicle: {}", .0.as_str_name())]
    Rejected(CommandReason),
    /// The car tried and did not finish (an actuator fault). Reported as
    /// `COMMAND_STATE_FAILED`; the car may be partly changed.
    #[error("failed in the vehicle: {}", .0.as_str_name())]
    Failed(CommandReason),
}

/// The car as the service sees it. Implementations are synchronous and read
/// no clock: time arrives as `now_ms`, the caller's monotonic milliseconds.
pub trait VehicleBackend {
    /// The current value of a catalogue signal, or `None` if this car does
    /// not have it. The value's arm must match `signal.value_type`.
    fn read(&self, signal: &Signal) -> Option<Value>;

    /// Carries out one actuation. Called at most once per accepted command.
    fn execute(&mut self, actuation: &Actuation, now_ms: u64) -> Result<(), ActuationError>;

    /// Advances the car's own dynamics to `now_ms`. Called before every read
    /// and every actuation; `now_ms` never goes backwards.
    fn tick(&mut self, now_ms: u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::v1::{Climate, FlashHonk, Window};

    #[test]
    fn window_percent_is_clamped_and_unspecified_is_invalid() {
        let w = |position: WindowPosition, percent_open| {
            Actuation::from_command(&vehicle_command::Command::Window(Window {
                position: position as i32,
                percent_open,
            }))
        };
        assert_eq!(
            w(WindowPosition::Percent, 250),
            Ok(Actuation::Window { percent_open: 100 })
        );
        assert_eq!(
            w(WindowPosition::Closed, 40),
            Ok(Actuation::Window { percent_open: 0 })
        );
        assert_eq!(
            w(WindowPosition::Unspecified, 40),
            Err(CommandReason::InvalidArgument)
        );
    }

    #[test]
    fn climate_target_zero_keeps_target_and_nan_is_invalid() {
        let c = |on, target_celsius| {
            Actuation::from_command(&vehicle_command::Command::Climate(Climate {
                on,
                target_celsius,
            }))
        };
        assert_eq!(
            c(true, 0.0),
            Ok(Actuation::Climate {
                on: true,
                target_celsius: None
            })
        );
        assert_eq!(c(true, f32::NAN), Err(CommandReason::InvalidArgument));
        let nothing = vehicle_command::Command::FlashHonk(FlashHonk {
            flash: false,
            honk: false,
        });
        assert_eq!(
            Actuation::from_command(&nothing),
            Err(CommandReason::InvalidArgument)
        );
    }
}

//! The owner confirms on the phone at run time (R23; SPEC §18.7): a task
//! that would unlock or open the parked car waits for the owner's answer.
//! The questions reach the app through a callback, like signal updates.

use std::sync::Arc;

use tether_node::tether_automation::VehicleCommand;

use crate::records::VehicleAction;
use crate::runtime::{Background, guard, run, runtime};
use crate::{TetherError, VehicleLink};

/// A question from the car: may task `task_name` send `command` now?
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Confirmation {
    /// Answer with `VehicleLink.answer_confirmation(id, …)`.
    pub id: u64,
    /// The task waiting.
    pub task_id: u64,
    /// Its name, to show.
    pub task_name: String,
    /// The command it would send (`Unlock`, or `Window` above 0 %).
    pub command: VehicleAction,
    /// The car's Unix milliseconds after which the command does not run
    /// (the question is then withdrawn).
    pub deadline_ms: u64,
}

fn action_of(command: VehicleCommand) -> VehicleAction {
    match command {
        VehicleCommand::Lock => VehicleAction::Lock,
        VehicleCommand::Unlock => VehicleAction::Unlock,
        VehicleCommand::Climate { on, target_celsius } => {
            VehicleAction::Climate { on, target_celsius }
        }
        VehicleCommand::Window { percent_open } => VehicleAction::Window { percent_open },
        VehicleCommand::FlashHonk { flash, honk } => VehicleAction::FlashHonk { flash, honk },
    }
}

/// Hears the car's questions for the owner. Implemented by the app; called
/// on a Tether runtime thread, one call at a time, in order. Show the
/// question, and answer from your own thread with `answer_confirmation`
/// (never from inside the callback).
#[uniffi::export(callback_interface)]
pub trait ConfirmationListener: Send + Sync {
    /// A task waits for the owner: first each question pending when the
    /// watch starts, then each new one.
    fn on_question(&self, question: Confirmation);
    /// Question `id` is over: answered (here or on another phone), past its
    /// deadline, or its run ended. Take it off the screen.
    fn on_withdrawn(&self, id: u64);
    /// The watch ended: `error` is `None` when the car ended it, or says
    /// why (session lost, listener failed). Not called after
    /// `ConfirmationWatch.cancel()`.
    fn on_closed(&self, error: Option<String>);
}

/// A running confirmation watch. Cancelling it, or destroying the object,
/// stops the callbacks.
#[derive(Debug, uniffi::Object)]
pub struct ConfirmationWatch {
    task: Background,
}

#[uniffi::export]
impl ConfirmationWatch {
    /// Stops the callbacks; none is made afterwards. Idempotent.
    pub fn cancel(&self) {
        self.task.cancel();
    }

    /// Whether questions may still arrive.
    pub fn is_active(&self) -> bool {
        self.task.is_active()
    }
}

#[uniffi::export]
impl VehicleLink {
    /// Follows the car's questions for the owner (R23): a task that would
    /// unlock or open the car runs only once the owner confirms it here,
    /// before its deadline, and while the car is still parked. `listener`
    /// hears each question and its withdrawal until the returned watch is
    /// cancelled or destroyed, or the session ends (then `on_closed` is
    /// called once). For the owner's phone and watch.
    pub async fn watch_confirmations(
        &self,
        listener: Box<dyn ConfirmationListener>,
    ) -> Result<Arc<ConfirmationWatch>, TetherError> {
        let inner = self.node().clone();
        let mut questions = run(async move { inner.watch_confirmations().await }).await?;
        let listener: Arc<dyn ConfirmationListener> = Arc::from(listener);
        let task = runtime()?.spawn(async move {
            let reason = loop {
                let l = listener.clone();
                // A panicking listener ends the watch, not the runtime.
                let delivered = match questions.next().await {
                    Ok(Some(q)) if q.withdrawn => guard(|| {
                        l.on_withdrawn(q.id);
                        Ok(())
                    }),
                    Ok(Some(q)) => {
                        let Some(command) = q.command else {
                            break Some(
                                TetherError::UnexpectedResponse {
                                    detail: "a question without its command".into(),
                                }
                                .to_string(),
                            );
                        };
                        let question = Confirmation {
                            id: q.id,
                            task_id: q.task_id,
                            task_name: q.task_name,
                            command: action_of(command),
                            deadline_ms: q.deadline_ms,
                        };
                        guard(|| {
                            l.on_question(question);
                            Ok(())
                        })
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(TetherError::from(e).to_string()),
                };
                if delivered.is_err() {
                    break Some("the listener panicked".to_owned());
                }
            };
            let _ = guard(|| {
                listener.on_closed(reason);
                Ok(())
            });
        });
        Ok(Arc::new(ConfirmationWatch {
            task: Background::new(task.abort_handle()),
        }))
    }

    /// Answers question `id`: `confirm = true` lets the command run (if
    /// the car is still parked), `false` declines it; either way the run's
    /// trace records it. A question no longer pending (answered, withdrawn)
    /// is `TetherError.Control` with `ERROR_CODE_NOT_FOUND`.
    pub async fn answer_confirmation(&self, id: u64, confirm: bool) -> Result<(), TetherError> {
        let inner = self.node().clone();
        run(async move { inner.answer_confirmation(id, confirm).await }).await
    }
}

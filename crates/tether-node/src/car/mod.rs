//! The head unit's role (the car): its facade ([`head_unit`]), the vehicle
//! service it serves to members' sessions ([`serve`]) with its command log
//! ([`receipt_log`]), the actuator of its super tasks ([`tasks`]) and
//! its mailbox on the relay ([`mailbox`]).

pub(crate) mod head_unit;
pub(crate) mod mailbox;
pub(crate) mod receipt_log;
pub(crate) mod serve;
pub(crate) mod tasks;

//! The demo's device removal steps (SPEC §3.6): the owner's phone enrolls a
//! second phone, the phone is lost, the owner removes it, and the car
//! refuses it from the owner's next contact on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tether_node::signals;
use tether_node::{HeadUnit, NodeConfig, NodeError, Phone, Role};

use crate::narrate::Narrator;

/// How long the lost phone browses for the car's new token.
const LOST_BROWSE: Duration = Duration::from_secs(3);

/// Runs the two removal steps against the running `car` at `address`.
pub(crate) async fn removal_steps(
    config: &NodeConfig,
    owner: &Phone,
    car: &HeadUnit,
    address: SocketAddr,
    n: &mut Narrator,
    extra: &mut serde_json::Value,
) -> Result<(), NodeError> {
    // A second phone of the owner's, enrolled by the owner's authority and
    // served by the car, until it is lost.
    let t = Instant::now();
    let lost = Phone::open(config.clone())?;
    lost.complete_enrollment(&owner.enroll_device(&lost.enrollment_request(Role::Phone)?)?)?;
    let lost_link = lost.connect(address).await?;
    let served = lost_link.get(vec![signals::RANGE.into()]).await.is_ok();
    let removal = owner.remove_device(lost.public_key()?)?;
    // The owner's next contact hands the list and the new key to the car,
    // which closes the lost phone's live session at once.
    let owner_link = owner.connect(address).await?;
    let revoked = tokio::time::timeout(Duration::from_secs(1), lost_link.session().closed())
        .await
        .is_ok();
    let owner_served = owner_link.get(vec![signals::RANGE.into()]).await.is_ok();
    owner_link.close();
    extra["removal"] = json!({
        "serial": removal.serial,
        "group_key_epoch": removal.group_key_epoch,
        "car_serial": car.revocation_serial(),
    });
    n.record(
        "owner removes a lost phone",
        t,
        if served && revoked && owner_served && car.revocation_serial() == removal.serial {
            Ok(format!(
                "revocation list #{} and group key epoch {} signed on the owner's phone, handed to the car on contact; the lost phone's session closed",
                removal.serial, removal.group_key_epoch
            ))
        } else {
            Err(format!(
                "lost phone served before: {served}; its session closed within 1 s: {revoked}; owner served: {owner_served}; car holds list #{}",
                car.revocation_serial()
            ))
        },
    );

    // Cold, without the ticket it held: refused; the car's new token does
    // not resolve under the key it still holds.
    let t = Instant::now();
    lost.forget_tickets().await?;
    let again = lost.connect(address).await;
    let token = car.current_token().await.unwrap_or_default();
    let seen = lost.discover(LOST_BROWSE).await?;
    let resolves_new = seen.resolved.iter().any(|v| v.token == token);
    n.record(
        "car refuses the lost phone",
        t,
        match again {
            Err(e) if e.is_refused() && !resolves_new => {
                Ok("its certificate is on the list: refused; the car's new token does not resolve for it".into())
            }
            Err(e) if !resolves_new => Err(format!("failed, but not as a refusal: {e}")),
            Err(_) => Err("the lost phone resolved the car's new-epoch token".into()),
            Ok(_) => Err("the car served the removed phone".into()),
        },
    );
    Ok(())
}

//! The car's super tasks and its bound devices (SPEC §18.6): the service
//! keeps the automation host's catalogue in step with the bindings, marks
//! the tasks of an unbound device broken, hands it every value a device
//! reports, and performs the tasks' writes and actions.

use super::*;

/// What a task asks of a bound device.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskControl {
    /// Write one property.
    Set(PropertyId, Value),
    /// Run an action with these arguments.
    Action(DeviceActionId, Vec<Value>),
}

/// How a device answered a command: `Err` says why it did not take it.
pub(super) type Acknowledgement = Result<(), String>;

impl DeviceService {
    /// From now on the car's tasks follow the bound devices: the catalogue,
    /// unbinding, reported values.
    pub(crate) fn follow_automation(&self, host: &Arc<AutomationHost>) {
        if self.automation.set(Arc::downgrade(host)).is_err() {
            warn!("the device service already follows an automation host");
        }
    }

    pub(super) fn automation(&self) -> Option<Arc<AutomationHost>> {
        self.automation.get()?.upgrade()
    }

    /// Every bound device whose model is known, online or not, as tasks
    /// name it ([`task_device_id`]) and with what it offers. Offline devices
    /// attached physically are not among them: a phone never learns their
    /// handles (R12) and the car has no driver for their ports.
    pub(crate) fn task_devices(&self) -> Result<Vec<(DeviceId, DeviceSpec)>, NodeError> {
        let store = lock(&self.store);
        let manager = lock(&self.manager);
        Ok(store
            .list_bindings()?
            .iter()
            .filter_map(|binding| {
                let model = manager.catalogue().get(binding.product_model)?;
                let handle = manager.handle_of(&DeviceRef::Bound(binding.device_key));
                Some((task_device_id(&handle.0), device_spec(model)))
            })
            .collect())
    }

    /// Hands the automation host the catalogue as the bindings are now.
    pub(super) fn refresh_catalogue(&self) {
        let Some(host) = self.automation() else {
            return;
        };
        match self.task_devices() {
            Ok(devices) => host.set_catalogue(car_catalogue(devices)),
            // The previous catalogue stays: better than one without devices.
            Err(e) => warn!(error = %e, "the tasks' device catalogue could not be rebuilt"),
        }
    }

    /// A bound device was unbound: it leaves the catalogue, and every task
    /// that names it is marked broken, kept, and says why.
    pub(super) fn device_left(&self, key: [u8; 32]) {
        let id = task_device_id(&lock(&self.manager).handle_of(&DeviceRef::Bound(key)).0);
        lock(&self.reported).remove(&id);
        let Some(host) = self.automation() else {
            return;
        };
        self.refresh_catalogue();
        match host.device_gone(&id) {
            Ok(broken) if !broken.is_empty() => {
                info!(tasks = ?broken, "tasks naming an unbound device are broken");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "tasks naming an unbound device could not be marked"),
        }
    }

    /// Values a bound device reported (and its model accepted): kept as its
    /// last known state and handed to the car's tasks.
    pub(super) fn observed(&self, key: [u8; 32], values: &[PropertyValue]) {
        let id = task_device_id(&lock(&self.manager).handle_of(&DeviceRef::Bound(key)).0);
        let values: Vec<(PropertyId, Value)> = values
            .iter()
            .filter_map(|v| {
                let value = from_device_value(v.value.as_ref()?)?;
                Some((PropertyId::new(v.siid, v.piid), value))
            })
            .collect();
        {
            let mut reported = lock(&self.reported);
            let state = reported.entry(id.clone()).or_default();
            for (property, value) in &values {
                state.insert(*property, value.clone());
            }
        }
        if let Some(host) = self.automation() {
            for (property, value) in values {
                let _ = host.handle_property(&id, property, value);
            }
        }
    }

    /// The last value `device` reported for `property`, if any since the
    /// last scan.
    pub(crate) fn last_value(&self, device: &DeviceId, property: PropertyId) -> Option<Value> {
        lock(&self.reported).get(device)?.get(&property).cloned()
    }

    /// A task's write or action on a bound device: the values are put in
    /// the property formats of the device's model and checked against it,
    /// then the request goes the way of one from the head unit's own screen
    /// (SPEC §16). The receiver gets the device's answer.
    pub(crate) fn control_for_task(
        self: &Arc<Self>,
        device: &DeviceId,
        control: TaskControl,
    ) -> Result<oneshot::Receiver<Acknowledgement>, String> {
        let result = self.queue_for_task(device, control);
        // The request may have queued events (presence) as well.
        self.drain();
        result
    }

    pub(super) fn queue_for_task(
        &self,
        device: &DeviceId,
        control: TaskControl,
    ) -> Result<oneshot::Receiver<Acknowledgement>, String> {
        let unknown = || format!("device `{device}` is not bound to this car");
        let handle = unhex(&device.0).ok_or_else(unknown)?;
        let mut store = lock(&self.store);
        let mut manager = lock(&self.manager);
        let key = match manager.resolve_handle(&store, Requester::HeadUnit, &handle) {
            Ok(DeviceRef::Bound(key)) => key,
            Ok(DeviceRef::Offline(_)) | Err(_) => return Err(unknown()),
        };
        let model = store
            .get_binding(&key)
            .map_err(|e| format!("the car's store failed: {e}"))?
            .and_then(|binding| manager.catalogue().get(binding.product_model).cloned())
            .ok_or_else(|| format!("device `{device}` has an unknown model"))?;
        let kind = match control {
            TaskControl::Set(property, value) => {
                let PropertyId { siid, piid } = property;
                let spec =
                    validate::find_property(&model, siid, piid).map_err(|e| e.to_string())?;
                let value = to_device_value(spec, &value)
                    .ok_or_else(|| format!("property {property} cannot hold {value}"))?;
                validate::check_write(&model, siid, piid, Some(&value))
                    .map_err(|e| e.to_string())?;
                request::Kind::SetProperties(SetProperties {
                    handle,
                    values: vec![PropertyValue {
                        siid,
                        piid,
                        value: Some(value),
                    }],
                })
            }
            TaskControl::Action(action, arguments) => {
                let DeviceActionId { siid, aiid } = action;
                let inputs = model
                    .services
                    .iter()
                    .find(|s| s.iid == siid)
                    .and_then(|s| s.actions.iter().find(|a| a.iid == aiid))
                    .map(|a| a.inputs.clone())
                    .ok_or_else(|| format!("device `{device}` has no action {action}"))?;
                if inputs.len() != arguments.len() {
                    return Err(format!(
                        "action {action} takes {} arguments, not {}",
                        inputs.len(),
                        arguments.len()
                    ));
                }
                let mut values = Vec::with_capacity(arguments.len());
                for (piid, argument) in inputs.iter().zip(&arguments) {
                    let spec =
                        validate::find_property(&model, siid, *piid).map_err(|e| e.to_string())?;
                    values.push(
                        to_device_value(spec, argument).ok_or_else(|| {
                            format!("property {siid}.{piid} cannot hold {argument}")
                        })?,
                    );
                }
                validate::check_action(&model, siid, aiid, &values).map_err(|e| e.to_string())?;
                request::Kind::InvokeAction(InvokeAction {
                    handle,
                    siid,
                    aiid,
                    arguments: values,
                })
            }
        };
        let now = self.now_ms();
        match manager.handle_request(&mut store, Requester::HeadUnit, &kind, now) {
            Ok(response::Kind::ControlAccepted(accepted)) => {
                // Registered before the manager's lock is let go: the command
                // cannot be delivered (and answered) before anyone waits.
                let (tx, rx) = oneshot::channel();
                lock(&self.waiting).insert(accepted.command_id, tx);
                Ok(rx)
            }
            Ok(_) => Err("the device service answered something else".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The device answered command `id` (or it could not be sent).
    pub(super) fn acknowledge(&self, id: u64, answer: Acknowledgement) {
        if let Some(waiting) = lock(&self.waiting).remove(&id) {
            let _ = waiting.send(answer);
        }
    }
}

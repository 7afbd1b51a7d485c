#!/usr/bin/env python3
"""Tether's phone role from Python, through the generated UniFFI bindings.

    python3 examples/python/phone.py --bindings DIR [--host self|stdio] [--json]

DIR holds the generated `tether.py` and the native `libtether_ffi.so`
(`crates/tether-ffi/generate-bindings.sh` makes both). The script plays the
owner's phone: it creates an account (its secrets in a key store written in
Python), enrolls a head unit, discovers it over loopback mDNS, authenticates,
reads the status, subscribes to the door locks (updates arrive through a
Python callback), locks the doors with an idempotency key and retries the
same command, then shows that a phone of another account is refused and that
errors arrive as typed exceptions. It then shares the car with that other
account as a co-user (status only; with a broker, also through the grant's own
mailbox: a pushed read, a lock refused), and revokes the share. Last, it manages
a lamp bound to the account through the car (SPEC 16): lists it under an
opaque handle, sets its brightness and reads it back, toggles it, renames
and reorders it, sees an out-of-range write refused as a typed error, and
unbinds it. Then super tasks on the car (SPEC 18): it switches "car data to
home" on, installs "when parked, lock" from `tether.v1.Task` bytes encoded
by hand below, lists it, runs it and reads its trace, shares it as a
template and installs the template back, has the car park so that an
unlock task asks the owner first (a Python callback hears the question;
one answer declines, the next confirms, R23), and switches the consent off.
Then it finds the home hub by the hub's own token, installs "porch on" there
and runs it (SPEC 18.8). Then a lost phone (SPEC 3.6): it enrolls a second
phone, lists the account's devices, removes that phone (the revocation serial
rises), and sees the car refuse it. Last, the identity (and the list) come
back from the key store.

The head unit comes from one of two places:
  --host self   (default) started here through the bindings as well;
  --host stdio  run by the parent process in Rust: the script writes
                `ENROLL?` and reads `REQUEST <hex>`, answers `GRANT <hex>`;
                then reads `DEVICE? <hex>` (a lamp's EnrollmentRequest) and
                answers `DEVICE-GRANT <hex>` (the phone, as the account
                authority, certifies the lamp); the parent binds that lamp
                to the head unit, scans for it, and writes `STARTED`. Later
                the script writes `PARK?` and the parent reports "parked"
                to the car's tasks and answers `PARKED`. Last the script
                writes `HUB?`, reads `HUB-REQUEST <hex>` (a hub's
                EnrollmentRequest), answers `HUB-GRANT <hex>`, and the
                parent starts the hub serving its tasks and writes
                `HUB-STARTED`. This is how `cargo test` drives it
                (tests/tests/ffi_python.rs).

With --host self there is no bound lamp: the bindings have no device node,
so the device step checks the head unit's own screen instead (an offline
device attached physically, a scan, an account switch) and says so.

Each step prints one line (`--json`: one JSON object per line); the exit code
is 0 only if every step behaved as described.
"""

import argparse
import asyncio
import json
import os
import queue
import sys
import tempfile
import threading
import time

DOOR_LOCKS = [
    "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked",
    "Vehicle.Cabin.Door.Row1.PassengerSide.IsLocked",
    "Vehicle.Cabin.Door.Row2.DriverSide.IsLocked",
    "Vehicle.Cabin.Door.Row2.PassengerSide.IsLocked",
]


class StepFailed(Exception):
    """A step did not behave as described."""


class Narrator:
    def __init__(self, as_json):
        self.as_json = as_json
        self.steps = []

    def step(self, name, ok, detail, started):
        ms = round((time.monotonic() - started) * 1000, 1)
        self.steps.append({"name": name, "ok": ok, "ms": ms, "detail": detail})
        if self.as_json:
            print("STEP " + json.dumps(self.steps[-1]), flush=True)
        else:
            mark = "ok " if ok else "FAIL"
            print(f"[{mark}] {name}: {detail} ({ms} ms)", flush=True)
        if not ok:
            raise StepFailed(f"{name}: {detail}")


def check(condition, message):
    if not condition:
        raise StepFailed(message)


def load_bindings(directory):
    sys.path.insert(0, os.path.abspath(directory))
    import tether  # noqa: E402  (generated module, found through sys.path)

    return tether


def make_key_store(tether):
    """A key store written in Python. A real app keeps these in Android
    Keystore or the iOS Keychain; Tether only sees this interface."""

    class DictKeyStore(tether.PlatformKeyStore):
        def __init__(self):
            self.secrets = {}
            self.lock = threading.Lock()

        def load(self, name):
            with self.lock:
                return self.secrets.get(name)

        def save(self, name, secret):
            with self.lock:
                self.secrets[name] = bytes(secret)

        def delete(self, name):
            with self.lock:
                self.secrets.pop(name, None)

    return DictKeyStore()


def make_listener(tether):
    class QueueListener(tether.SignalListener):
        """Collects updates; called on a Tether runtime thread."""

        def __init__(self):
            self.updates = queue.Queue()
            self.closed = queue.Queue()

        def on_signals(self, readings):
            self.updates.put(readings)

        def on_closed(self, error):
            self.closed.put(error)

    return QueueListener()


class StdioHost:
    """The head unit lives in the parent process; talk over stdin/stdout."""

    # The parent binds a lamp to the account (see the module docstring).
    bound_lamp = True

    def __init__(self):
        self.lines = sys.stdin

    def _read(self, prefix):
        line = self.lines.readline()
        check(line.startswith(prefix), f"host sent {line!r}, expected {prefix}")
        return line[len(prefix):].strip()

    async def enroll(self, phone):
        print("ENROLL?", flush=True)
        request = bytes.fromhex(self._read("REQUEST "))
        grant = phone.enroll_device(request)
        print("GRANT " + grant.hex(), flush=True)
        # A lamp for the account: the parent made its key, this phone (the
        # account authority) certifies it as a device (no group key).
        lamp_request = bytes.fromhex(self._read("DEVICE? "))
        print("DEVICE-GRANT " + phone.enroll_device(lamp_request).hex(), flush=True)
        self._read("STARTED")

    async def park(self):
        """The parent reports "parked" to the car's tasks."""
        print("PARK?", flush=True)
        self._read("PARKED")
        return True

    async def start_hub(self, phone):
        """The parent runs a home hub: this phone certifies it, the parent
        starts it serving its tasks. True: there is a hub to look for."""
        print("HUB?", flush=True)
        request = bytes.fromhex(self._read("HUB-REQUEST "))
        print("HUB-GRANT " + phone.enroll_device(request).hex(), flush=True)
        self._read("HUB-STARTED")
        return True

    async def shutdown(self):
        pass


class SelfHost:
    """The head unit started here, through the same bindings."""

    bound_lamp = False

    def __init__(self, tether, settings):
        self.tether = tether
        self.car = tether.HeadUnit.open(settings, None)

    async def enroll(self, phone):
        self.car.complete_enrollment(phone.enroll_device(self.car.enrollment_request()))
        await self.car.start()

    async def park(self):
        """What the vehicle app does when the car shifts into park: True
        if a task uses the event."""
        return await self.car.report_vehicle_event(self.tether.VehicleEvent.PARKED)

    async def start_hub(self, phone):
        """The bindings have no hub node: nothing to look for."""
        return False

    async def shutdown(self):
        await self.car.shutdown()


def door_locks(readings):
    return {r.path: r.value.value for r in readings if r.path in DOOR_LOCKS}


LAMP_PRODUCT_MODEL = 0x1A2B
# The lamp's light service (SPEC 16.1): 2.1 on, 2.2 brightness (1-100 %).
LIGHT, ON, BRIGHTNESS, TOGGLE = 2, 1, 2, 1


def property_value(values, siid, piid):
    return next((v.value for v in values if v.siid == siid and v.piid == piid), None)


async def until_value(link, handle, siid, piid, expected, timeout_s=10):
    """The car shows a device's values as the device reports them: poll."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = property_value(await link.device_values(handle), siid, piid)
        if seen == expected or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.05)


async def devices_through_the_car(tether, link, narrator):
    """A lamp bound to the account, managed from the phone through the car."""
    t = time.monotonic()
    listed = await link.list_devices()
    check(len(listed) == 1, f"expected the bound lamp alone, listed {listed}")
    lamp = listed[0]
    check(
        lamp.online
        and not lamp.offline_attached
        and lamp.product_model == LAMP_PRODUCT_MODEL
        and len(lamp.handle) == 16,
        f"unexpected entry {lamp}",
    )
    forty = tether.DeviceValue.UINT(40)
    await link.set_device_properties(
        lamp.handle, [tether.PropertyValue(siid=LIGHT, piid=BRIGHTNESS, value=forty)]
    )
    brightness = await until_value(link, lamp.handle, LIGHT, BRIGHTNESS, forty)
    check(brightness == forty, f"brightness reads {brightness} after writing 40")
    await link.invoke_device_action(lamp.handle, LIGHT, TOGGLE, [])
    on = await until_value(link, lamp.handle, LIGHT, ON, tether.DeviceValue.BOOL(True))
    check(on == tether.DeviceValue.BOOL(True), f"toggle left `on` at {on}")
    renamed = await link.rename_device(lamp.handle, "Reading lamp")
    relisted = await link.list_devices()
    check(
        [d.name for d in renamed] == ["Reading lamp"] and relisted == renamed,
        f"after rename: {renamed} / {relisted}",
    )
    refused = None
    try:
        await link.set_device_properties(
            lamp.handle,
            [tether.PropertyValue(siid=LIGHT, piid=BRIGHTNESS, value=tether.DeviceValue.UINT(101))],
        )
    except tether.TetherError.Control as e:
        refused = e.code
    still = property_value(await link.device_values(lamp.handle), LIGHT, BRIGHTNESS)
    reordered = await link.reorder_devices([lamp.handle])
    remaining = await link.unbind_device(lamp.handle)
    narrator.step(
        "devices through the car",
        refused == "ERROR_CODE_BAD_REQUEST"
        and still == forty
        and [d.handle for d in reordered] == [lamp.handle]
        and remaining == [],
        f"lamp online under a {len(lamp.handle)}-byte handle; brightness 40 read back, "
        f"toggled on, renamed; 101 refused as {refused}; unbound",
        t,
    )


async def devices_on_the_head_unit(tether, car, link, narrator):
    """--host self: no bound lamp exists, so check the car's own screen."""
    t = time.monotonic()
    note = "no bound lamp with --host self (the bindings have no device node)"
    unsupported = None
    try:
        await car.attach_offline_device(0xFFFF, None)
    except tether.TetherError.Device as e:
        unsupported = e.code
    handle = await car.attach_offline_device(LAMP_PRODUCT_MODEL, "1.0.0")
    screen = await car.list_devices()
    attached = [d for d in screen if d.handle == handle]
    scanned = await car.scan_devices(500)
    switched = await car.account_switched(500)
    after_switch = await car.list_devices()
    phone_view = await link.list_devices()
    # An offline device is upgraded through its port, not over the LAN: the
    # car refuses with a typed error before anything is sent.
    upgrade_refused = False
    try:
        await car.upgrade_device(handle, b"", b"image", None)
    except tether.TetherError.State:
        upgrade_refused = True
    narrator.step(
        "devices on the head unit",
        len(handle) == 16
        and len(attached) == 1
        and attached[0].offline_attached
        and attached[0].firmware_version == "1.0.0"
        and scanned == 0
        and switched == 0
        and [d.handle for d in after_switch] == [handle]
        and phone_view == []
        and upgrade_refused
        and unsupported == "ERROR_CODE_UNSUPPORTED",
        f"{note}; an offline lamp is on the car's screen only (R12), "
        f"its LAN upgrade is refused, "
        f"scan and account switch find {scanned}/{switched} bound devices, "
        f"an unknown model is refused as {unsupported}",
        t,
    )


async def commission_on_the_head_unit(tether, car, phone, narrator):
    """--host self: the car commissions a simulated lamp (SPEC 12.8): a
    mistyped manual code is refused, then the QR code pairs, binds with
    this phone's authority and joins the Wi-Fi; the car keeps it."""
    t = time.monotonic()
    ssid = b"py home"
    home = tether.HomeNetwork(ssid=ssid, passphrase=b"py passphrase 1")
    lamp = tether.SimulatedAccessory.power_on(LAMP_PRODUCT_MODEL, home)
    manual = lamp.manual_code()
    # One digit off keeps the check digit wrong too: refused as unreadable.
    unreadable = False
    try:
        await car.commission_simulated(
            lamp, phone, manual[:-1] + str((int(manual[-1]) + 1) % 10),
            "Lamp", home, None,
        )
    except tether.TetherError.Commission as e:
        unreadable = not e.wrong_passcode

    class Stages(tether.CommissionListener):
        """Collects the stages; called on a Tether runtime thread."""

        def __init__(self):
            self.heard = queue.Queue()

        def on_stage(self, stage):
            self.heard.put(type(stage).__name__.split(".")[-1])

    stages = Stages()
    before = len(await car.list_devices())
    result = await car.commission_simulated(
        lamp, phone, lamp.setup_qr(), "Py lamp", home, stages
    )
    heard = []
    while not stages.heard.empty():
        heard.append(stages.heard.get())
    names = [d.name for d in await car.list_devices()]
    narrator.step(
        "head unit commissions a lamp",
        unreadable
        and result.outcome == "JOINED"
        and len(result.device_key) == 32
        and lamp.joined(ssid)
        and heard[0] == "SCANNING"
        and heard[-1] == "SAVED"
        and "PAIRED" in heard
        and "Py lamp" in names
        and len(names) == before + 1,
        f"a mistyped manual code is refused; the QR code paired, bound "
        f"(certificate #{result.serial}) and joined; stages {' > '.join(heard)}",
        t,
    )


# ---- super tasks (SPEC 18) -------------------------------------------------
# A task crosses the bindings as the protobuf bytes of `tether.v1.Task`
# (proto/tether/v1/automation.proto). An app uses its protobuf library; the
# few fields needed here are encoded by hand, with their field numbers.

VEHICLE_EVENT_PARKED = 1  # enum VehicleEvent
VEHICLE_STATE_PARKING = 1  # enum VehicleState
MODE_KIND_SINGLE = 1  # enum Mode.Kind


def pb_varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_enum(field, value):
    """A varint field (wire type 0): an enum here."""
    return pb_varint(field << 3) + pb_varint(value)


def pb_message(field, payload=b""):
    """A length-delimited field (wire type 2): a message or a string."""
    if isinstance(payload, str):
        payload = payload.encode()
    return pb_varint(field << 3 | 2) + pb_varint(len(payload)) + payload


TRIGGER_PARKED = pb_enum(6, VEHICLE_EVENT_PARKED)  # Trigger.vehicle
TRIGGER_MANUAL = pb_message(7)  # Trigger.manual {}
COMMAND_LOCK = pb_message(1)  # Action.VehicleCommand.lock {}
COMMAND_UNLOCK = pb_message(2)  # Action.VehicleCommand.unlock {}


def encode_task(name, trigger, command):
    """`tether.v1.Task`: one trigger, one vehicle command, mode single,
    missed times skipped. It declares exactly the data it reads (R21): the
    parking state, which a `PARKED` trigger sets and an unlock's safety
    rule checks."""
    return (
        pb_message(2, name)  # name
        + pb_message(3, trigger)  # triggers[0]
        + pb_message(5, pb_message(3, command))  # actions[0].vehicle
        + pb_message(6, pb_enum(1, MODE_KIND_SINGLE))  # mode.kind
        + pb_message(7, pb_message(1))  # missed.skip {}
        + pb_message(8, pb_enum(4, VEHICLE_STATE_PARKING))  # inputs[0].vehicle
    )


# The home hub's switch property (SPEC 18.3): service 2, property 1.
HUB_SWITCH = pb_enum(1, 2) + pb_enum(2, 1)


def encode_hub_task(name, device):
    """`tether.v1.Task` for the home hub: run by hand, it switches `device`
    on (Action.set_property), mode single, missed times skipped. It reads
    nothing, so it declares no input (R21)."""
    set_on = (
        pb_message(1, device)  # device
        + pb_message(2, HUB_SWITCH)  # property
        + pb_message(3, pb_enum(1, 1))  # value.bool_value = true
    )
    return (
        pb_message(2, name)  # name
        + pb_message(3, TRIGGER_MANUAL)  # triggers[0]
        + pb_message(5, pb_message(1, set_on))  # actions[0].set_property
        + pb_message(6, pb_enum(1, MODE_KIND_SINGLE))  # mode.kind
        + pb_message(7, pb_message(1))  # missed.skip {}
    )


async def hub_tasks(tether, phone, host, narrator):
    """The home hub's tasks, managed from the phone over the hub's own
    session (SPEC 18.8): found by its own token, never the car's."""
    t = time.monotonic()
    if not await host.start_hub(phone):
        narrator.step(
            "hub tasks",
            True,
            "no hub with --host self (the bindings have no hub node)",
            t,
        )
        return
    address = await phone.discover_hub(10_000)
    hub = await phone.connect_hub(address)
    task = await hub.create_task(encode_hub_task("porch on", "porch"), True)
    listed = await hub.list_tasks()
    run = await hub.run_task(task.id)
    trace = await ended_trace(hub, task.id)
    hub.close()
    narrator.step(
        "hub tasks",
        task.state == "active"
        and [x.id for x in listed] == [task.id]
        and run > 0
        and trace.outcome == "completed",
        f"hub found at {address}; task {task.id} \"porch on\" created, run {run}: {trace.outcome}",
        t,
    )


def make_confirmation_listener(tether):
    class QueueConfirmations(tether.ConfirmationListener):
        """Collects the car's questions; called on a Tether runtime thread.
        The answers are given from the script's own coroutine."""

        def __init__(self):
            self.heard = queue.Queue()

        def on_question(self, question):
            self.heard.put(("question", question))

        def on_withdrawn(self, question_id):
            self.heard.put(("withdrawn", question_id))

        def on_closed(self, error):
            self.heard.put(("closed", error))

    return QueueConfirmations()


async def ended_trace(link, task_id, timeout_s=10):
    """A run goes on in the car after `run_task` returns: poll its trace."""
    deadline = time.monotonic() + timeout_s
    while True:
        traces = await link.task_traces(task_id, 1)
        if traces and traces[-1].ended_ms is not None:
            return traces[-1]
        check(time.monotonic() < deadline, f"task {task_id} has no ended trace: {traces}")
        await asyncio.sleep(0.02)


async def super_tasks(tether, link, host, narrator):
    """Tasks on the car, managed from the phone (SPEC 18)."""
    # a. The owner allows car data to reach the home (R11, R28).
    t = time.monotonic()
    on = await link.set_car_data_to_home(True)
    narrator.step("car data to home on", on is True, '"car data to home" switched on', t)

    # b. A task from bytes; bytes that are not a task are a typed error.
    t = time.monotonic()
    refused = None
    try:
        await link.create_task(b"\x0a\xff", True)
    except tether.TetherError.InvalidArgument:
        refused = "InvalidArgument"
    lock_task = encode_task("parked: lock", TRIGGER_PARKED, COMMAND_LOCK)
    task = await link.create_task(lock_task, True)
    narrator.step(
        "create task",
        refused == "InvalidArgument"
        and task.id > 0
        and task.name == "parked: lock"
        and task.enabled
        and task.state == "active"
        and task.broken_reason is None,
        f"{len(lock_task)} bytes of tether.v1.Task installed as task {task.id} "
        f"({task.state}); bad bytes raised {refused}",
        t,
    )

    # c. The car lists it as installed.
    t = time.monotonic()
    listed = await link.list_tasks()
    narrator.step(
        "list tasks",
        listed == [task] and len(listed[0].task) >= len(lock_task),
        ", ".join(f"task {x.id} {x.name!r} ({x.state})" for x in listed) + ", as installed",
        t,
    )

    # d. Run it by hand and read its trace.
    t = time.monotonic()
    run_id = await link.run_task(task.id)
    trace = await ended_trace(link, task.id)
    narrator.step(
        "run task",
        run_id > 0
        and trace.run_id == run_id
        and trace.cause == "run by hand"
        and trace.steps == ["vehicle command Lock: done"]
        and trace.outcome == "completed"
        and len(trace.encoded) > 0,
        f"run {run_id}: {trace.cause} -> {trace.steps} -> {trace.outcome}",
        t,
    )

    # e. Share it as a template (R22), and install the template back.
    t = time.monotonic()
    template = await link.share_task(task.id, "py owner", None)
    about = tether.describe_template(template)
    unknown_slot = None
    try:
        await link.accept_template(template, {"place-1": "home"}, False)
    except tether.TetherError.InvalidArgument as e:
        unknown_slot = e.detail
    copy = await link.accept_template(template, {}, False)
    left = await link.delete_task(copy.id)
    narrator.step(
        "share task",
        about.nickname == "py owner"
        and about.task_name == task.name
        and not (about.place_slots or about.device_slots or about.message_slots)
        and unknown_slot is not None
        and copy.id != task.id
        and copy.state == "disabled"
        and left == [task],
        f"{len(template)}-byte tether.v1.TaskTemplate from {about.nickname!r}, no slots "
        f"to bind; installed back as task {copy.id} (disabled) and deleted; "
        f"an unknown slot is refused",
        t,
    )

    # f. The car parks: the lock task fires. An unlock asks the owner on the
    #    phone first (R23): declined, it does not run; confirmed, it does.
    t = time.monotonic()
    listener = make_confirmation_listener(tether)
    watch = await link.watch_confirmations(listener)
    unlock = await link.create_task(
        encode_task("let me in", TRIGGER_MANUAL, COMMAND_UNLOCK), True
    )
    used = await host.park()
    parked = await ended_trace(link, task.id)
    answers = []
    for confirm in (False, True):
        await link.run_task(unlock.id)
        kind, question = listener.heard.get(timeout=10)
        check(kind == "question", f"expected a question, heard {kind} {question}")
        check(
            question.task_id == unlock.id
            and question.task_name == "let me in"
            and question.command == tether.VehicleAction.UNLOCK(),
            f"unexpected question {question}",
        )
        await link.answer_confirmation(question.id, confirm)
        kind, withdrawn = listener.heard.get(timeout=10)
        check(kind == "withdrawn" and withdrawn == question.id, f"heard {kind} {withdrawn}")
        answers.append(await ended_trace(link, unlock.id))
    declined, confirmed = answers
    watch.cancel()
    narrator.step(
        "confirm on the phone",
        used
        and parked.cause == "car parked"
        and parked.outcome == "completed"
        and declined.steps == ["vehicle command Unlock: declined by the owner"]
        and declined.outcome == "failed"
        and confirmed.steps == ["vehicle command Unlock (confirmed by the owner): done"]
        and confirmed.outcome == "completed"
        and not watch.is_active(),
        f"parked: the lock task ran ({parked.outcome}); the unlock asked the phone: "
        f"declined -> {declined.outcome}, confirmed -> {confirmed.outcome}",
        t,
    )

    # g. The owner withdraws consent; then the tasks are removed.
    t = time.monotonic()
    off = await link.set_car_data_to_home(False)
    states = sorted(x.state for x in await link.list_tasks())
    await link.delete_task(unlock.id)
    remaining = await link.delete_task(task.id)
    narrator.step(
        "car data to home off",
        off is False and states == ["active", "active"] and remaining == [],
        '"car data to home" switched off (the car\'s own tasks stay active); '
        "tasks deleted",
        t,
    )


async def run(tether, host_kind, narrator, data_dir, broker):
    loopback = tether.NodeSettings(
        data_dir=None,
        network=tether.Network.LOOPBACK_ONLY,
        port=0,
        identifiers=tether.LocalIdentifiers(),
        broker=broker,
    )
    phone_settings = tether.NodeSettings(
        data_dir=data_dir,
        network=tether.Network.LOOPBACK_ONLY,
        port=0,
        identifiers=tether.LocalIdentifiers(
            device_name="Python Phone", account_uid="py-uid-7", mac="02:00:5e:00:00:07"
        ),
        broker=broker,
    )

    # 1. Enroll: the phone creates the account; its secrets go to the key store.
    t = time.monotonic()
    key_store = make_key_store(tether)
    phone = tether.Phone.open(phone_settings, key_store)
    phone.create_account()
    held = sorted(key_store.secrets)
    narrator.step(
        "enroll",
        phone.is_enrolled()
        and len(phone.authority_public_key()) == 32
        and held == ["authority-group-key", "authority-signing-key", "device-key", "group-key"],
        f"account created; key store holds {held}",
        t,
    )

    t = time.monotonic()
    host = StdioHost() if host_kind == "stdio" else SelfHost(tether, loopback)
    await host.enroll(phone)
    narrator.step("enroll head unit", True, "grant issued, head unit started", t)

    # 2. Discover the car by resolving its rotating token.
    t = time.monotonic()
    found = await phone.discover_vehicle(10_000)
    narrator.step("discover", ":" in found.address, f"found {found.address}", t)

    # 3. Authenticate: an account-bound session, one round trip cold.
    t = time.monotonic()
    link = await phone.connect(found.address)
    narrator.step(
        "authenticate",
        link.round_trips() == 1 and not link.resumed() and len(link.vehicle_key()) == 32,
        f"cold session, {link.round_trips()} round trips",
        t,
    )

    # 4. Status.
    t = time.monotonic()
    status = await link.read([])
    locks = door_locks(status)
    narrator.step(
        "read status",
        len(status) > len(DOOR_LOCKS) and set(locks.values()) == {False},
        f"{len(status)} signals, doors unlocked",
        t,
    )

    # 4b. The remote path: the same session through the MQTT broker, as a
    #     phone away from home would (SPEC §19.11).
    if broker is not None:
        t = time.monotonic()
        remote = await phone.connect_via_relay()
        remote_status = await remote.read([DOOR_LOCKS[0]])
        remote.close()
        # A command left in the car's mailbox (it would wait there if the
        # car slept), answered with a verified receipt in the phone's own.
        posted = await phone.post_command(
            tether.VehicleAction.FLASH_HONK(flash=True, honk=False),
            tether.new_idempotency_key(),
            60_000,
        )
        reply = await phone.next_mailbox_reply(10_000)
        answered = (
            reply is not None
            and reply.in_reply_to == posted.letter_id
            and reply.outcome is not None
            and reply.outcome.state == tether.CommandState.SUCCEEDED
        )
        narrator.step(
            "remote path",
            remote.via_relay() and not link.via_relay() and len(remote_status) == 1 and answered,
            f"session through the broker at {broker}; read {remote_status[0].path}; "
            f"a flash left in the car's mailbox ran, receipt #{reply.outcome.sequence if answered else '?'}",
            t,
        )

    # 5. Subscribe: updates arrive through a Python callback.
    t = time.monotonic()
    listener = make_listener(tether)
    subscription = await link.subscribe(DOOR_LOCKS, listener)
    first = door_locks(listener.updates.get(timeout=10))
    narrator.step(
        "subscribe",
        subscription.is_active() and first == {p: False for p in DOOR_LOCKS},
        "current values delivered to the callback",
        t,
    )

    # 6. Lock with an idempotency key, then retry the same command.
    t = time.monotonic()
    key = tether.new_idempotency_key()
    outcome = await link.command(tether.VehicleAction.LOCK(), key)
    S = tether.CommandState
    narrator.step(
        "lock",
        outcome.state == S.SUCCEEDED
        and outcome.states == [S.ACCEPTED, S.IN_PROGRESS, S.SUCCEEDED]
        and len(outcome.receipt) > 64,
        f"states {[s.name for s in outcome.states]}, receipt #{outcome.sequence}",
        t,
    )

    t = time.monotonic()
    update = {}
    deadline = time.monotonic() + 10
    while update != {p: True for p in DOOR_LOCKS} and time.monotonic() < deadline:
        update.update(door_locks(listener.updates.get(timeout=10)))
    narrator.step(
        "callback sees the lock",
        update == {p: True for p in DOOR_LOCKS},
        "all four doors report locked",
        t,
    )

    t = time.monotonic()
    retry = await link.command(tether.VehicleAction.LOCK(), key)
    narrator.step(
        "retry is idempotent",
        retry.receipt == outcome.receipt and retry.sequence == outcome.sequence,
        "same key, byte-identical receipt",
        t,
    )
    subscription.cancel()
    check(not subscription.is_active(), "subscription still active after cancel")

    # 7. Typed errors, and panics caught inside the library.
    t = time.monotonic()
    seen = []
    try:
        await link.command(tether.VehicleAction.LOCK(), b"short")
    except tether.TetherError.State as e:
        seen.append("State")
    try:
        await phone.connect("not an address")
    except tether.TetherError.InvalidArgument:
        seen.append("InvalidArgument")
    try:
        tether.self_test_panic()
    except tether.TetherError.Internal as e:
        check("deliberate panic" in e.detail, e.detail)
        seen.append("Internal")
    try:
        await tether.self_test_panic_async()
    except tether.TetherError.Internal:
        seen.append("Internal(async)")
    still_works = len(await link.read(DOOR_LOCKS)) == len(DOOR_LOCKS)
    narrator.step(
        "typed errors",
        seen == ["State", "InvalidArgument", "Internal", "Internal(async)"] and still_works,
        f"raised {seen}; the library still works",
        t,
    )

    # 8. Resume: a reconnect's first read travels as 0-RTT early data.
    t = time.monotonic()
    link.close()
    link = await phone.connect(found.address)
    # Requests ride in the first flight after ResumeHello (SPEC 5.5); the
    # answer shows the car accepted the ticket.
    resumed_read = await link.read(DOOR_LOCKS)
    narrator.step(
        "resume",
        link.resumed() and link.round_trips() == 0 and len(resumed_read) == len(DOOR_LOCKS),
        f"{link.round_trips()} round trip, then a read on the resumed session",
        t,
    )
    link.close()

    # 9. Another account resolves nothing and is refused.
    t = time.monotonic()
    stranger = tether.Phone.open(loopback, None)
    stranger.create_account()
    report = await stranger.discover(2_000)
    refused = False
    try:
        await stranger.connect(found.address)
    except tether.TetherError.Session as e:
        refused = e.refused
    narrator.step(
        "other account refused",
        not report.resolved and report.unresolvable >= 1 and refused,
        f"resolved nothing, {report.unresolvable} unresolvable token(s), refused",
        t,
    )

    # 10. Share with the other account as a co-user (SPEC 17), then revoke.
    t = time.monotonic()
    link = await phone.connect(found.address)
    issued = await phone.share(
        link,
        stranger.authority_public_key(),
        tether.ShareOptions(
            permissions=[tether.SharePermission.VEHICLE_STATUS],
            devices=[],
            valid_for_s=3600,
            nickname="py owner",
        ),
    )
    held = stranger.accept_invite(issued.invite)
    shared = await stranger.discover_shared_vehicle(issued.grant_id, 15_000)
    co_link = await stranger.connect_shared(issued.grant_id, shared.address)
    co_read = await co_link.read(DOOR_LOCKS)
    denied = None
    try:
        await co_link.command(tether.VehicleAction.LOCK(), tether.new_idempotency_key())
    except tether.TetherError.Control as e:
        denied = e.code
    # With a broker: the co-user's own mailbox under the grant (SPEC 17.1,
    # 19.12) answers a read pushed there, and refuses a lock outside the
    # grant's scope, as the session did.
    mailbox = "no broker"
    mailbox_ok = True
    if broker is not None:
        await stranger.push_subscribe_shared(issued.grant_id, [DOOR_LOCKS[0]], 60_000)
        pushed = await stranger.next_shared_mailbox_reply(issued.grant_id, 10_000)
        posted = await stranger.post_shared_command(
            issued.grant_id, tether.VehicleAction.LOCK(), tether.new_idempotency_key(), 60_000
        )
        refused = await stranger.next_shared_mailbox_reply(issued.grant_id, 10_000)
        mailbox_ok = (
            pushed is not None
            and len(pushed.signals) == 1
            and refused is not None
            and refused.in_reply_to == posted.letter_id
            and refused.refused_code == "ERROR_CODE_PERMISSION_DENIED"
        )
        mailbox = (
            f"grant mailbox pushed {len(pushed.signals) if pushed else 0} value(s), "
            f"lock {refused.refused_code if refused else 'unanswered'}"
        )
    closed = await phone.revoke_share(link, issued.grant_id)
    cut_off = False
    try:
        await co_link.read(DOOR_LOCKS)
    except tether.TetherError.Session:
        cut_off = True
    link.close()
    narrator.step(
        "share and revoke",
        held.sharer_nickname == "py owner"
        and shared.address == found.address
        and len(co_read) == len(DOOR_LOCKS)
        and denied == "ERROR_CODE_PERMISSION_DENIED"
        and mailbox_ok
        and closed == 1
        and cut_off,
        f"co-user read {len(co_read)} signals, lock {denied}, {mailbox}, "
        f"revoked: {closed} session closed",
        t,
    )

    # 11. Devices through the car (SPEC 16), reached where it answered
    # last or found again.
    link = await phone.reach_vehicle(10_000)
    if host.bound_lamp:
        await devices_through_the_car(tether, link, narrator)
    else:
        await devices_on_the_head_unit(tether, host.car, link, narrator)
        await commission_on_the_head_unit(tether, host.car, phone, narrator)
    link.close()

    # 12. Super tasks on the car (SPEC 18).
    link = await phone.connect(found.address)
    await super_tasks(tether, link, host, narrator)
    link.close()

    # 12b. The home hub's tasks (SPEC 18.8).
    await hub_tasks(tether, phone, host, narrator)

    # 13. A lost phone (SPEC 3.6): a second phone of the owner's, enrolled
    # by this phone's authority, is removed; the revocation serial rises and
    # the car refuses it once this phone has handed it the list.
    t = time.monotonic()
    lost = tether.Phone.open(loopback, None)
    lost.complete_enrollment(phone.enroll_device(lost.enrollment_request()))
    lost_link = await lost.connect(found.address)
    lost_read = len(await lost_link.read(DOOR_LOCKS))
    lost_link.close()
    devices = phone.account_devices()
    second = [d for d in devices if d.role == "phone" and not d.this_device]
    check(len(second) == 1, f"account devices: {devices}")
    serial_before = phone.revocation_serial()
    removal = phone.remove_device(second[0].public_key)
    removed = [d.removed for d in phone.account_devices() if d.public_key == second[0].public_key]
    link = await phone.connect(found.address)
    link.close()
    await lost.forget_tickets()
    refused = False
    try:
        await lost.connect(found.address)
    except (tether.TetherError.Session, tether.TetherError.Control):
        refused = True
    narrator.step(
        "remove a lost phone",
        lost_read == len(DOOR_LOCKS)
        and removal.serial == serial_before + 1
        and phone.revocation_serial() == removal.serial
        and removal.group_key_epoch == 1
        and removed == [True]
        and refused,
        f"{len(devices)} account devices; list #{removal.serial}, group key epoch "
        f"{removal.group_key_epoch}; the car refuses the removed phone",
        t,
    )

    # 14. The key store is where the identity lives.
    t = time.monotonic()
    del phone
    reopened = tether.Phone.open(phone_settings, key_store)
    without = None
    try:
        tether.Phone.open(phone_settings, None)
    except tether.TetherError.Store as e:
        without = e.detail
    narrator.step(
        "key store",
        reopened.is_enrolled()
        and reopened.revocation_serial() == removal.serial
        and without is not None
        and reopened.local_identifiers().account_uid == "py-uid-7",
        "reopened from the key store; without it the identity is unavailable",
        t,
    )

    await host.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bindings", required=True, help="directory with tether.py and the library")
    parser.add_argument("--host", choices=["self", "stdio"], default="self")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--broker", default=None, help="mqtt://HOST:PORT of an MQTT broker, for the remote-path step"
    )
    args = parser.parse_args()

    tether = load_bindings(args.bindings)
    narrator = Narrator(args.json)
    ok = True
    error = None
    with tempfile.TemporaryDirectory(prefix="tether-py-") as data_dir:
        try:
            asyncio.run(run(tether, args.host, narrator, os.path.join(data_dir, "phone"), args.broker))
        except StepFailed as e:
            ok, error = False, str(e)
        except Exception as e:  # anything unexpected fails the run, loudly
            ok, error = False, f"{type(e).__name__}: {e}"
    summary = {"ok": ok, "steps": len(narrator.steps), "error": error}
    print(("DONE " + json.dumps(summary)) if args.json else f"done: {summary}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

//! The BlueZ backend (`tether_ble::bluez`) against BlueZ's D-Bus API as
//! python3-dbusmock emulates it, on a private bus: no radio, and the
//! machine's system bus is never touched.
//!
//! Needs `dbus-daemon` and Debian's python3-dbusmock, run with
//! `/usr/bin/python3` (a pyenv `python3` first on `PATH` cannot see Debian's
//! Python packages). `./test` (the README's test command) installs both;
//! without them these tests fail and say so, they never skip.
//!
//! # How a test runs
//!
//! btleplug finds BlueZ through `DBUS_SYSTEM_BUS_ADDRESS`, and setting an
//! environment variable inside a running test is `unsafe` (the workspace
//! forbids it) and would leak into the other tests. So each test has two
//! halves:
//!
//! 1. the **outer** test starts a private `dbus-daemon`, starts the dbusmock
//!    `bluez5` template on it, plants adapters, devices and GATT objects
//!    through the mock's `org.bluez.Mock` and `org.freedesktop.DBus.Mock`
//!    interfaces, then re-runs this test binary for the inner half with
//!    `DBUS_SYSTEM_BUS_ADDRESS` set to the private bus and
//!    `TETHER_BLE_DBUSMOCK_INNER=1`; it fails unless the inner half ran and
//!    passed. Guards kill the daemon and the mock when the test ends, however
//!    it ends.
//! 2. the **inner** half (`inner_*`) drives `BluezCentral` and holds the
//!    assertions. It is not a test of its own: this file is a test binary
//!    with its own `main` (`harness = false`), which runs the outer halves,
//!    or, when `TETHER_BLE_DBUSMOCK_INNER` names an inner half, only that.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tether_ble::advert::Advert;
use tether_ble::bluez::BluezCentral;
use tether_ble::radio::{Central, Link, NO_ADAPTER_DEADLINE, RadioError, TETHER_SERVICE_UUID};

/// Set in the re-run child to the name of the inner half to run.
const INNER: &str = "TETHER_BLE_DBUSMOCK_INNER";
/// Printed by an inner test that reached its end.
const INNER_DONE: &str = "tether-ble inner test reached its end";
/// Debian's interpreter, which sees python3-dbusmock and python3-dbus.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
const INSTALL_HINT: &str =
    "run `./test`, which installs them, or `apt-get install -y dbus-daemon python3-dbusmock`";

/// How long any helper process may take before the test gives up on it.
const HELPER_DEADLINE: Duration = Duration::from_secs(20);
/// A failure path may overrun [`NO_ADAPTER_DEADLINE`] by this much (a
/// loaded 2-core CI machine), no more.
const DEADLINE_SLACK: Duration = Duration::from_millis(500);

const ADAPTER: &str = "hci0";
const LAMP_ADDRESS: &str = "AA:BB:CC:DD:EE:01";
const LAMP_RSSI: i16 = -48;
const OTHER_ADDRESS: &str = "AA:BB:CC:DD:EE:02";
const OTHER_RSSI: i16 = -71;
/// The other device advertises service data too, under the Battery Service
/// UUID, so the test sees that only Tether's UUID counts.
const BATTERY_SERVICE_UUID: u128 = 0x0000_180f_0000_1000_8000_0080_5f9b_34fb;
const OTHER_SERVICE_DATA: [u8; 1] = [0x64];
/// The ATT MTU the mock's commissioning characteristics report.
const LAMP_MTU: u16 = 185;

/// The advert the lamp carries: a real unprovisioned advert (SPEC §13.1).
const LAMP_ADVERT: Advert = Advert::Unprovisioned {
    product_model: 0x1a2b,
    discriminator: 3840,
    flags: 1,
};

// ---------------------------------------------------------------------------
// The harness.

type Outer = fn();

/// The outer halves, by name; `cargo test -p tether-ble --test
/// bluez_dbusmock <filter>` runs those whose name contains `<filter>`.
const OUTER: [(&str, Outer); 5] = [
    (
        "bluez_scan_finds_planted_unprovisioned_lamp_r13",
        bluez_scan_finds_planted_unprovisioned_lamp_r13,
    ),
    (
        "bluez_link_carries_segments_both_ways_r13",
        bluez_link_carries_segments_both_ways_r13,
    ),
    (
        "no_system_bus_is_a_clear_error_within_two_seconds",
        no_system_bus_is_a_clear_error_within_two_seconds,
    ),
    (
        "bus_without_bluez_is_no_bluetooth_within_two_seconds",
        bus_without_bluez_is_no_bluetooth_within_two_seconds,
    ),
    (
        "bluez_without_adapter_is_no_adapter_within_two_seconds",
        bluez_without_adapter_is_no_adapter_within_two_seconds,
    ),
];

fn main() -> ExitCode {
    if let Some(inner) = std::env::var_os(INNER) {
        return run_inner_half(&inner.to_string_lossy());
    }
    // Flags from `cargo test` (`--nocapture`, `--test-threads`...) are
    // ignored; the first other argument filters by name.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let selected: Vec<_> = OUTER.iter().filter(|(n, _)| n.contains(&filter)).collect();
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in selected.iter().copied() {
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs one inner half in this (child) process.
fn run_inner_half(name: &str) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match name {
        "inner_scan_finds_planted_unprovisioned_lamp" => {
            runtime.block_on(inner_scan_finds_planted_unprovisioned_lamp())
        }
        "inner_link_carries_segments_both_ways" => {
            runtime.block_on(inner_link_carries_segments_both_ways())
        }
        "inner_no_system_bus_is_a_clear_error" => {
            runtime.block_on(inner_no_system_bus_is_a_clear_error())
        }
        "inner_bus_without_bluez_is_no_bluetooth" => {
            runtime.block_on(inner_bus_without_bluez_is_no_bluetooth())
        }
        "inner_bluez_without_adapter_is_no_adapter" => {
            runtime.block_on(inner_bluez_without_adapter_is_no_adapter())
        }
        other => {
            eprintln!("no inner half named {other:?}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------
// The outer halves: private bus, mock, planted objects.

/// Scanning finds both planted devices with their RSSI; exactly one carries
/// Tether service data, and it decodes to the planted unprovisioned advert
/// (R13: a commissioner finds the device it is about to commission).
fn bluez_scan_finds_planted_unprovisioned_lamp_r13() {
    let bus = PrivateBus::start();
    let mock = bus.start_bluez_mock("scan");
    mock.plant(&[adapter(), lamp_device(), other_device()]);
    mock.run_inner("inner_scan_finds_planted_unprovisioned_lamp");
}

/// Connecting finds the commissioning service; a segment written to RX comes
/// back (reversed by the mock) as a notification on TX; the link reports the
/// MTU BlueZ gives; after `disconnect` the link refuses to send; a device
/// without the service is `NoService` (R13, SPEC §13.2).
fn bluez_link_carries_segments_both_ways_r13() {
    let bus = PrivateBus::start();
    let mock = bus.start_bluez_mock("link");
    mock.plant(&[
        adapter(),
        lamp_device(),
        other_device(),
        format!("gatt {ADAPTER} {LAMP_ADDRESS} {LAMP_MTU}"),
        format!("resolved {ADAPTER} {OTHER_ADDRESS}"),
    ]);
    mock.run_inner("inner_link_carries_segments_both_ways");
}

/// With no system bus at all, construction fails with a typed error within
/// [`NO_ADAPTER_DEADLINE`] (SPEC §13.3, issue 4).
fn no_system_bus_is_a_clear_error_within_two_seconds() {
    require_tools();
    run_inner_on(
        "unix:path=/nonexistent/tether-test/socket",
        "inner_no_system_bus_is_a_clear_error",
        "",
    );
}

/// A bus on which no BlueZ runs is `NoBluetooth`, quickly.
fn bus_without_bluez_is_no_bluetooth_within_two_seconds() {
    let bus = PrivateBus::start();
    bus.run_inner("inner_bus_without_bluez_is_no_bluetooth");
}

/// BlueZ without an adapter is `NoAdapter`, quickly.
fn bluez_without_adapter_is_no_adapter_within_two_seconds() {
    let bus = PrivateBus::start();
    let mock = bus.start_bluez_mock("no-adapter");
    mock.plant(&[]);
    mock.run_inner("inner_bluez_without_adapter_is_no_adapter");
}

fn adapter() -> String {
    format!("adapter {ADAPTER} tether-test")
}

fn lamp_device() -> String {
    let advert = LAMP_ADVERT.encode().expect("the planted advert is valid");
    format!(
        "device {ADAPTER} {LAMP_ADDRESS} lamp {LAMP_RSSI} {}={}",
        uuid_string(TETHER_SERVICE_UUID),
        hex(&advert)
    )
}

fn other_device() -> String {
    format!(
        "device {ADAPTER} {OTHER_ADDRESS} kettle {OTHER_RSSI} {}={}",
        uuid_string(BATTERY_SERVICE_UUID),
        hex(&OTHER_SERVICE_DATA)
    )
}

fn uuid_string(uuid: u128) -> String {
    let h = format!("{uuid:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Plants objects in the mock. Each argument is one command:
/// `adapter NAME ALIAS`, `device ADAPTER ADDRESS ALIAS RSSI [UUID=HEX]...`,
/// `gatt ADAPTER ADDRESS MTU` (the commissioning service with RX and TX; a
/// write to RX is notified back on TX reversed), `resolved ADAPTER ADDRESS`
/// (services resolved, none present). It first waits for `org.bluez`.
const PLANT_SCRIPT: &str = r#"
import sys, time
import dbus

COMMISSIONING = '7e7e0001-5a1e-4d2b-9c51-7e7e7e7e0001'
RX = '7e7e0002-5a1e-4d2b-9c51-7e7e7e7e0001'
TX = '7e7e0003-5a1e-4d2b-9c51-7e7e7e7e0001'
CHAR = 'org.bluez.GattCharacteristic1'

bus = dbus.SystemBus()
deadline = time.monotonic() + 15
while not bus.name_has_owner('org.bluez'):
    if time.monotonic() > deadline:
        sys.exit('org.bluez did not appear on the private bus within 15 s')
    time.sleep(0.02)

def obj(path):
    return bus.get_object('org.bluez', path)

def control(path):
    return dbus.Interface(obj(path), 'org.freedesktop.DBus.Mock')

bluez = dbus.Interface(obj('/org/bluez'), 'org.bluez.Mock')

def device_path(adapter, address):
    return '/org/bluez/%s/dev_%s' % (adapter, address.replace(':', '_').upper())

for command in sys.argv[1:]:
    words = command.split()
    if words[0] == 'adapter':
        bluez.AddAdapter(words[1], words[2])
    elif words[0] == 'device':
        adapter, address, alias, rssi = words[1:5]
        path = bluez.AddDevice(adapter, address, alias)
        service_data = dbus.Dictionary({}, signature='sv')
        for item in words[5:]:
            uuid, data = item.split('=')
            service_data[uuid] = dbus.Array(bytes.fromhex(data), signature='y')
        # Properties.Set, not Mock.UpdateProperties: dbusmock 0.28 cannot wrap
        # a dictionary value in UpdateProperties.
        props = dbus.Interface(obj(path), 'org.freedesktop.DBus.Properties')
        props.Set('org.bluez.Device1', 'RSSI', dbus.Int16(int(rssi)))
        props.Set('org.bluez.Device1', 'ServiceData', service_data)
    elif words[0] == 'gatt':
        adapter, address, mtu = words[1:4]
        device = device_path(adapter, address)
        service = device + '/service0010'
        rx = service + '/char0011'
        tx = service + '/char0013'
        root = control('/')
        root.AddObject(service, 'org.bluez.GattService1', {
            'UUID': COMMISSIONING,
            'Primary': True,
            'Device': dbus.ObjectPath(device),
        # A method-less interface is introspected after the child nodes,
        # which the introspection parser under btleplug rejects; one dummy
        # method puts it with the other interfaces.
        }, [('MockPlaceholder', '', '', '')])
        echo = ("objects[%r].UpdateProperties(%r, {'Value': "
                "dbus.Array(list(reversed(args[0])), signature='y')})" % (tx, CHAR))
        root.AddObject(rx, CHAR, {
            'UUID': RX,
            'Service': dbus.ObjectPath(service),
            'Flags': dbus.Array(['write'], signature='s'),
            'Value': dbus.Array([], signature='y'),
            'MTU': dbus.UInt16(int(mtu)),
        }, [('WriteValue', 'aya{sv}', '', echo)])
        root.AddObject(tx, CHAR, {
            'UUID': TX,
            'Service': dbus.ObjectPath(service),
            'Flags': dbus.Array(['notify'], signature='s'),
            'Notifying': False,
            'Value': dbus.Array([], signature='y'),
            'MTU': dbus.UInt16(int(mtu)),
        }, [
            ('StartNotify', '', '', "self.UpdateProperties(%r, {'Notifying': dbus.Boolean(True)})" % CHAR),
            ('StopNotify', '', '', "self.UpdateProperties(%r, {'Notifying': dbus.Boolean(False)})" % CHAR),
        ])
        control(device).UpdateProperties('org.bluez.Device1', {
            'ServicesResolved': True,
            'UUIDs': dbus.Array([COMMISSIONING], signature='s'),
        })
    elif words[0] == 'resolved':
        control(device_path(words[1], words[2])).UpdateProperties(
            'org.bluez.Device1', {'ServicesResolved': True})
    else:
        sys.exit('unknown plant command: ' + command)
"#;

/// Fails the test, with the install hint, when a tool is missing.
fn require_tools() {
    let daemon = Command::new("dbus-daemon")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        matches!(daemon, Ok(status) if status.success()),
        "dbus-daemon is missing ({daemon:?}); {INSTALL_HINT}"
    );
    let mock = Command::new(SYSTEM_PYTHON)
        .args(["-c", "import dbus, dbusmock"])
        .output();
    let ok = matches!(&mock, Ok(output) if output.status.success());
    assert!(
        ok,
        "python3-dbusmock is missing for {SYSTEM_PYTHON} ({}); {INSTALL_HINT}",
        match &mock {
            Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
            Err(e) => e.to_string(),
        }
    );
}

/// A child process killed (and reaped) when the guard drops.
struct KillOnDrop {
    child: Child,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already gone is fine: either way it must not outlive the test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private `dbus-daemon`, killed when dropped.
struct PrivateBus {
    address: String,
    _daemon: KillOnDrop,
}

impl PrivateBus {
    fn start() -> Self {
        require_tools();
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dbus-daemon: {e}; {INSTALL_HINT}"));
        let stdout = child.stdout.take().expect("stdout was piped");
        let daemon = KillOnDrop { child };
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(read.map(|_| line));
        });
        let address = match receiver.recv_timeout(HELPER_DEADLINE) {
            Ok(Ok(line)) if !line.trim().is_empty() => line.trim().to_owned(),
            other => panic!("dbus-daemon printed no address: {other:?}"),
        };
        PrivateBus {
            address,
            _daemon: daemon,
        }
    }

    /// Starts the dbusmock `bluez5` template as `org.bluez` on this bus,
    /// logging to `target/tmp/bluez_dbusmock-<test>.log`.
    fn start_bluez_mock(&self, test: &str) -> BluezMock {
        let log =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bluez_dbusmock-{test}.log"));
        let log_file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let log_err = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot share {}: {e}", log.display()));
        let child = Command::new(SYSTEM_PYTHON)
            .args(["-m", "dbusmock", "--template", "bluez5", "--system"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dbusmock: {e}; {INSTALL_HINT}"));
        BluezMock {
            address: self.address.clone(),
            log,
            _process: KillOnDrop { child },
        }
    }

    fn run_inner(&self, inner: &str) {
        run_inner_on(&self.address, inner, "");
    }
}

/// The dbusmock `bluez5` template on a [`PrivateBus`], killed when dropped
/// (drop it before the bus).
struct BluezMock {
    address: String,
    log: PathBuf,
    _process: KillOnDrop,
}

impl BluezMock {
    /// Runs [`PLANT_SCRIPT`] with `commands`, which also waits for the mock.
    fn plant(&self, commands: &[String]) {
        let mut command = Command::new(SYSTEM_PYTHON);
        command
            .arg("-c")
            .arg(PLANT_SCRIPT)
            .args(commands)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
        let (status, output) = run_bounded(command, "planting the mock objects");
        assert!(
            status.success(),
            "planting failed ({status}):\n{output}{}",
            self.log_text()
        );
    }

    fn run_inner(&self, inner: &str) {
        run_inner_on(&self.address, inner, &self.log_text());
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("\n--- dbusmock log ({}):\n{text}", self.log.display())
    }
}

/// Re-runs this test binary for exactly `inner`, with BlueZ's bus at
/// `address`, and fails unless the inner test ran and passed (`context` is
/// added to the failure message).
fn run_inner_on(address: &str, inner: &str, context: &str) {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut command = Command::new(exe);
    command
        .env(INNER, inner)
        .env("DBUS_SYSTEM_BUS_ADDRESS", address)
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    let started = Instant::now();
    let (status, output) = run_bounded(command, inner);
    println!("{inner}: child ran {:?}\n{output}", started.elapsed());
    assert!(
        status.success(),
        "{inner} failed ({status}):\n{output}{context}"
    );
    // An inner half that returned early would not print the marker.
    assert!(
        output.contains(INNER_DONE),
        "{inner} did not run to its end:\n{output}{context}"
    );
}

/// Runs `command` to completion within [`HELPER_DEADLINE`] (killing it past
/// that), and returns its status with stdout and stderr.
fn run_bounded(mut command: Command, what: &str) -> (ExitStatus, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let readers = [drain(child.stdout.take()), drain(child.stderr.take())];
    let mut guard = KillOnDrop { child };
    let deadline = Instant::now() + HELPER_DEADLINE;
    let status = loop {
        match guard.child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                drop(guard);
                let output = collect(readers);
                panic!("{what} did not finish within {HELPER_DEADLINE:?}:\n{output}");
            }
            Err(e) => panic!("cannot wait for {what}: {e}"),
        }
    };
    drop(guard);
    (status, collect(readers))
}

type Drained = std::thread::JoinHandle<String>;

fn drain(source: Option<impl Read + Send + 'static>) -> Drained {
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut source) = source {
            let _ = source.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

fn collect(readers: [Drained; 2]) -> String {
    readers
        .into_iter()
        .map(|reader| reader.join().unwrap_or_else(|_| "<reader panicked>".into()))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// The inner halves: run only in the re-run child, on the private bus.

/// Times `BluezCentral::new()`, which must fail within the deadline.
async fn new_must_fail_in_time() -> RadioError {
    let started = Instant::now();
    let result = BluezCentral::new().await;
    let elapsed = started.elapsed();
    println!("BluezCentral::new() returned {result:?} after {elapsed:?}");
    assert!(
        elapsed < NO_ADAPTER_DEADLINE + DEADLINE_SLACK,
        "took {elapsed:?}"
    );
    match result {
        Ok(central) => panic!("expected an error, got {central:?}"),
        Err(e) => e,
    }
}

async fn inner_scan_finds_planted_unprovisioned_lamp() {
    let started = Instant::now();
    let central = BluezCentral::new().await.expect("the mock's adapter");
    println!(
        "BluezCentral::new() found the adapter in {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let seen = central
        .scan(Duration::from_millis(500))
        .await
        .expect("a scan on the mock");
    println!("scan(500 ms) took {:?}: {seen:#?}", started.elapsed());

    assert_eq!(seen.len(), 2, "both planted devices: {seen:#?}");
    let tether: Vec<_> = seen.iter().filter(|r| r.tether_data().is_some()).collect();
    assert_eq!(tether.len(), 1, "exactly one Tether advert: {seen:#?}");
    let lamp = tether[0];
    assert_eq!(lamp.rssi, Some(LAMP_RSSI));
    assert_eq!(
        lamp.tether_data().map(Advert::decode),
        Some(Ok(LAMP_ADVERT))
    );

    let other = seen
        .iter()
        .find(|r| r.id != lamp.id)
        .expect("a second, distinct peripheral");
    assert_eq!(other.rssi, Some(OTHER_RSSI));
    assert_eq!(
        other.service_data,
        vec![(BATTERY_SERVICE_UUID, OTHER_SERVICE_DATA.to_vec())],
        "service data keeps its 128-bit UUID"
    );
    println!("{INNER_DONE}");
}

async fn inner_link_carries_segments_both_ways() {
    let central = BluezCentral::new().await.expect("the mock's adapter");
    let seen = central
        .scan(Duration::from_millis(100))
        .await
        .expect("a scan on the mock");
    let lamp = seen
        .iter()
        .find(|r| r.tether_data().is_some())
        .expect("the lamp");
    let other = seen
        .iter()
        .find(|r| r.tether_data().is_none())
        .expect("the other device");

    let link = central
        .connect(&lamp.id)
        .await
        .expect("connect to the lamp");
    assert_eq!(link.mtu(), LAMP_MTU, "the MTU BlueZ reports");
    for segment in [&b"\x01\x02\x03"[..], &[0xa5; 20][..]] {
        link.send(segment).await.expect("write to RX");
        let echoed = tokio::time::timeout(Duration::from_secs(5), link.recv())
            .await
            .expect("a notification on TX within 5 s")
            .expect("a segment");
        let expected: Vec<u8> = segment.iter().rev().copied().collect();
        assert_eq!(echoed, expected);
    }
    link.disconnect().await.expect("disconnect");
    link.disconnect()
        .await
        .expect("a second disconnect is a no-op");
    assert_eq!(link.send(b"late").await, Err(RadioError::Disconnected));
    assert_eq!(link.recv().await, Err(RadioError::Disconnected));

    let refused = central.connect(&other.id).await;
    assert!(matches!(refused, Err(RadioError::NoService)), "{refused:?}");
    println!("{INNER_DONE}");
}

async fn inner_no_system_bus_is_a_clear_error() {
    let error = new_must_fail_in_time().await;
    assert!(
        matches!(error, RadioError::NoBluetooth(_) | RadioError::NoAdapter),
        "{error:?}"
    );
    println!("{INNER_DONE}");
}

async fn inner_bus_without_bluez_is_no_bluetooth() {
    let error = new_must_fail_in_time().await;
    assert!(matches!(error, RadioError::NoBluetooth(_)), "{error:?}");
    println!("{INNER_DONE}");
}

async fn inner_bluez_without_adapter_is_no_adapter() {
    let error = new_must_fail_in_time().await;
    assert_eq!(error, RadioError::NoAdapter);
    println!("{INNER_DONE}");
}

"""`telesurg init DIR`: a matching robot/console site pair for this machine.

Writes a key pair and certificate for each site, and `robot.toml` / `console.toml` that allow only
each other, with two paths on loopback ports. Every field is commented so a user can change the
addresses for a real deployment (one path per carrier: e.g. fibre on one NIC, 5G on another).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from telesurg.link.keys import generate_identity

ROBOT_PORTS = (47001, 47002)
CONSOLE_PORTS = (47101, 47102)
PATH_NAMES = ("a", "b")

_LINK_COMMON = """\
# Identity of this site (private key stays here; give only the .crt to the other site).
identity_cert = "keys/{me}.crt"
identity_key = "keys/{me}.key"
# Allowlist: certificates of the peers allowed to connect. Anyone else is refused during the TLS 1.3
# handshake, before any application data, and counted in the report's security.rejected.
peer_certs = [{peers}]
# Optional pin on the SHA-256 fingerprints of those certificates (hex), and source networks (CIDR)
# from which handshakes are even considered. Empty = no extra restriction.
allowed_fingerprints = []
allowed_cidrs = []
# Path probes per second (RTT, jitter, loss, clock offset). >= 20 Hz.
probe_hz = 20.0
# Datagram keys are replaced at least this often (seconds), without a gap in traffic. <= 120 s.
rekey_s = 120.0
"""


def console_names(count: int) -> list[str]:
    """Certificate names of `count` consoles: "console" (the lead), then "console-2", "console-3", ..."""
    return ["console"] + [f"console-{i}" for i in range(2, count + 1)]


def _certs(names: list[str]) -> str:
    return ", ".join(f'"keys/{n}.crt"' for n in names)


def _roster(names: list[str]) -> str:
    """With one console: it controls both arms (`controller`). With more: a lead and consultants."""
    if len(names) == 1:
        return f'controller = "{names[0]}"  # certificate name of the console that gets the arms at start\n'
    entries = [f"""
[[robot.consoles]]        # the lead surgeon: gets these arms when it connects
identity = "{names[0]}"
role = "lead"
arms = ["PSM1", "PSM2"]
"""]
    entries += [f"""
[[robot.consoles]]        # may request an arm (telesurg console --request-arm PSM1); sees everything
identity = "{name}"
role = "consultant"       # lead | consultant | observer (telemetry and video only)
""" for name in names[1:]]
    return "".join(entries)


def _robot_toml(ports: tuple[int, ...] = ROBOT_PORTS, consoles: list[str] | None = None) -> str:
    consoles = consoles or ["console"]
    paths = "".join(
        f"""
[[link.paths]]
name = "{name}"          # path name, the same on both sites
local = "127.0.0.1:{port}"   # address:port this site listens on for this path
# remote is learned from the console's authenticated traffic (the console dials)
""" for name, port in zip(PATH_NAMES, ports, strict=True))
    return f"""\
# telesurg patient-side (robot) site. Start with: telesurg robot --config robot.toml
[site]
name = "robot"   # a label for logs and reports

[link]
{_LINK_COMMON.format(me="robot", peers=_certs(consoles))}{paths}
[robot]
servo_hz = 1000.0       # servo loop rate (dVRK teleoperates at 1 kHz)
telemetry_hz = 100.0    # measured state sent to the console
{_roster(consoles)}
[safety]
# Bounds the safety supervisor enforces on every command (DESIGN.md section 4).
watchdog_s = 0.05       # hold after this long without a valid command
fault_s = 1.0           # latch (operator action needed) after this long
freshness_s = 0.3       # commands older than this (robot clock, offset-corrected) are not applied
max_step_m = 0.0001     # Raven II: 0.1 mm per 1 ms servo step
max_speed_m_s = 0.1
align_orientation_deg = 5.0   # dVRK: master/tool alignment before following resumes

[video]
enabled = true          # stream the stereo endoscope to the console
width = 640             # per eye; MuJoCo renders on the CPU here, so keep it modest
height = 360
fps = 15.0
bitrate_kbps = 2500
source = "sim-endoscope"  # or "test-pattern": a synthetic moving picture, no rendering cost
"""


def _console_toml(ports: tuple[int, ...] = CONSOLE_PORTS, remotes: tuple[int, ...] = ROBOT_PORTS,
                  name: str = "console") -> str:
    paths = "".join(
        f"""
[[link.paths]]
name = "{name}"                  # must match the robot's path name
local = "127.0.0.1:{local}"     # this site's address for this path (bind to the right NIC)
remote = "127.0.0.1:{remote}"   # the robot's address for this path
""" for name, local, remote in zip(PATH_NAMES, ports, remotes, strict=True))
    return f"""\
# telesurg surgeon (console) site. Start with: telesurg console --config console.toml [--script F]
[site]
name = "{name}"

[link]
{_LINK_COMMON.format(me=name, peers=_certs(["robot"]))}{paths}
[console]
rate_hz = 1000.0        # servo_cp commands per second per arm
scale = 0.2             # tool motion / master motion (dVRK default 0.2)

[console.alarms]
rtt_warn_ms = 200.0     # Xu et al. 2014: <= 200 ms ideal
rtt_alarm_ms = 300.0    # 300 ms suitable; Marescaux: > 330 ms unsafe
rtt_critical_ms = 500.0
loss_warn_pct = 0.5
loss_alarm_pct = 1.0

[video]
enabled = true
"""


def write_site_pair(directory: Path, *, robot_ports: tuple[int, ...] = ROBOT_PORTS,
                    console_ports: tuple[int, ...] = CONSOLE_PORTS,
                    console_remotes: tuple[int, ...] | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """Create keys and both site files in `directory`; return (robot.toml, console.toml).

    `console_remotes` lets the demo point the console at WAN-emulator relays instead of the robot."""
    robot, consoles = write_sites(directory, robot_ports=robot_ports, console_ports=[console_ports],
                                  console_remotes=[console_remotes or robot_ports], overwrite=overwrite)
    return robot, consoles[0]


def write_sites(directory: Path, *, robot_ports: tuple[int, ...] = ROBOT_PORTS,
                console_ports: list[tuple[int, ...]], console_remotes: list[tuple[int, ...]] | None = None,
                overwrite: bool = False) -> tuple[Path, list[Path]]:
    """A robot and one console site per entry of `console_ports` (the first is the lead, the others
    consultants); each console dials its `console_remotes` (the robot, or WAN-emulator relays)."""
    names = console_names(len(console_ports))
    remotes = console_remotes or [robot_ports] * len(names)
    directory.mkdir(parents=True, exist_ok=True)
    keys = directory / "keys"
    keys.mkdir(exist_ok=True)
    if overwrite:  # fresh identities: a replaced site pair must not keep trusting the old keys
        for old in keys.glob("*"):
            if old.name.split(".")[0] == "robot" or old.name.split(".")[0].startswith("console"):
                old.unlink()
    generate_identity(keys, "robot")
    robot = directory / "robot.toml"
    robot.write_text(_robot_toml(robot_ports, names))
    paths = []
    for name, ports, remote in zip(names, console_ports, remotes, strict=True):
        generate_identity(keys, name)
        path = directory / f"{name}.toml"
        path.write_text(_console_toml(ports, remote, name))
        paths.append(path)
    return robot, paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="folder to create (keys/, robot.toml, console.toml)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing site pair")
    parser.add_argument("--consoles", type=int, default=1, metavar="N",
                        help="console identities to write: the first leads both arms, the others are "
                             "consultants (console-2.toml, ...), each on its own local ports")


def run(args: argparse.Namespace) -> int:
    target: Path = args.directory
    if (target / "robot.toml").exists() and not args.force:
        print(f"telesurg init: {target / 'robot.toml'} exists; use --force to overwrite")
        return 2
    if not 1 <= args.consoles <= 32:
        print("telesurg init: --consoles must be between 1 and 32")
        return 2
    ports = [tuple(p + 10 * i for p in CONSOLE_PORTS) for i in range(args.consoles)]
    robot, consoles = write_sites(target, console_ports=ports, overwrite=args.force)
    print(f"wrote {robot} and {', '.join(str(c) for c in consoles)} (keys in {target / 'keys'})")
    print(f"patient site:  telesurg robot --config {robot}")
    print(f"surgeon site:  telesurg console --config {consoles[0]} --script peg-transfer")
    for extra in consoles[1:]:
        print(f"consultant:    telesurg console --config {extra} --script keyboard --request-arm PSM1")
    return 0

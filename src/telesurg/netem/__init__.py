"""User-space WAN emulator: sans-I/O impairment core, virtual-clock network, asyncio UDP relays.

The kernel's netem qdisc is missing here and on most laptops, so paths are emulated in Python.
"""

from telesurg.netem.core import DirectionEmulator, DirectionStats, Impairment
from telesurg.netem.errors import NetemConfigError
from telesurg.netem.profiles import PathProfile, Profile, list_profiles, load_profile
from telesurg.netem.scenario import Scenario, ScenarioEvent, ScenarioPlayer, load_scenario
from telesurg.netem.virtual import VirtualNetwork

__all__ = [
    "DirectionEmulator",
    "DirectionStats",
    "Impairment",
    "NetemConfigError",
    "PathProfile",
    "Profile",
    "Scenario",
    "ScenarioEvent",
    "ScenarioPlayer",
    "VirtualNetwork",
    "list_profiles",
    "load_profile",
    "load_scenario",
]

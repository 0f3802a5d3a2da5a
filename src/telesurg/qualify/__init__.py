"""`telesurg qualify`: pre-operative test sessions over the real link, with a go / no-go report.

Modules: `analysis` (sans-I/O figures from timestamped samples), `thresholds` (pydantic limits with literature defaults), `verdict`,
`runner` (the asyncio driver of the phases), `report` (JSON, HTML with plots, history), `cli`.
The echo payloads are `telesurg.qualify_wire` and the robot's answers `telesurg.apps.robot_checks`:
both below this package, which drives them from the console side.
"""

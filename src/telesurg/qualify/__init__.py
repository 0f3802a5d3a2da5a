"""`telesurg qualify`: pre-operative test sessions over the real link, with a go / no-go report.

Modules: `protocol` (echo payloads), `responder` (the robot's side), `analysis` (sans-I/O figures
from timestamped samples), `thresholds` (pydantic limits with literature defaults), `verdict`,
`runner` (the asyncio driver of the phases), `report` (JSON, HTML with plots, history), `cli`.
"""

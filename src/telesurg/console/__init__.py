"""Surgeon console: master inputs, master→tool mapping, tremor filter, command core, status and alarms.

`ConsoleCore` (core.py) is sans-I/O; the process wiring (link, real clock, terminal) is in app.py.
"""
